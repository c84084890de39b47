"""The package's promises about itself: a light import and one dependency set everywhere."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# conda-forge names for the PyPI packages whose names differ.
CONDA_TO_PYPI = {
    "pytorch": "torch",
    "pytorch_geometric": "torch_geometric",
    "python_duckdb": "duckdb",
    "python_lmdb": "lmdb",
}


def _name_and_spec(requirement: str) -> tuple[str, str]:
    # extras ("dask[dataframe,distributed]") are pip's: conda-forge packages have none
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*(.*)$", requirement)
    name, spec = match.group(1), match.group(2).strip()
    return name.lower().replace("-", "_"), spec.replace("==", "=")


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra, items in project["optional-dependencies"].items():
        if extra != "all":
            requirements += items
    return dict(_name_and_spec(r) for r in requirements)


def _environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    found = {}
    for item in env["dependencies"]:
        if isinstance(item, dict):
            for pip_item in item["pip"]:
                if not pip_item.startswith("-e"):
                    found.update([_name_and_spec(pip_item)])
            continue
        name, spec = _name_and_spec(item)
        if name not in ("python", "pip"):
            found[CONDA_TO_PYPI.get(name, name)] = spec
    return found


def test_environment_yml_and_pyproject_list_the_same_dependencies():
    assert _environment_requirements() == _pyproject_requirements()


def test_torch_is_pinned_to_the_cpu_build_on_disk():
    assert _pyproject_requirements()["torch"] == "=2.13.0"


def test_environment_installs_mmlab_itself():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    assert "-e ." in pip
    assert "python=3.11" in env["dependencies"]


def test_import_mmlab_stays_light():
    code = (
        "import sys, mmlab; "
        "heavy = {'torch', 'torch_geometric', 'matplotlib', 'rdkit', 'pandas'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make lab" in readme


def test_jupyterlab_has_the_widgets_extension():
    """ipywidgets' controls render in JupyterLab only with its lab extension, from this env."""
    jupyter = Path(sys.executable).with_name("jupyter")
    result = subprocess.run([jupyter, "labextension", "list"], capture_output=True, text=True)
    listing = result.stdout + result.stderr
    assert "@jupyter-widgets/jupyterlab-manager" in listing
    line = next(x for x in listing.splitlines() if "jupyterlab-manager" in x)
    assert "enabled" in line and "OK" in line
