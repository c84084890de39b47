"""`mmlab doctor --setup`: one verdict per notebook on this machine, the right notebooks not
ready (with the right advice) when a package is missing, too old or the disk too small, the
exit code, and the JSON."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from mmlab.cli import main
from mmlab.course import setup, setupneeds

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NUMBERS = sorted(p.name[:2] for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def baseline():
    return setup.check_setup(NOTEBOOKS, measure=False)


def _hide(monkeypatch, *modules: str) -> None:
    """Make ``modules`` look uninstalled, as importlib.util.find_spec reports it."""
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name.split(".")[0] in modules:
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def _problems(report) -> dict[str, list[str]]:
    return {n.notebook: [str(p) for p in n.problems] for n in report.notebooks}


def test_every_notebook_has_one_line_and_the_machine_is_described(baseline):
    text = str(baseline)
    assert [n.notebook for n in baseline.notebooks] == NUMBERS
    for n in baseline.notebooks:
        assert n.line().startswith(
            f"{n.notebook} ready" if n.ready else f"{n.notebook} not ready: "
        )
        assert n.line() in text.splitlines()
        assert {"numpy", "matplotlib", "ipywidgets"} <= set(n.packages)
    names = {c.name for c in baseline.checks}
    assert {"Python", "Linux", "QM9 offline", "disk", "memory"} <= names
    assert text.rstrip().endswith(baseline.summary())


def test_the_notebooks_own_imports_and_calls_decide_their_packages(baseline):
    packages = {n.notebook: set(n.packages) for n in baseline.notebooks}
    assert {"torch_geometric", "torch", "rdkit", "qm9pack"} <= packages["05"]
    assert {"torch", "qm9pack"} <= packages["06"]
    assert {"torch", "qm9pack", "pyarrow", "lmdb", "h5py", "distributed"} <= packages["09"]
    assert "torch" not in packages["01"] and "qm9pack" not in packages["01"]
    assert not any("nbclient" in p for p in packages.values())


def test_a_missing_package_makes_exactly_its_notebooks_not_ready(monkeypatch, baseline):
    _hide(monkeypatch, "torch")
    report = setup.check_setup(NOTEBOOKS, measure=False)
    before, after = _problems(baseline), _problems(report)
    for number in NUMBERS:
        added = [p for p in after[number] if p not in before[number]]
        if number in ("05", "06", "09"):
            assert len(added) == 1 and added[0].startswith("torch missing: run `make lab`")
            assert "'.[qm9]'" in added[0]  # the extra of pyproject.toml that brings it
        else:
            assert added == []
    assert not report.ready


def test_without_qm9pack_the_notebooks_reading_qm9_are_not_ready(monkeypatch):
    _hide(monkeypatch, "qm9pack")
    report = setup.check_setup(NOTEBOOKS, measure=False)
    not_ready = {n.notebook for n in report.notebooks if "qm9pack missing" in n.line()}
    assert not_ready == {"02", "05", "06", "09"}
    (qm9,) = [c for c in report.checks if c.name == "QM9 offline"]
    assert qm9.ok is False and "pip install qm9pack" in qm9.said


def test_a_version_outside_the_requirement_is_not_ready(monkeypatch):
    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: "1.0.0" if name == "torch" else real(name)
    )
    report = setup.check_setup(NOTEBOOKS, measure=False)
    wanted, extra = setupneeds.requirement("torch")
    assert extra == "qm9"
    for n in report.notebooks:
        said = f"torch 1.0.0 installed, the course needs {wanted}"
        assert (said in n.line()) == (n.notebook in ("05", "06", "09"))


def _notebook(folder: Path, name: str, parameters: str, *code: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A made-up lab\n\nAbout 5 minutes."),
        nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
        *(nbformat.v4.new_code_cell(c) for c in code),
    ]
    folder.mkdir(exist_ok=True)
    nbformat.write(nb, folder / name)
    return folder / name


def test_needs_are_read_from_the_notebook_at_full_size(tmp_path, monkeypatch):
    monkeypatch.setenv("MMLAB_QUICK", "1")
    path = _notebook(
        tmp_path,
        "04_race.ipynb",
        'import os\nQUICK = os.environ.get("MMLAB_QUICK") == "1"\nFILE_MIB = 32 if QUICK else 256',
        "%matplotlib inline\nimport json\nimport torch_geometric.datasets\nfrom mmlab import qm9",
        "molecules = list(qm9.records('qm9pack'))\nimport half_typed(",  # a broken cell
    )
    needs = setupneeds.notebook_needs(path)
    assert needs.number == "04" and needs.title == "A made-up lab"
    assert needs.params["FILE_MIB"] == 256 and needs.params_error is None
    assert {"torch_geometric", "torch", "numpy", "ipykernel"} <= set(needs.modules)
    assert "json" not in needs.modules and "mmlab" not in needs.modules
    assert "qm9pack" in needs.modules  # the call is found even in a cell that does not parse
    assert "half_typed" not in needs.modules  # ...but that cell's imports are not trusted
    assert setupneeds.data_files(needs, None, None) == [("race.bin", 256 * 2**20, "")]
    assert __import__("os").environ["MMLAB_QUICK"] == "1"  # restored


def test_too_little_disk_makes_the_notebook_not_ready(tmp_path):
    folder = tmp_path / "notebooks"
    _notebook(folder, "04_race.ipynb", "FILE_MIB = 2**40  # a petabyte-sized race file")
    (folder / "data").mkdir()
    report = setup.check_setup(folder, measure=False)
    (only,) = report.notebooks
    assert not only.ready
    assert "of data files to write" in only.line() and ": free " in only.line()
    assert only.data_files.startswith("data files at full size: race.bin ")
    assert only.disk_bytes == 2**60


def test_a_notebook_without_parameters_says_why_its_size_is_unknown(tmp_path):
    folder = tmp_path / "notebooks"
    _notebook(folder, "01_x.ipynb", "raise RuntimeError('no sizes here')")
    (only,) = setup.check_setup(folder, measure=False).notebooks
    assert "size unknown" in only.data_files and "no sizes here" in only.data_files


def test_off_linux_every_notebook_is_not_ready_and_nothing_crashes(monkeypatch):
    monkeypatch.setattr(setup.sys, "platform", "darwin")
    report = setup.check_setup(NOTEBOOKS, measure=False)
    assert all("not Linux" in n.line() for n in report.notebooks)
    assert "JupyterHub" in report.notebooks[0].line()


def test_exit_code_and_json(monkeypatch, capsys, baseline):
    code = main(["doctor", "--setup", str(NOTEBOOKS), "--json"])
    found = json.loads(capsys.readouterr().out)
    assert code == (0 if found["ready"] else 1)
    assert [n["notebook"] for n in found["notebooks"]] == NUMBERS
    assert all({"ready", "problems", "notes", "packages"} <= set(n) for n in found["notebooks"])
    _hide(monkeypatch, "torch")
    assert main(["doctor", "--setup", str(NOTEBOOKS)]) == 1
    out = capsys.readouterr().out
    assert "06 not ready: torch missing: run `make lab`" in out
    assert out.rstrip().splitlines()[-1].startswith("Not ready:")


def test_the_command_runs_as_a_learner_runs_it():
    result = subprocess.run(
        [sys.executable, "-m", "mmlab", "doctor", "--setup"],
        capture_output=True,
        text=True,
        cwd=NOTEBOOKS.parent,
        timeout=120,
    )
    assert result.returncode in (0, 1), result.stderr
    lines = result.stdout.splitlines()
    for number in NUMBERS:
        assert any(line.startswith(f"{number} ready") or line.startswith(f"{number} not ready")
                   for line in lines)  # fmt: skip
    (eviction,) = [line for line in lines if "page-cache eviction" in line]
    assert "works" in eviction or "does not work" in eviction
    assert result.returncode == (0 if lines[-1].startswith("Ready") else 1)


def test_without_the_widgets_extension_no_notebook_is_ready(monkeypatch, tmp_path):
    import jupyter_core.paths

    monkeypatch.setattr(jupyter_core.paths, "jupyter_path", lambda *parts: [str(tmp_path)])
    report = setup.check_setup(NOTEBOOKS, measure=False)
    for n in report.notebooks:
        assert "the JupyterLab widgets extension is missing" in n.line()
        assert "pip install jupyterlab_widgets" in n.line()


def test_a_python_older_than_mmlab_requires_is_not_ready(monkeypatch):
    real = importlib.metadata.metadata

    def metadata(name):
        return {"Requires-Python": ">=3.99"} if name == "mmlab" else real(name)

    monkeypatch.setattr(importlib.metadata, "metadata", metadata)
    report = setup.check_setup(NOTEBOOKS, measure=False)
    have = ".".join(map(str, sys.version_info[:3]))
    assert all(f"Python {have}, mmlab needs >=3.99" in n.line() for n in report.notebooks)
    (python,) = [c for c in report.checks if c.name == "Python"]
    assert python.ok is False
