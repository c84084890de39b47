"""Per-lab advice: which notebook sections show their effect clearly on this machine, and why.

``advise(facts)`` reads the facts of ``mmlab.machine.report`` and, for each section of the
nine notebooks, says whether it will show what its prose describes (``clear``), show it with
numbers that differ in a way the reason explains (``different``), not show it at all
(``not_shown``), or cannot be judged because a deciding fact is unknown (``unknown``). Every
reason names the machine fact that decides it, with its value. The sizes are the notebooks'
full-size parameters (``MMLAB_QUICK=1`` runs them smaller).

The verdicts, the checks several sections share, the notebooks' full-size parameters and the
HTML table are in ``mmlab.advice``; the sections of each notebook in ``doctor_basics`` (01 to
03), ``doctor_data`` (04 to 06), ``doctor_memory`` (07), ``doctor_durability`` (08) and
``doctor_practice`` (09).
"""

from __future__ import annotations

from collections.abc import Mapping

from mmlab.course.advice import (
    CLEAR,
    DATA_BYTES,
    NOT_SHOWN,
    UNKNOWN,
    VERDICTS,
    Advice,
    _Facts,
    _Section,
    advice_html,
)
from mmlab.course.doctor_basics import notebook_01, notebook_02, notebook_03
from mmlab.course.doctor_data import notebook_04, notebook_05, notebook_06
from mmlab.course.doctor_durability import notebook_08
from mmlab.course.doctor_memory import notebook_07
from mmlab.course.doctor_practice import notebook_09
from mmlab.instruments.facts import format_size as _size

__all__ = ["VERDICTS", "Advice", "advice_html", "advise"]


def advise(facts: Mapping) -> list[Advice]:
    """Advice for every section of the nine notebooks, from ``machine.report``'s facts."""
    f = _Facts(facts)
    room = _Section("all", "", "room for notebooks/data on this file system")
    free = f("free_space")
    if free is None:
        room.add(UNKNOWN, f"free space: {f.why('free_space')}", "free_space")
    elif free < DATA_BYTES + 2**29:
        room.add(
            NOT_SHOWN,
            f"{_size(free)} free: the notebooks' data files take about 3 GiB at full size",
            "free_space",
        )
    else:
        room.add(
            CLEAR, f"{_size(free)} free, enough for the data files (about 3 GiB)", "free_space"
        )
    sections = [room]
    notebooks = (notebook_01, notebook_02, notebook_03, notebook_04, notebook_05, notebook_06)
    for notebook in (*notebooks, notebook_07, notebook_08, notebook_09):
        sections += notebook(f)
    return [s.advice() for s in sections]
