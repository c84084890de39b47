"""Class results: several students' files collected into one table, figures and prompts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib
import nbformat
import pytest
from nbclient import NotebookClient

from mmlab.course import classexample, classprompts, classroom, results

matplotlib.use("Agg")
MiB = 2**20
NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "class_results.ipynb"

LAPTOP = {"page_size": 4096, "read_ahead_kb": 128, "filesystem": "ext4", "hypervisor": False,
          "machine": "x86_64", "cgroup_memory_limit": "unlimited"}  # fmt: skip


def student(folder: Path, ident: str, notebook: str, values: dict, at: str = "10", **facts):
    """One student's file as ``results.save`` writes it (values only, no claims)."""
    common = {"schema": results.SCHEMA, "notebook": notebook, "machine_id": ident}
    common |= {"saved_at": f"2026-11-25T{at}:00:00+00:00", "quick": False}
    common["fingerprint"] = LAPTOP | facts
    lines = [common | {"kind": "value", "name": k, "value": v} for k, v in values.items()]
    (folder / f"{notebook}-{ident}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def race(**ratios: float) -> dict:
    """Notebook 04's warm race values: mmap/read samples and the side each block fell on."""
    blocks = {"4096": ratios["small"], "1048576": ratios["large"]}
    return {
        "warm_slice_over_read": {b: [r * 0.98, r, r * 1.02] for b, r in blocks.items()},
        "warm_slice_side": {b: 1 if r > 1.05 else -1 if r < 0.95 else 0 for b, r in blocks.items()},
    }


@pytest.fixture
def class_folder(tmp_path) -> Path:
    """Four machines: a laptop (all three notebooks), a server with read_ahead_kb 8192
    (03, 04), an arm64 laptop with 16 KiB pages (03 only), a container (04 only)."""
    folder = tmp_path / "class"
    folder.mkdir()
    student(folder, "aaaa", "03", {"cold_cached_pages": 32, "cold_major_faults": 1})
    student(folder, "aaaa", "04", race(small=1.5, large=0.9))
    student(folder, "aaaa", "06", {"list_worker_growth": 40 * MiB, "store_worker_growth": MiB // 4})
    server = {"read_ahead_kb": 8192, "hypervisor": True}
    student(folder, "bbbb", "03", {"cold_cached_pages": 2048, "cold_major_faults": 1}, **server)
    student(folder, "bbbb", "04", race(small=1.3, large=1.0), **server)
    arm = {"page_size": 16384, "machine": "aarch64"}
    student(folder, "cccc", "03", {"cold_cached_pages": 8, "cold_major_faults": 1}, **arm)
    hub = {"read_ahead_kb": None, "filesystem": "overlay", "cgroup_memory_limit": 2**31}
    student(folder, "dddd", "04", race(small=0.8, large=0.7), **hub)
    return folder


def test_collect_gives_one_row_per_machine_with_its_headlines(class_folder):
    table = classroom.collect(class_folder)
    assert [m.id for m in table.machines] == ["aaaa", "bbbb", "cccc", "dddd"]
    rows = {row["machine"]: row for row in table.rows()}
    assert rows["aaaa"]["03 window (pages)"] == 32 and rows["bbbb"]["03 window (pages)"] == 2048
    assert rows["cccc"]["03 window (pages)"] == 8 and rows["dddd"]["03 window (pages)"] is None
    assert rows["bbbb"]["03 cached per cold fault (pages)"] == 2048
    assert rows["dddd"]["03 cached per cold fault (pages)"] is None  # no file from 03
    assert rows["cccc"]["page (KiB)"] == 16 and rows["aaaa"]["read_ahead_kb"] == 128
    assert rows["aaaa"]["04 warm winner by block"] == "mmap 4 KiB, read 1 MiB"
    assert rows["bbbb"]["04 warm winner by block"] == "mmap 4 KiB, tie 1 MiB"
    assert rows["dddd"]["04 warm winner by block"] == "read 4 KiB-1 MiB"
    assert rows["aaaa"]["06 list worker growth (MiB)"] == 40
    assert rows["bbbb"]["06 list worker growth (MiB)"] is None
    assert rows["aaaa"]["notebooks"] == "03 04 06" and rows["cccc"]["notebooks"] == "03"
    assert "memory-limited container" in rows["dddd"]["where"]
    assert not table.synthetic and table.problems == []
    shown = str(table)
    assert "4 machines" in shown and "SYNTHETIC" not in shown
    assert "<td>2,048</td>" in table._repr_html_()


def test_the_latest_save_of_a_machine_wins(class_folder):
    shutil.copy(class_folder / "03-aaaa.jsonl", class_folder / "03-aaaa-old-copy.jsonl")
    student(class_folder, "aaaa", "03", {"cold_cached_pages": 64, "cold_major_faults": 2}, "11")
    (m,) = [m for m in classroom.collect(class_folder).machines if m.id == "aaaa"]
    assert classroom.cached_per_fault(m) == 32  # 64 pages over 2 faults, the 11:00 save
    assert m.saved_at["03"].startswith("2026-11-25T11")


def test_readahead_figure_puts_each_machine_where_its_numbers_say(class_folder):
    table = classroom.collect(class_folder)
    points, missing = classroom.readahead_points(table)
    assert {(p.label.split()[0], p.x, p.y) for p in points} == {
        ("aaaa", 128, 128),  # 32 pages of 4 KiB: one 128 KiB window
        ("bbbb", 8192, 8192),
        ("cccc", 128, 128),  # 8 pages of 16 KiB: the same 128 KiB
    }
    assert missing == ["dddd: no file from notebook 03"]
    fig = classroom.plot_readahead(table)
    ax = fig.axes[0]
    drawn = sorted(tuple(xy) for c in ax.collections for xy in c.get_offsets())
    assert drawn == [(128, 128), (8192, 8192)]  # aaaa and cccc share one spot
    labels = [t.get_text() for t in ax.texts]
    assert any("aaaa" in t and "cccc" in t for t in labels) and any("bbbb" in t for t in labels)
    assert any("dddd: no file from notebook 03" in t.get_text() for t in fig.texts)
    assert "SYNTHETIC" not in ax.get_title()


def test_a_touch_without_a_major_fault_is_left_out_with_its_reason(class_folder):
    student(class_folder, "bbbb", "03", {"cold_cached_pages": 1, "cold_major_faults": 0}, "12")
    _, missing = classroom.readahead_points(classroom.collect(class_folder))
    assert "bbbb: no major fault (the page was cached)" in missing


def test_read_vs_mmap_figure_draws_each_machines_ratios(class_folder):
    table = classroom.collect(class_folder)
    curves, missing = classroom.read_vs_mmap_curves(table)
    assert {label.split()[0]: [(p.x, p.y) for p in ps] for label, ps in curves.items()} == {
        "aaaa": [(4096, 1.5), (1048576, 0.9)],
        "bbbb": [(4096, 1.3), (1048576, 1.0)],
        "dddd": [(4096, 0.8), (1048576, 0.7)],
    }
    assert missing == ["cccc: no file from notebook 04"]
    ax = classroom.plot_read_vs_mmap(table).axes[0]
    lines = {line.get_label().split()[0]: list(line.get_ydata()) for line in ax.lines[:3]}
    assert lines == {"aaaa": [1.5, 0.9], "bbbb": [1.3, 1.0], "dddd": [0.8, 0.7]}


def test_workers_figure_and_a_figure_with_no_machine(class_folder, capsys):
    table = classroom.collect(class_folder)
    ax = classroom.plot_workers(table).axes[0]
    lst, sto = (c.get_offsets()[:, 0].tolist() for c in ax.collections)
    assert lst == [40] and sto == [0.25]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["aaaa (4 KiB, ra 128)"]
    for name in ("03", "04", "06"):
        for path in class_folder.glob(f"{name}-*.jsonl"):
            path.unlink()
    assert classroom.plot_workers(classroom.collect(class_folder)) is None
    assert "No machine has notebook 06's workers yet" in capsys.readouterr().out


def test_discussion_prompts_come_from_the_table(class_folder):
    prompts = classprompts.discussion(classroom.collect(class_folder))
    assert any("Page sizes differ" in p and "16384 bytes: cccc" in p for p in prompts)
    (cold,) = [p for p in prompts if "One cold fault" in p]
    assert "128 KiB on aaaa" in cold and "8,192 KiB on bbbb" in cold and "3 of 3" in cold
    (workers,) = [p for p in prompts if "Python list" in p]
    assert "gained 40.0 MiB" in workers and "1 of 1 machines" in workers


def test_the_synthetic_class_is_labelled_everywhere(tmp_path):
    folder = classexample.write(tmp_path)
    assert all(row["fingerprint"]["synthetic"] for row in results.load(folder))
    table = classroom.collect(folder)
    assert table.synthetic and "SYNTHETIC" in str(table)
    assert classprompts.discussion(table)[0].startswith("SYNTHETIC")
    for plot in (classroom.plot_readahead, classroom.plot_read_vs_mmap, classroom.plot_workers):
        assert plot(table).axes[0].get_title().startswith("SYNTHETIC")


def run_class_notebook(root: Path, folder: Path | None) -> nbformat.NotebookNode:
    """The class notebook run headless in ``root``, on ``folder`` if given (as an instructor
    sets the parameter), else on its default ``results/``."""
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    notebook = nbformat.read(root / NOTEBOOK.name, as_version=4)
    if folder is not None:
        cells = notebook.cells
        (index,) = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
        cells.insert(index + 1, nbformat.v4.new_code_cell(f"FOLDER = Path({str(folder)!r})"))
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(root)}}).execute()  # fmt: skip
    return notebook


def outputs_of(notebook) -> tuple[str, int, list]:
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    pngs = sum("image/png" in o.get("data", {}) for o in outputs)
    return text, pngs, [o for o in outputs if o.output_type == "error"]


def test_the_class_notebook_shows_a_class_folder(class_folder, tmp_path):
    (class_folder / "03-corrupt.jsonl").write_text("{oops\n")
    text, pngs, errors = outputs_of(run_class_notebook(tmp_path, class_folder))
    assert not errors and pngs == 3
    assert "8 result files" in text and "4 machines from" in text
    assert "skipped 03-corrupt.jsonl line 1" in text
    assert "SYNTHETIC" not in text and "One cold fault cached 128 KiB on aaaa" in text


def test_predictions_are_gathered_for_the_discussion(class_folder):
    common = {"schema": results.SCHEMA, "notebook": "03", "saved_at": "2026-11-25T12:00:00+00:00"}
    for ident, guess, right in (("aaaa", 1, False), ("bbbb", 2048, True), ("cccc", None, None)):
        line = common | {"machine_id": ident, "fingerprint": LAPTOP, "kind": "prediction"}
        line |= {"name": "cold_cached_pages", "value": guess, "unit": "pages", "right": right}
        with (class_folder / f"03-{ident}-predicted.jsonl").open("w") as out:
            out.write(json.dumps(line) + "\n")
    prompts = classprompts.discussion(classroom.collect(class_folder))
    (said,) = [p for p in prompts if "predictions of 03's cold_cached_pages" in p]
    assert said.startswith("2 predictions") and "1 pages, 2048 pages" in said  # None: none made
    assert "1 of 2 right" in said


def test_values_of_the_wrong_shape_are_left_out_and_reported(class_folder):
    student(class_folder, "eeee", "03", {"cold_cached_pages": "lots", "cold_major_faults": 1},
            page_size="big")  # fmt: skip
    student(class_folder, "ffff", "04", {"warm_slice_over_read": {"4096": "fast"}})
    table = classroom.collect(class_folder)
    assert "03-eeee.jsonl: page_size 'big' is not a size, left out" in table.problems
    assert (
        "03-eeee.jsonl: cold_cached_pages = 'lots' is not what 03 saves, left out" in table.problems
    )
    assert any(p.startswith("04-ffff.jsonl: warm_slice_over_read") for p in table.problems)
    rows = {row["machine"]: row for row in table.rows()}
    assert rows["eeee"]["page (KiB)"] is None and rows["eeee"]["read_ahead_kb"] == 128
    _, missing = classroom.readahead_points(table)
    assert "eeee: notebook 03 saved no cold_cached_pages" in missing
    assert (
        "ffff: notebook 04 saved no warm_slice_over_read" in classroom.read_vs_mmap_curves(table)[1]
    )
    assert "skipped 03-eeee.jsonl: page_size 'big'" in str(table)
