"""Saving a notebook's results for the class: what ``results.save`` writes, ``load`` reads."""

from __future__ import annotations

import json
import platform
from datetime import datetime

import nbformat
import pytest
from nbclient import NotebookClient

from mmlab.course import predict, results


@pytest.fixture
def kernel_state(monkeypatch):
    """A fresh kernel's state: nothing recorded, nothing predicted."""
    monkeypatch.setattr(results, "_KEPT", [])
    monkeypatch.setattr(predict, "_LOCKED", {})
    monkeypatch.setattr(predict, "_REVEALED", {})


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_save_then_load_gives_back_values_claims_and_predictions(tmp_path, kernel_state, capsys):
    results.record("03", cold_cached_pages=32, cold_major_faults=1)
    results.record("04", other_notebook=1)  # not saved with 03
    results.claim("03", "lazy", claim="Lazy", shown_in="03 §1", measured="x", verdict="true")
    predict.lock("03", "pages_cached", 16, unit="pages")
    predict.reveal("03", "pages_cached", measured=32, why="one readahead window")
    path = results.save("03", tmp_path / "results")
    said = capsys.readouterr().out
    assert path.parent == tmp_path / "results" and path.name.startswith("03-")
    assert str(path.absolute()) in said and "send this file to your instructor" in said.lower()
    loaded = results.load(tmp_path / "results")
    assert {row["file"] for row in loaded} == {path.name}
    by_kind = {(row["kind"], row["name"]): row for row in loaded}
    assert set(by_kind) == {
        ("value", "cold_cached_pages"),
        ("value", "cold_major_faults"),
        ("claim", "lazy"),
        ("prediction", "pages_cached"),
    }
    assert by_kind["value", "cold_cached_pages"]["value"] == 32
    assert by_kind["claim", "lazy"]["value"]["verdict"] == "true"
    guess = by_kind["prediction", "pages_cached"]
    assert guess["value"] == 16 and guess["unit"] == "pages"
    assert guess["measured"] == 32 and guess["right"] is False  # 2x off
    for row in loaded:
        assert row["notebook"] == "03" and row["schema"] == results.SCHEMA
        assert datetime.fromisoformat(row["saved_at"]).utcoffset().total_seconds() == 0
        assert row["fingerprint"]["page_size"] > 0 and "read_ahead_kb" in row["fingerprint"]
        assert path.name == f"03-{row['machine_id']}.jsonl"


def test_saving_again_replaces_the_file_with_the_latest_values(tmp_path, kernel_state):
    results.record("03", cold_cached_pages=32)
    first = results.save("03", tmp_path)
    results.record("03", cold_cached_pages=2048)  # the cell run again
    again = results.save("03", tmp_path)
    assert again == first and list(tmp_path.glob("*.jsonl")) == [first]
    assert [(r["name"], r["value"]) for r in _lines(again)] == [("cold_cached_pages", 2048)]


def test_two_students_on_identical_machines_do_not_overwrite(tmp_path, kernel_state, monkeypatch):
    results.record("03", cold_cached_pages=32)
    monkeypatch.setattr(platform, "node", lambda: "lab-pc-01")
    one = results.save("03", tmp_path)
    monkeypatch.setattr(platform, "node", lambda: "lab-pc-02")
    two = results.save("03", tmp_path)
    assert one != two and sorted(tmp_path.glob("*.jsonl")) == sorted([one, two])
    assert _lines(one)[0]["machine_id"] != _lines(two)[0]["machine_id"]


def test_nothing_recorded_saves_the_machine_only_and_never_empties_a_saved_file(
    tmp_path, kernel_state, capsys
):
    path = results.save("05", tmp_path)
    assert "Nothing recorded for notebook 05" in capsys.readouterr().out
    assert [row["kind"] for row in _lines(path)] == ["machine"]
    results.record("05", store_sections_cached=3)
    results.save("05", tmp_path)
    results._KEPT.clear()  # a restarted kernel, then the save cell alone
    assert results.save("05", tmp_path) == path
    assert "kept the file saved earlier" in capsys.readouterr().out
    assert [row["name"] for row in _lines(path)] == ["store_sections_cached"]


def test_corrupt_lines_and_files_are_skipped_and_reported(tmp_path, kernel_state, capsys):
    results.record("03", cold_cached_pages=32)
    good = results.save("03", tmp_path)
    whole = good.read_text()
    broken = tmp_path / "03-broken.jsonl"
    odd = json.loads(whole.splitlines()[0]) | {"saved_at": 5}  # sorts beside no time
    lines = ["{not json", "[1, 2]", json.dumps({"schema": "other"}), json.dumps(odd)]
    broken.write_text(whole + "\n".join(lines) + "\n")
    (tmp_path / "04-binary.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "notes.txt").write_text("not a results file: ignored, not reported")
    problems: list[str] = []
    loaded = results.load(tmp_path, problems=problems)
    assert sorted(row["file"] for row in loaded) == sorted([broken.name, good.name])
    assert any("03-broken.jsonl line 2" in p and "not JSON" in p for p in problems)
    assert any("03-broken.jsonl line 3" in p and "missing" in p for p in problems)
    assert any("03-broken.jsonl line 4" in p for p in problems)
    assert any("03-broken.jsonl line 5" in p for p in problems)
    assert any("04-binary.jsonl" in p and "unreadable" in p for p in problems)
    assert len(problems) == 5
    capsys.readouterr()
    results.load(tmp_path)  # without a list, the problems are printed
    assert "04-binary.jsonl: skipped" in capsys.readouterr().out


def test_a_missing_folder_loads_nothing_and_says_so(tmp_path):
    problems: list[str] = []
    assert results.load(tmp_path / "absent", problems=problems) == []
    assert problems == [f"{tmp_path / 'absent'}: no such folder"]


def test_a_notebook_kernel_saves_what_its_cells_recorded(tmp_path):
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "from mmlab import results\nresults.record('06', list_worker_growth=40 * 2**20)"
            ),
            nbformat.v4.new_code_cell(f"results.save('06', {str(tmp_path)!r})"),
        ]
    )
    NotebookClient(notebook, timeout=60, kernel_name="python3").execute()
    (row,) = results.load(tmp_path)
    assert (row["notebook"], row["name"], row["value"]) == ("06", "list_worker_growth", 40 * 2**20)
    said = "".join(o.get("text", "") for o in notebook.cells[1].outputs)
    assert "Saved notebook 06's 1 value, 0 claims, 0 predictions" in said
