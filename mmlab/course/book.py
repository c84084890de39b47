"""The course as a static website: the executed notebooks, the claims table, the guide.

``python -m mmlab.course.book`` runs the nine labs in a fresh copy of ``notebooks/`` (full
size, or ``--quick``), or takes the executed copies ``make claims`` left (``--executed
build/notebooks``), never notebooks executed by hand. It stages them as the instructor
edition (every solution shown), with ``notebooks/README.md`` (the sessions and the claims
table) as the front page and ``INSTRUCTORS.md``, and builds the site with Jupyter Book
(Sphinx, offline: the theme ships in the wheel). Warnings fail the build, so a broken
cross-reference does; then every page is checked for the figures its notebook produced and
every link between pages for a target. Launch buttons (Binder, a JupyterHub) appear when
the repository's public address is given.

Jupyter Book 2 (MyST's site builder) downloads its theme from api.mystmd.org at build time,
which an offline machine cannot do; Jupyter Book 1 reads the same MyST and notebooks.
"""

from __future__ import annotations

import argparse
import html.parser
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

__all__ = ["Site", "build", "check_site", "stage"]

PAGES = ("README.md", "INSTRUCTORS.md")  # from notebooks/, beside the labs


@dataclass(frozen=True)
class Site:
    """A built site: its folder, and what the checks found (empty lists: all well)."""

    html: Path
    missing_figures: list[str]
    broken_links: list[str]

    @property
    def ok(self) -> bool:
        return not self.missing_figures and not self.broken_links


def execute(notebooks: Path, into: Path, *, quick: bool) -> Path:
    """Run every lab in a fresh copy of ``notebooks`` (no ``data/``); keep them in ``into``."""
    from mmlab.course.claims import run_notebooks

    with tempfile.TemporaryDirectory(prefix="mmlab-book-") as scratch:
        copy = Path(scratch) / "notebooks"
        shutil.copytree(notebooks, copy, ignore=shutil.ignore_patterns("data", "results"))
        for _ in run_notebooks(copy, quick=quick, keep=into):
            pass
    return into


def stage(executed: Path, notebooks: Path, source: Path, config: dict) -> list[str]:
    """Lay out the book's source in ``source``; return the lab pages, in order."""
    import nbformat

    from mmlab.course import editions

    if source.exists():
        shutil.rmtree(source)
    source.mkdir(parents=True)
    labs = sorted(p.stem for p in executed.glob("[0-9][0-9]_*.ipynb"))
    if not labs:
        raise FileNotFoundError(f"no executed notebooks in {executed}")
    for stem in labs:
        notebook = nbformat.read(executed / f"{stem}.ipynb", as_version=4)
        nbformat.write(editions.instructor(notebook), source / f"{stem}.ipynb")
    pages = [name for name in PAGES if (notebooks / name).exists()]
    for name in pages:
        shutil.copy(notebooks / name, source / name)
    shutil.copy(notebooks / "matplotlibrc", source / "matplotlibrc")
    toc = {
        "format": "jb-book",
        "root": "README",
        "chapters": [{"file": stem} for stem in labs]
        + [{"file": Path(n).stem} for n in pages if n != "README.md"],
    }
    (source / "_toc.yml").write_text(json.dumps(toc, indent=1))  # JSON is YAML
    (source / "_config.yml").write_text(json.dumps(config, indent=1))
    return labs


def config(repository_url: str | None, hub_url: str | None, binder_url: str | None) -> dict:
    """Jupyter Book's settings: never execute (the notebooks come executed), links checked."""
    settings: dict = {
        "title": "mmlab: memory-mapped files, measured",
        "author": "the mmlab team",
        "only_build_toc_files": True,
        "execute": {"execute_notebooks": "off"},
        "sphinx": {
            "config": {
                "html_show_copyright": False,
                "nb_merge_streams": True,
                # results.record's JSON is for the tests; its text/plain twin is what shows
                "suppress_warnings": ["mystnb.unknown_mime_type"],
            }
        },
    }
    if repository_url:  # launch buttons need the notebooks' public home
        settings["repository"] = {
            "url": repository_url,
            "path_to_book": "notebooks",
            "branch": "main",
        }
        settings["launch_buttons"] = {
            "notebook_interface": "jupyterlab",
            "binderhub_url": binder_url or "https://mybinder.org",
            **({"jupyterhub_url": hub_url} if hub_url else {}),
        }
    return settings


def build(source: Path, out: Path) -> Path:
    """Run Jupyter Book on ``source``; warnings are errors. Returns the HTML folder."""
    command = [
        str(Path(sys.executable).with_name("jupyter-book")), "build", str(source),
        "--path-output", str(out), "--warningiserror", "--keep-going",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"jupyter-book failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return out / "_build" / "html"


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        found = dict(attrs)
        if tag == "img" and found.get("src"):
            self.images.append(found["src"])
        if tag == "a" and found.get("href"):
            self.links.append(found["href"])


def _figures(notebook_path: Path) -> int:
    notebook = json.loads(notebook_path.read_text())
    return sum(
        any(k.startswith("image/") for k in output.get("data", {}))
        for cell in notebook["cells"]
        for output in cell.get("outputs", [])
    )


def check_site(html_dir: Path, executed: Path, labs: Sequence[str]) -> Site:
    """Every lab page shows at least the figures its notebook made; every local link lands."""
    missing, broken = [], []
    for page in sorted(html_dir.rglob("*.html")):
        parser = _Links()
        parser.feed(page.read_text(errors="replace"))
        if page.stem in labs:
            shown = [s for s in parser.images if (page.parent / unquote(s)).exists()]
            made = _figures(executed / f"{page.stem}.ipynb")
            if len(shown) < made:
                missing.append(f"{page.name}: {len(shown)} of {made} figures")
        for href in parser.links:
            target = urlparse(href)
            if target.scheme or target.netloc or not target.path:
                continue  # another site, or a place on this page
            if not (page.parent / unquote(target.path)).exists():
                broken.append(f"{page.relative_to(html_dir)} -> {href}")
    return Site(html_dir, missing, broken)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmlab.course.book", description=__doc__)
    parser.add_argument("--notebooks", type=Path, default=Path("notebooks"))
    parser.add_argument("--executed", type=Path, help="executed labs (make claims --keep)")
    parser.add_argument("--quick", action="store_true", help="run the labs in quick mode")
    parser.add_argument("--out", type=Path, default=Path("build/book"))
    parser.add_argument("--repository-url", help="GitHub/GitLab address: adds launch buttons")
    parser.add_argument("--hub-url", help="a JupyterHub for the launch button")
    parser.add_argument("--binder-url", help="a BinderHub (default: mybinder.org)")
    args = parser.parse_args(argv)

    executed = args.executed
    if executed is None:
        executed = execute(args.notebooks, args.out / "executed", quick=args.quick)
    settings = config(args.repository_url, args.hub_url, args.binder_url)
    labs = stage(executed, args.notebooks, args.out / "source", settings)
    site = check_site(build(args.out / "source", args.out), executed, labs)
    for problem in site.missing_figures + site.broken_links:
        print(f"book: {problem}", file=sys.stderr)
    print(f"{site.html / 'index.html'}: {len(labs)} labs", file=sys.stderr)
    return 0 if site.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
