"""live: a figure updated in a loop leaves exactly one PNG in an executed notebook."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

CELLS = [
    "%matplotlib inline\nimport numpy as np\nfrom mmlab.instruments.live import LiveFigure",
    "values = []\n"
    "def draw(ax):\n"
    "    ax.clear()\n"
    "    ax.plot(values)\n"
    "with LiveFigure(draw, every=0) as live:\n"
    "    for i in range(5):\n"
    "        values.append(i * i)\n"
    "        live.update()\n"
    "print(live.frames)",
]


def _executed(cells: list[str], folder) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()
    return notebook


def test_live_figure_leaves_one_png(tmp_path):
    notebook = _executed(CELLS, tmp_path)
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert text.strip() == "6"  # five updates and the final frame


def test_live_figure_outside_a_notebook():
    import matplotlib

    matplotlib.use("Agg")
    from mmlab.instruments.live import LiveFigure

    calls = []
    live = LiveFigure(lambda ax: calls.append(ax), every=10)
    assert live.update() is True and live.update() is False  # throttled
    live.close()
    assert len(calls) == 2 and live.closed


WIDGET_CELLS = [
    "%matplotlib inline\nimport ipywidgets as widgets\n"
    "from mmlab.instruments.live import LiveFigure",
    "out = widgets.Output()\n"
    "display(out)\n"
    "with out:\n"
    "    with LiveFigure(lambda ax: ax.plot([1, 2]), every=0) as live:\n"
    "        for i in range(3):\n"
    "            live.update()\n"
    "print(live.frames, live._image is not None, len(live._image.value) > 0)",
]


def test_live_figure_inside_an_output_widget_updates_an_image(tmp_path):
    """interact's Output ignores display-id updates in JupyterLab: an Image widget is redrawn."""
    notebook = _executed(WIDGET_CELLS, tmp_path)
    outputs = notebook.cells[1].get("outputs", [])
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert text.strip() == "4 True True"
    assert not [o for o in outputs if "image/png" in o.get("data", {})]


def test_live_figure_told_it_is_in_a_widget_draws_an_image(tmp_path):
    """widget=True (what notebook 03's interact passes) needs no guess from ipywidgets."""
    cells = [
        WIDGET_CELLS[0],
        "with LiveFigure(lambda ax: ax.plot([1, 2]), every=0, widget=True) as live:\n"
        "    live.update()\n"
        "print(live.frames, live._image is not None)",
    ]
    notebook = _executed(cells, tmp_path)
    outputs = notebook.cells[1].get("outputs", [])
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert text.strip() == "2 True"


def test_in_output_widget_follows_the_capture():
    import ipywidgets

    from mmlab.instruments.live import in_output_widget

    out = ipywidgets.Output()
    assert not in_output_widget()
    out.msg_id = "a-request"  # what ``with out:`` sets in a kernel
    try:
        assert in_output_widget()
    finally:
        out.msg_id = ""
        out.close()
