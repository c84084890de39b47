"""The timed schedule: reading, running and exercise minutes of a made-up executed notebook,
the table between the guide's markers, and what it says when a time cannot be known."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from mmlab.course import schedule

BUILD = Path(__file__).resolve().parent.parent / "build" / "notebooks"


def _timed(cell, start: float, seconds: float) -> None:
    """Give ``cell`` the timing metadata nbclient records, ``seconds`` long."""
    stamp = "2026-01-02T10:{:02d}:{:06.3f}Z"
    begin, end = start, start + seconds
    cell.metadata["execution"] = {
        "iopub.execute_input": stamp.format(int(begin // 60), begin % 60),
        "iopub.status.busy": stamp.format(int(begin // 60), begin % 60),
        "shell.execute_reply": stamp.format(int(end // 60), end % 60),
    }


def _lab(folder: Path, *, timed: bool = True) -> tuple[Path, Path]:
    """A notebook of 243 words of prose, three code cells (30, 90 and 10 s), two exercises."""
    prose = " ".join(["word"] * 100)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# Lab\n\n{' '.join(['word'] * 37)} About 40 minutes."),
        nbformat.v4.new_markdown_cell(
            f"{prose} [a link](https://example.org/x y)\n```\nx = 1\n```"
        ),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell(
            "def touch(mm, stride):\n    return None",
            metadata={"mmlab": {"exercise": "touch", "role": "starter", "minutes": 15}},
        ),
        nbformat.v4.new_markdown_cell(" ".join(["word"] * 100)),
        nbformat.v4.new_code_cell(
            "def flat():\n    return None",
            metadata={"mmlab": {"exercise": "flat", "role": "starter"}},
        ),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / "07_lab.ipynb")
    executed = folder / "executed"
    executed.mkdir()
    if timed:
        _timed(nb.cells[2], 0.0, 30.0)
        _timed(nb.cells[3], 30.5, 90.0)
        _timed(nb.cells[5], 125.0, 10.0)
    nbformat.write(nb, executed / "07_lab.ipynb")
    return folder / "07_lab.ipynb", executed


def test_the_numbers_of_one_notebook(tmp_path):
    path, executed = _lab(tmp_path)
    t = schedule.time_notebook(path, executed / path.name)
    # "# Lab" + 37 words + "About 40 minutes." (3) = 41; 100 (the link text counts, not the
    # address, nor the code block) + 2; 100: 243 words
    assert t.words == 1 + 37 + 3 + 102 + 100
    assert t.run_s == pytest.approx(130.0)  # the gaps between cells are not the kernel's
    assert t.run_why == "" and t.says == 40
    assert t.exercises == (("touch", 15.0), ("flat", float(schedule.EXERCISE_MINUTES)))
    assert t.reading_min == pytest.approx(243 / schedule.WORDS_PER_MINUTE)
    assert t.teaching_min == pytest.approx(243 / schedule.WORDS_PER_MINUTE + 130 / 60)
    row = [line for line in schedule.render([t], executed).splitlines() if line.startswith("| 07")]
    # reading 2.03 -> 3, running 2.17 min, teaching 4.19 -> 5, exercises 25, total 29.19 -> 30
    assert row == ["| 07 | 243 | 3 | 2.2 (130 s) | 5 | 2 | 25 | 30 | 40 |"]


def test_main_rewrites_only_the_table_between_the_markers(tmp_path):
    _, executed = _lab(tmp_path)
    guide = tmp_path / "INSTRUCTORS.md"
    guide.write_text(f"# Guide\n\nbefore\n\n{schedule.BEGIN}\nold table\n{schedule.END}\n\nafter\n")
    assert schedule.main([str(tmp_path), "--executed", str(executed)]) == 0
    text = guide.read_text()
    assert text.startswith("# Guide\n\nbefore\n\n<!-- schedule:start -->")
    assert text.endswith("<!-- schedule:end -->\n\nafter\n") and "old table" not in text
    assert "| 07 | 243 | 3 | 2.2 (130 s) | 5 | 2 | 25 | 30 | 40 |" in text
    assert "| all | | | | 5 | 2 | 25 | 30 | |" in text
    assert schedule.main([str(tmp_path), "--executed", str(executed)]) == 0  # idempotent
    assert guide.read_text().count(schedule.BEGIN) == 1
    guide.write_text("no markers")
    with pytest.raises(ValueError, match="no schedule markers"):
        schedule.main([str(tmp_path), "--executed", str(executed)])


def test_unknown_run_times_say_why(tmp_path):
    path, executed = _lab(tmp_path, timed=False)
    t = schedule.time_notebook(path, executed / path.name)
    assert t.run_s is None and "no cell timing" in t.run_why
    assert "| 07 | 243 | 3 | unknown | unknown |" in schedule.render([t], executed)
    missing = schedule.time_notebook(path, tmp_path / "nowhere" / path.name)
    assert missing.run_s is None and "make claims" in missing.run_why


def test_a_stale_executed_copy_is_named(tmp_path):
    path, executed = _lab(tmp_path)
    nb = nbformat.read(path, as_version=4)
    nb.cells[2].source = "x = 2  # changed since the run"
    nbformat.write(nb, path)
    t = schedule.time_notebook(path, executed / path.name)
    assert t.run_s == pytest.approx(130.0)
    assert "matches 2 of 3 code cells" in t.run_why


@pytest.mark.skipif(not BUILD.is_dir(), reason="no executed copies: `make claims` makes them")
def test_make_claims_copies_record_cell_timing():
    for path in sorted(BUILD.glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        timed = [c for c in code if "shell.execute_reply" in c["metadata"].get("execution", {})]
        assert code and len(timed) == len(code), path.name


def test_the_guide_holds_the_markers_and_its_table_is_the_generated_one():
    guide = (Path(__file__).resolve().parent.parent / "notebooks" / "INSTRUCTORS.md").read_text()
    start, end = guide.index(schedule.BEGIN), guide.index(schedule.END)
    table = guide[start : end + len(schedule.END)]
    assert schedule.replace_table(guide, table) == guide
    rows = [line for line in table.splitlines() if line[:4] in {f"| 0{n}" for n in range(1, 7)}]
    assert len(rows) == 6, "run `python -m mmlab.course.schedule notebooks` to fill the table"
