"""The website build: a small book from executed notebooks, its figures and links checked."""

from __future__ import annotations

import base64

import nbformat
import pytest

from mmlab.course import book

# A 1x1 PNG: a figure output as a kernel would send it.
PIXEL = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
    )
).decode()


def executed_lab(folder, stem, figures, solution=False):
    cells = [nbformat.v4.new_markdown_cell(f"# Lab {stem}\n\nSee [the claims](README.md).")]
    code = nbformat.v4.new_code_cell("plot()")
    code.outputs = [
        nbformat.v4.new_output("display_data", data={"image/png": PIXEL, "text/plain": "fig"})
        for _ in range(figures)
    ]
    cells.append(code)
    if solution:
        hidden = nbformat.v4.new_code_cell("# Solution: click to show\nanswer = 42")
        hidden.metadata = {
            "tags": ["solution"],
            "mmlab": {"exercise": "demo", "role": "solution", "defines": "answer"},
            "jupyter": {"source_hidden": True, "outputs_hidden": True},
        }
        cells.append(hidden)
    metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    notebook = nbformat.v4.new_notebook(cells=cells, metadata=metadata)
    nbformat.write(notebook, folder / f"{stem}.ipynb")


@pytest.fixture
def course(tmp_path):
    notebooks, executed = tmp_path / "notebooks", tmp_path / "executed"
    notebooks.mkdir()
    executed.mkdir()
    (notebooks / "README.md").write_text("# The lab notebooks\n\n[Lab 01](01_first.ipynb)\n")
    (notebooks / "INSTRUCTORS.md").write_text("# For instructors\n\n[Lab 02](02_second.ipynb)\n")
    (notebooks / "matplotlibrc").write_text("figure.dpi: 100\n")
    executed_lab(executed, "01_first", figures=2, solution=True)
    executed_lab(executed, "02_second", figures=1)
    return notebooks, executed, tmp_path / "out"


def test_a_book_builds_with_every_figure_and_link(course):
    notebooks, executed, out = course
    settings = book.config("https://github.com/example/mmlab", "https://hub.example.org", None)
    labs = book.stage(executed, notebooks, out / "source", settings)
    site = book.check_site(book.build(out / "source", out), executed, labs)
    assert labs == ["01_first", "02_second"]
    assert site.ok, (site.missing_figures, site.broken_links)
    first = (site.html / "01_first.html").read_text()
    assert "Solution (instructor edition" in first  # the site shows every solution
    assert "mybinder.org" in first and "hub.example.org" in first  # launch buttons
    assert (site.html / "INSTRUCTORS.html").exists()


def test_the_checks_find_a_missing_figure_and_a_broken_link(course):
    notebooks, executed, out = course
    labs = book.stage(executed, notebooks, out / "source", book.config(None, None, None))
    site = book.check_site(book.build(out / "source", out), executed, labs)
    page = site.html / "02_second.html"
    page.write_text(page.read_text().replace("<img", "<gone") + '<a href="nowhere.html">x</a>')
    again = book.check_site(site.html, executed, labs)
    assert again.missing_figures == ["02_second.html: 0 of 1 figures"]
    assert again.broken_links == ["02_second.html -> nowhere.html"]


def test_a_broken_cross_reference_fails_the_build(course):
    notebooks, executed, out = course
    (notebooks / "README.md").write_text("# The lab notebooks\n\n{ref}`no-such-label`\n")
    book.stage(executed, notebooks, out / "source", book.config(None, None, None))
    with pytest.raises(RuntimeError, match="jupyter-book failed"):
        book.build(out / "source", out)
