"""Drive a real JupyterLab in a real browser the way a student does, and read what it shows.

The server is started with ``expose_app_in_browser``, so ``window.jupyterapp`` is the running
application: cells are run with the same command as the Run button (``notebook:run-cell``)
and read from the notebook's model, which holds every cell even where JupyterLab does not
render those off screen. What the student *sees* (widgets, images, warning boxes) is read
from the page after scrolling the cell into view.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Page

__all__ = ["REPO", "Cell", "Control", "Lab", "LabError", "Widgets", "is_progress_bar"]

REPO = Path(__file__).resolve().parents[2]
PANEL = "window.jupyterapp.shell.currentWidget"
# tqdm's text bar, which writes to stderr: "QM9 -> store:  25%|██▌   | 33286/130831 [...]"
PROGRESS_LINE = re.compile(r"^[^|\n]*\d+%\|[^|]*\|.*\]\s*$")


class LabError(AssertionError):
    """JupyterLab did not get where the test drove it in time."""


def is_progress_bar(text: str) -> bool:
    """Whether a stderr output holds only tqdm progress lines (each redraw begins with \\r)."""
    lines = [line.strip() for line in re.split(r"[\r\n]", text) if line.strip()]
    return bool(lines) and all(PROGRESS_LINE.match(line) for line in lines)


@dataclass
class Cell:
    """One cell as the notebook's model holds it after a run."""

    index: int
    kind: str
    source: str
    tags: list[str]
    metadata: dict
    execution_count: int | None
    outputs: list[dict] = field(default_factory=list)

    @property
    def errors(self) -> list[dict]:
        return [o for o in self.outputs if o.get("output_type") == "error"]

    @property
    def stderr(self) -> str:
        streams = [o for o in self.outputs if o.get("output_type") == "stream"]
        return "".join(o.get("text", "") for o in streams if o.get("name") == "stderr")

    @property
    def text(self) -> str:
        """Everything the cell printed or displayed as text."""
        parts = []
        for o in self.outputs:
            parts.append(o.get("text", ""))
            parts.append(o.get("data", {}).get("text/plain", ""))
            parts.extend([o.get("ename", ""), o.get("evalue", "")])
        return "".join(p if isinstance(p, str) else "".join(p) for p in parts)

    @property
    def png_outputs(self) -> int:
        return sum("image/png" in o.get("data", {}) for o in self.outputs)

    @property
    def widget_outputs(self) -> int:
        mime = "application/vnd.jupyter.widget-view+json"
        return sum(mime in o.get("data", {}) for o in self.outputs)


class Lab:
    """One browser page on a JupyterLab server; ``open`` a notebook, then run and read it."""

    def __init__(self, page: Page, base_url: str, token: str) -> None:
        self.page = page
        self.base_url = base_url.rstrip("/")
        self.token = token

    def open(self, name: str, timeout: float = 90.0) -> None:
        """Open a notebook in a fresh workspace and wait for its kernel to be idle."""
        self.page.goto(f"{self.base_url}/lab/tree/{name}?token={self.token}&reset")
        self.page.wait_for_function(
            f"window.jupyterapp && {PANEL} && {PANEL}.sessionContext"
            f" && {PANEL}.context.path === {name!r}",
            timeout=timeout * 1000,
        )
        self.wait_idle(timeout)
        # The file browser takes a third of a laptop screen; students close it to read.
        self.page.evaluate("window.jupyterapp.shell.collapseLeft()")

    def kernel_status(self) -> str:
        return self.page.evaluate(f"{PANEL}.sessionContext.session?.kernel?.status ?? 'none'")

    def wait_idle(self, timeout: float) -> None:
        self.page.wait_for_function(
            f"{PANEL}.sessionContext.session?.kernel?.status === 'idle'", timeout=timeout * 1000
        )

    def cell_count(self) -> int:
        return self.page.evaluate(f"{PANEL}.content.model.cells.length")

    def cell(self, index: int) -> Cell:
        data = self.page.evaluate(
            """([i]) => {
                const m = window.jupyterapp.shell.currentWidget.content.model.cells.get(i);
                const code = m.type === 'code';
                return {kind: m.type, source: m.sharedModel.getSource(),
                        tags: m.getMetadata('tags') || [], metadata: m.metadata,
                        execution_count: code ? m.executionCount : null,
                        outputs: code ? m.outputs.toJSON() : []};
            }""",
            [index],
        )
        return Cell(index=index, **data)

    def show(self, index: int) -> str:
        """Scroll cell ``index`` to the top of the view; return a selector for its node."""
        self.page.evaluate(
            f"""([i]) => {{
                const node = {PANEL}.content.widgets[i].node;
                node.setAttribute('data-mmlab-cell', String(i));
                node.scrollIntoView({{block: 'start'}});
            }}""",
            [index],
        )
        return f'[data-mmlab-cell="{index}"]'

    def run(self, index: int, timeout: float, every: float = 0.1) -> list[str]:
        """Run cell ``index`` as the Run button does and wait until it has finished.

        Returns the distinct image frames seen in its output while it ran, in order (a live
        plot shows several; a still figure one), sampled every ``every`` seconds.
        """
        self.show(index)
        self.page.evaluate(
            f"""([i]) => {{
                const panel = {PANEL};
                panel.content.activeCellIndex = i;
                panel.content.deselectAll();
                const run = window.__mmlabRun = {{done: false, error: null}};
                window.jupyterapp.commands.execute('notebook:run-cell').then(
                    () => {{ run.done = true; }},
                    (e) => {{ run.error = String(e); run.done = true; }});
            }}""",
            [index],
        )
        frames: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            done = self.page.evaluate("window.__mmlabRun.done")
            for frame in self.frames(index):
                if frame not in frames:
                    frames.append(frame)
            if done:
                break
            if time.monotonic() > deadline:
                raise LabError(f"cell {index} still running after {timeout:.0f} s")
            time.sleep(every)
        error = self.page.evaluate("window.__mmlabRun.error")
        if error:
            raise LabError(f"JupyterLab could not run cell {index}: {error}")
        return frames

    def frames(self, index: int) -> list[str]:
        """A short fingerprint of each image the cell's output shows now."""
        return self.page.evaluate(
            f"""([i]) => Array.from({PANEL}.content.widgets[i].node
                    .querySelectorAll('.jp-OutputArea-output img'))
                .map(img => img.src.length + ':' + img.src.slice(-64))""",
            [index],
        )

    def images(self, index: int) -> list[dict]:
        """Every image in the cell's output: whether it loaded, and its drawn size."""
        selector = self.show(index)
        self.page.wait_for_timeout(50)  # let the browser decode what just came into view
        return self.page.eval_on_selector_all(
            f"{selector} .jp-OutputArea-output img",
            """imgs => imgs.map(img => ({src: img.src.slice(0, 40), complete: img.complete,
                    natural: img.naturalWidth, width: img.getBoundingClientRect().width}))""",
        )

    def screenshot(self, path: Path, width: int = 1280, limit: int = 30_000) -> None:
        """The whole notebook in one picture: the viewport grown to the notebook's height.

        JupyterLab scrolls inside the page, so a full-page screenshot would show one screen.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        page = self.page
        scroller = (
            "document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) "
            ".jp-WindowedPanel-outer')"
        )
        height = page.evaluate(f"{scroller}.scrollHeight")
        before = page.viewport_size
        page.set_viewport_size({"width": width, "height": min(height + 200, limit)})
        page.evaluate(f"{scroller}.scrollTop = 0")
        page.wait_for_timeout(500)  # relayout, and images decoded for the newly visible cells
        page.screenshot(path=str(path))
        page.set_viewport_size(before)


@dataclass(frozen=True)
class Control:
    """One control of a widget: its kind and a Playwright selector for it."""

    kind: str  # slider, dropdown, checkbox or button
    selector: str
    label: str


CONTROLS = {
    "slider": ".widget-slider .noUi-handle",
    "dropdown": ".widget-dropdown select",
    "checkbox": ".widget-checkbox input[type=checkbox]",
    "button": "button.widget-button",
}


class Widgets:
    """The widgets in one cell's output: find them, use them, and see what they drive."""

    def __init__(self, lab: Lab, index: int) -> None:
        self.lab = lab
        self.page = lab.page
        self.index = index
        self.cell = lab.show(index)

    def controls(self) -> list[Control]:
        found = []
        for kind, css in CONTROLS.items():
            selector = f"{self.cell} {css}"
            for n in range(self.page.locator(selector).count()):
                item = self.page.locator(selector).nth(n)
                label = item.evaluate(
                    "e => (e.closest('.jupyter-widgets').querySelector('.widget-label')"
                    " || e).innerText.trim()"
                )
                found.append(Control(kind, f"{selector} >> nth={n}", label))
        return found

    def output(self) -> tuple[str, tuple[str, ...]]:
        """What the widgets' output areas show: their text and a fingerprint of each image."""
        text, images = self.page.eval_on_selector_all(
            f"{self.cell} .widget-output",
            """nodes => [nodes.map(n => n.innerText).join('\\n'),
                nodes.flatMap(n => Array.from(n.querySelectorAll('img'))
                    .map(img => img.src.length + ':' + img.src.slice(-64)))]""",
        )
        return text, tuple(images)

    def warnings(self) -> list[str]:
        """What the widgets' outputs show in a warning box (stderr), progress bars aside."""
        boxes = self.page.eval_on_selector_all(
            f"{self.cell} .widget-output [data-mime-type='application/vnd.jupyter.stderr']",
            "nodes => nodes.map(n => n.innerText)",
        )
        return [text for text in boxes if not is_progress_bar(text)]

    def shown_value(self, control: Control) -> str:
        """The value a control shows: a slider's readout, a dropdown's chosen text."""
        return self.page.locator(control.selector).evaluate(
            """e => {
                if (e.tagName === 'SELECT') return e.selectedIndex < 0 ? '' :
                    e.options[e.selectedIndex].text;
                if (e.type === 'checkbox') return String(e.checked);
                const widget = e.closest('.jupyter-widgets');
                const readout = widget && widget.querySelector('.widget-readout');
                return readout ? (readout.value ?? readout.innerText) : e.innerText;
            }"""
        )

    def use(self, control: Control) -> None:
        """Change a control once, as a student would: one step, another option, a click."""
        target = self.page.locator(control.selector)
        target.scroll_into_view_if_needed()
        if control.kind == "slider":
            target.focus()
            target.press("ArrowRight")
        elif control.kind == "dropdown":
            options = target.evaluate("e => Array.from(e.options).map(o => o.value)")
            current = target.input_value()
            target.select_option(value=next(o for o in options if o != current))
        else:
            target.click()

    def wait_for_change(self, before, timeout: float, every: float = 0.1):
        """Wait until the output differs from ``before`` and the kernel is idle again.

        Returns ``(output, frames)``: the settled output and the distinct images seen on the
        way (a live plot shows several). ``output`` equals ``before`` if nothing changed.
        """
        frames: list[str] = []
        deadline = time.monotonic() + timeout
        settled, quiet_since = before, None
        while time.monotonic() < deadline:
            now = self.output()
            for frame in now[1]:
                if frame not in frames:
                    frames.append(frame)
            idle = self.lab.kernel_status() == "idle"
            if now != settled or not idle:
                settled, quiet_since = now, None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif settled != before and time.monotonic() - quiet_since > 1.0:
                return settled, frames
            time.sleep(every)
        return settled, frames
