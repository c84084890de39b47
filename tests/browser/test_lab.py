"""Every notebook as a student meets it: opened in JupyterLab in Chromium, run cell by cell,
then every widget used. Whatever would embarrass an instructor in front of a class fails the
test: a traceback, a warning box, a widget that does not show or does nothing, a missing or
broken figure, a live plot that never moves. Screenshots of each notebook after running and
after interacting go to ``build/browser/`` (kept by CI).
"""

from __future__ import annotations

import re
import time

import pytest
from lab import REPO, Lab, Widgets, is_progress_bar

# The six labs, and the instructor's notebook that gathers the class's results.
NOTEBOOKS = [p.name for p in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
NOTEBOOKS.append("class_results.ipynb")
CELL_TIMEOUT_S = 300
WIDGET_TIMEOUT_S = 120
# The figures each notebook's text walks through; a cell that silently stops drawing one
# would leave the text pointing at nothing.
MIN_IMAGES = {
    "01": 2,
    "02": 3,
    "03": 6,
    "04": 2,
    "05": 2,
    "06": 3,
    "07": 2,
    "08": 3,
    "09": 4,
    "class": 3,
}
# Cells tagged live-plot must redraw while they run; the tags must not quietly go missing.
LIVE_PLOTS = {"03": 2, "04": 1, "09": 1}
EMBARRASSING = re.compile(r"Error displaying widget|Traceback|Warning:|Exception")


def run_every_cell(lab: Lab) -> list[str]:
    """Run the notebook top to bottom, one cell at a time; return what went wrong."""
    problems = []
    for index in range(lab.cell_count()):
        if lab.cell(index).kind != "code":
            continue
        start = time.monotonic()
        frames = lab.run(index, timeout=CELL_TIMEOUT_S)
        cell = lab.cell(index)
        where = f"cell {index} ({time.monotonic() - start:.1f} s)"
        if cell.execution_count is None:
            problems.append(f"{where}: did not run")
        problems += [f"{where}: {p}" for p in output_problems(cell)]
        if "live-plot" in cell.tags and not cell.widget_outputs:
            problems += [f"{where}: {p}" for p in live_problems(frames, lab.frames(index))]
    return problems


def output_problems(cell) -> list[str]:
    problems = []
    expected = cell.metadata.get("mmlab", {}).get("expected_error")
    if "raises-exception" in cell.tags:
        names = [e["ename"] for e in cell.errors]
        if not expected:
            problems.append("tagged raises-exception without metadata.mmlab.expected_error")
        elif names != [expected]:
            problems.append(f"should show {expected}, shows {names or 'no error'}")
    else:
        problems += [f"traceback: {e['ename']}: {e['evalue']}" for e in cell.errors]
    if cell.stderr and not is_progress_bar(cell.stderr):
        problems.append(f"warning box (stderr): {cell.stderr.strip()[:300]}")
    if "Error displaying widget" in cell.text:
        problems.append("Error displaying widget")
    return problems


def live_problems(frames: list[str], final: list[str]) -> list[str]:
    """A live plot must move while it runs and keep its last frame when done."""
    problems = []
    if len(frames) < 2:
        problems.append(f"live plot showed {len(frames)} frame(s) while running, not several")
    if not final or (frames and final[-1] != frames[-1]):
        problems.append("live plot's final frame did not stay")
    return problems


def page_problems(lab: Lab, number: str) -> list[str]:
    """What the page shows after the run: widgets, images, no error text anywhere."""
    problems, loaded = [], 0
    for index in range(lab.cell_count()):
        cell = lab.cell(index)
        if cell.kind != "code" or not cell.outputs:
            continue
        images = lab.images(index)
        for image in images:
            if image["complete"] and image["natural"] > 0 and image["width"] > 0:
                loaded += 1
            else:
                problems.append(f"cell {index}: broken or empty image {image}")
        if len(images) < cell.png_outputs:
            problems.append(f"cell {index}: {cell.png_outputs} figures sent, {len(images)} drawn")
        if cell.widget_outputs:
            problems += [f"cell {index}: {p}" for p in widget_view_problems(lab, index)]
    if loaded < MIN_IMAGES[number]:
        problems.append(f"{loaded} images shown, at least {MIN_IMAGES[number]} expected")
    notebook = lab.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
    if "Error displaying widget" in notebook.inner_text():
        problems.append("the page shows 'Error displaying widget'")
    if notebook.locator("mjx-merror").count():  # MathJax's red box for a formula it cannot parse
        problems.append("a formula in the text does not render")
    live = sum("live-plot" in lab.cell(i).tags for i in range(lab.cell_count()))
    if live < LIVE_PLOTS.get(number, 0):
        problems.append(f"{live} cells tagged live-plot, {LIVE_PLOTS[number]} expected")
    return problems


def widget_view_problems(lab: Lab, index: int) -> list[str]:
    """Every control drawn, with a size, and showing a value (no blank dropdown)."""
    widgets = Widgets(lab, index)
    controls = widgets.controls()
    if not controls:
        return ["a widget output with no control drawn"]
    problems = []
    for control in controls:
        box = lab.page.locator(control.selector).bounding_box()
        if not box or box["width"] < 1 or box["height"] < 1:
            problems.append(f"{control.kind} {control.label!r} is not visible")
        if control.kind != "button" and not widgets.shown_value(control).strip():
            problems.append(f"{control.kind} {control.label!r} shows a blank value")
    return problems


def interact_problems(lab: Lab) -> list[str]:
    """Use every control of every widget; each must change what its output shows."""
    problems = []
    for index in range(lab.cell_count()):
        cell = lab.cell(index)
        if cell.kind == "code" and cell.widget_outputs:
            problems += [f"cell {index}: {p}" for p in use_widgets(lab, index, cell.tags)]
    return problems


def use_widgets(lab: Lab, index: int, tags: list[str]) -> list[str]:
    widgets = Widgets(lab, index)
    controls = widgets.controls()
    buttons = [c for c in controls if c.kind == "button"]
    problems = []

    def press_all(why: str) -> None:  # an interact_manual: the button runs the function
        nonlocal problems
        for button in buttons:
            before = widgets.output()
            widgets.use(button)
            after, frames = widgets.wait_for_change(before, WIDGET_TIMEOUT_S)
            problems += [f"warning box after clicking {why}: {w[:300]}" for w in widgets.warnings()]
            if after == before:
                problems.append(f"clicking {button.label!r} {why} changed nothing")
            elif "live-plot" in tags:
                problems += live_problems(frames, list(widgets.output()[1]))

    press_all("first")
    for control in (c for c in controls if c.kind != "button"):
        shown = widgets.shown_value(control)
        before = widgets.output()
        widgets.use(control)
        if widgets.shown_value(control) == shown:
            problems.append(f"{control.kind} {control.label!r} did not change when used")
        if buttons:
            press_all(f"after changing {control.label!r}")
        elif widgets.wait_for_change(before, WIDGET_TIMEOUT_S)[0] == before:
            problems.append(f"changing {control.kind} {control.label!r} changed no output")
        problems += [f"warning box after {control.label!r}: {w[:300]}" for w in widgets.warnings()]
    text = widgets.output()[0]
    if EMBARRASSING.search(text):
        problems.append(f"widget output shows: {EMBARRASSING.search(text).group()}")
    return problems


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_as_a_student_sees_it(lab_server, page, screenshots, name):
    base_url, token, _ = lab_server
    number = name.split("_")[0]
    lab = Lab(page, base_url, token)
    lab.open(name)
    problems = run_every_cell(lab)
    problems += page_problems(lab, number)
    lab.screenshot(screenshots / f"{name[:-6]}.run.png")
    problems += interact_problems(lab)
    lab.screenshot(screenshots / f"{name[:-6]}.interact.png")
    problems += [e for e in page.mmlab_errors if "widget" in e.lower() or e.startswith("uncaught")]
    assert not problems, f"{name} in JupyterLab:\n" + "\n".join(problems)
