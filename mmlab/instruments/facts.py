"""Facts about the machine: a value and where it came from, or why there is none.

Everything ``mmlab.machine`` reports is a ``Fact`` (a value and its source: the file read,
the call made, the measurement taken) or an ``Unknown`` (the reason this machine would not
give the value); ``Info`` is either. Nothing is filled in from defaults. ``read_value`` reads
the small /proc and /sys files most facts come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Fact", "Info", "Unknown", "format_size", "read_value"]


@dataclass(frozen=True)
class Fact:
    """A value read from the system or measured here, and where it came from."""

    value: Any
    source: str
    known = True

    def __post_init__(self) -> None:
        if self.value is None:
            raise ValueError("a Fact needs a value; use Unknown(reason) for a missing one")

    def to_json(self) -> dict:
        return {"value": self.value, "source": self.source}


@dataclass(frozen=True)
class Unknown:
    """A value this machine would not give, and why."""

    reason: str
    value = None
    known = False

    def to_json(self) -> dict:
        return {"value": None, "unknown": self.reason}


Info = Fact | Unknown


def format_size(n: int) -> str:
    """Bytes as a person reads them: GiB, MiB, KiB or bytes."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes"


def read_value(path: str | Path) -> str:
    """The stripped text of a small /proc or /sys file."""
    with open(path) as f:
        return f.read().strip()


def _from_file(path: str, convert=int, what: str = "") -> Info:
    try:
        return Fact(convert(read_value(path)), f"{path}{what}")
    except (OSError, ValueError) as exc:
        return Unknown(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
