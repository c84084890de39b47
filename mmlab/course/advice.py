"""The makings of advice: verdicts, how a section's checks combine, and the shared checks.

``mmlab.doctor`` judges each notebook section with checks on the machine's facts. Each
check adds a verdict and its reason: the section shows what its prose describes
(``clear``), shows it with numbers that differ in a way the reason explains (``different``),
does not show it at all (``not_shown``), or cannot be judged because a deciding fact is
unknown (``unknown``). The worst verdict is the section's (``Advice``); ``advice_html``
renders them all as a table. Here too are the checks many sections share: whether
cold-cache runs are really cold, residency can be shown, storage reads are counted, and
memory suffices.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape

from mmlab.instruments.facts import format_size as _size

__all__ = ["VERDICTS", "Advice", "advice_html"]

CLEAR, DIFFERENT, NOT_SHOWN, UNKNOWN = "clear", "different", "not_shown", "unknown"
VERDICTS = {
    CLEAR: "shows clearly",
    DIFFERENT: "shows, with different numbers",
    NOT_SHOWN: "will not show",
    UNKNOWN: "cannot tell",
}
_RANK = {CLEAR: 0, UNKNOWN: 1, DIFFERENT: 2, NOT_SHOWN: 3}
_COLOURS = {CLEAR: "#2ca02c", DIFFERENT: "#ff7f0e", NOT_SHOWN: "#d62728", UNKNOWN: "#7f7f7f"}


@dataclass(frozen=True)
class Advice:
    """What one notebook section will show here: a verdict, its reasons, the deciding facts."""

    notebook: str
    section: str
    title: str
    verdict: str
    reasons: tuple[str, ...]
    facts: tuple[str, ...]
    warnings: tuple[str, ...] = ()  # the reasons whose verdict is not "clear"

    def to_json(self) -> dict:
        return {
            "notebook": self.notebook,
            "section": self.section,
            "title": self.title,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "facts": list(self.facts),
        }

    def __str__(self) -> str:
        where = f"{self.notebook} §{self.section}" if self.section else self.notebook
        head = f"  {where} {self.title}: {VERDICTS[self.verdict]}"
        return "\n".join([head, *(f"      - {r}" for r in self.reasons)])


# The notebooks' full-size parameters (their first code cell) and notebooks/README.md.
N01_BLOCKS = 8 * 64 * 2**20  # 8 arrays of 64 MiB alive at once
N02_MAPPINGS = 20_000
N03_FILE = 2**30
N04_FILE = 256 * 2**20
DATA_BYTES = 6 * 2**29  # notebooks/data at full size: 1.8 GiB for 01-06, 0.6 for 07-08, 0.4 for 09
STRIDE_PAGES = 16  # notebook 03 section 5 touches every 16th page
QM9_RECORDS = 130_831


def _read(touch: dict) -> str:
    n = touch["storage_bytes"]
    return "an unknown amount (no /proc/self/io)" if n is None else _size(n)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


class _Section:
    """Collects (verdict, reason, facts) for one section; the worst verdict wins."""

    def __init__(self, notebook: str, section: str, title: str) -> None:
        self.notebook, self.section, self.title = notebook, section, title
        self.items: list[tuple[str, str, tuple[str, ...]]] = []

    def add(self, verdict: str, reason: str, *facts: str) -> None:
        self.items.append((verdict, reason, facts))

    def advice(self) -> Advice:
        verdict = max((v for v, _, _ in self.items), key=_RANK.get, default=CLEAR)
        worst_first = sorted(self.items, key=lambda item: -_RANK[item[0]])
        facts = tuple(dict.fromkeys(f for _, _, fs in worst_first for f in fs))
        reasons = tuple(r for _, r, _ in worst_first)
        warnings = tuple(r for v, r, _ in worst_first if v != CLEAR)
        return Advice(self.notebook, self.section, self.title, verdict, reasons, facts, warnings)


class _Facts:
    """``f(key)`` is a fact's value (None when unknown); ``f.why(key)`` where it came from."""

    def __init__(self, facts: Mapping) -> None:
        self.facts = facts

    def __call__(self, key: str):
        return self.facts[key].value

    def why(self, key: str) -> str:
        info = self.facts[key]
        return info.source if info.known else f"unknown: {info.reason}"

    def usable_memory(self) -> tuple[int | None, str, tuple[str, ...]]:
        """The least of available memory and the cgroup limit, with what it came from."""
        available, limit = self("memory_available"), self("cgroup_memory_limit")
        if isinstance(limit, int) and (available is None or limit < available):
            return limit, f"the cgroup memory limit is {_size(limit)}", ("cgroup_memory_limit",)
        if available is None:
            return None, "", ()
        return available, f"{_size(available)} of memory is available", ("memory_available",)


def _cold(s: _Section, f: _Facts, what: str) -> bool:
    """Add the eviction verdict; True where cold-cache runs really are cold."""
    works = f("eviction_works")
    if works is True:
        return True
    if works is None:
        s.add(UNKNOWN, f"whether eviction works is {f.why('eviction_works')}", "eviction_works")
    elif f("filesystem") in ("tmpfs", "ramfs"):
        s.add(
            NOT_SHOWN,
            f"{f('filesystem')}: eviction cannot work, cold-cache runs will be warm: {what}",
            "filesystem",
            "eviction_works",
        )
    else:
        s.add(
            NOT_SHOWN,
            f"eviction leaves pages cached here ({f.why('eviction_works')}): {what}",
            "eviction_works",
        )
    return False


def _residency(s: _Section, f: _Facts) -> None:
    if f("mincore_trustworthy") is False:
        s.add(
            NOT_SHOWN,
            "mincore untrustworthy for files here: residency plots will be unavailable "
            f"({f.why('mincore_trustworthy')})",
            "mincore_trustworthy",
        )


def _storage_counter(s: _Section, f: _Facts) -> None:
    touch = f("cold_touch")
    if f("proc_self_io") is False:
        s.add(DIFFERENT, "no /proc/self/io here: 'storage read' shows n/a", "proc_self_io")
    elif touch and touch["major_faults"] and touch["storage_bytes"] == 0:
        s.add(
            DIFFERENT,
            f"reads from this file system ({f('filesystem')}) do not show in /proc/self/io "
            "read_bytes (network and FUSE file systems): 'storage read' stays at 0",
            "cold_touch",
        )


def _memory_for(s: _Section, f: _Facts, needed: int, what: str, verdict: str) -> None:
    usable, said, keys = f.usable_memory()
    if usable is not None and usable < needed:
        s.add(verdict, f"{said}, less than {_size(needed)}: {what}", *keys)


def advice_html(advice) -> str:
    """The advice as an HTML table, one row per section, coloured by verdict."""
    rows = "".join(
        f"<tr><td>{escape(a.notebook)}</td><td>{escape(a.section)}</td>"
        f"<td style='text-align:left'>{escape(a.title)}</td>"
        f"<td style='color:{_COLOURS[a.verdict]};font-weight:bold'>{VERDICTS[a.verdict]}</td>"
        f"<td style='text-align:left'>{'<br>'.join(escape(r) for r in a.reasons)}</td></tr>"
        for a in advice
    )
    caption = "what the labs will show here at full size"
    if os.environ.get("MMLAB_QUICK") == "1":
        caption += " (this run is in quick mode, MMLAB_QUICK=1: its sizes are smaller)"
    return (
        f"<table><caption>{caption}</caption>"
        "<tr><th>notebook</th><th>section</th><th>what it shows</th><th>verdict</th>"
        "<th>why</th></tr>"
        f"{rows}</table>"
    )
