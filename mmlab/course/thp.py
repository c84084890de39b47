"""Huge pages for anonymous memory: why a fresh mapping's first touches took the faults they did.

The first write to a page of fresh private anonymous memory is a page fault in which the kernel
gives the page memory. With transparent huge pages (THP), one fault may fill a whole PMD-sized
huge page instead: the size one page-middle-directory entry maps, 2 MiB with 4 KiB pages, 32 MiB
with 16 KiB pages, 512 MiB with 64 KiB pages (the kernel says it in
``/sys/kernel/mm/transparent_hugepage/hpage_pmd_size``). Only a whole, aligned PMD range of the
mapping can get one. Since Linux 6.8, *multi-size* THP can also give folios of a few pages
(``hugepages-<size>kB/enabled``), which applies even when the top-level setting is ``never`` or
``madvise``. ``pmd_size()`` reads the huge-page size; ``why_faults`` says, from a measured
fault count and the mapping's ``AnonHugePages``, which of these happened.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["pmd_size", "why_faults"]

_THP = Path("/sys/kernel/mm/transparent_hugepage")


def pmd_size(thp: Path = _THP) -> int | None:
    """The PMD huge-page size in bytes, or None where the kernel does not say (no THP)."""
    try:
        return int((thp / "hpage_pmd_size").read_text())
    except (OSError, ValueError):
        return None


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n / 2**10:g} KiB"


def why_faults(
    faults: int, pages: int, huge_bytes: int, thp: str, page: int = 4096, huge: int | None = None
) -> str:
    """Why touching ``pages`` fresh private anonymous pages took ``faults`` minor faults.

    ``huge_bytes`` is the VMA's ``AnonHugePages`` (smaps), ``thp`` the setting of
    /sys/kernel/mm/transparent_hugepage/enabled ("always", "madvise", "never" or "unknown"),
    ``huge`` the PMD huge-page size in bytes (``pmd_size()``; None: not known here).
    """
    size = _size(huge) if huge else "PMD (size not known here)"
    name, one = f"{size} huge pages", f"{size} huge page"
    if faults < 0.9 * pages and huge_bytes:
        each = f": {huge // page:,} pages of {page:,} bytes at once" if huge else ""
        return (
            f"{faults:,} faults for {pages:,} pages: {huge_bytes / 2**20:g} MiB of the mapping "
            f"sits in {name} (THP {thp!r} here), and one fault filled each of them{each}"
        )
    if faults < 0.9 * pages:
        return (
            f"{faults:,} faults for {pages:,} pages, yet no {name}: the kernel gave the "
            "mapping folios of several pages, each filled in one fault (multi-size THP, "
            "Linux 6.8+: /sys/kernel/mm/transparent_hugepage/hugepages-*kB/enabled)"
        )
    reason = {
        "always": f"THP is 'always' here, but no whole aligned {one} range of the mapping got "
        "a huge page: the mapping may hold no such range, the kernel may have had no free "
        "block that size at hand (defrag setting), or THP is disabled for this process "
        "(prctl PR_SET_THP_DISABLE, a container's setting)",
        "madvise": "THP is 'madvise' here: only mappings that ask with MADV_HUGEPAGE get huge "
        "pages, this one did not ask, and no multi-size THP size filled it either",
        "never": "THP is 'never' here, and no multi-size THP size filled the mapping either",
    }.get(thp, "the THP setting is unknown here, and the VMA holds no huge page")
    extra = faults - pages
    more = f"; the {extra:,} extra are the interpreter's own while measuring" if extra > 0 else ""
    return (
        f"{faults:,} faults for {pages:,} pages: one per page, each giving it one zeroed page of "
        f"{page:,} bytes at its first write{more}. {reason}"
    )
