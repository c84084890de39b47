"""What notebook 07 (data bigger than memory, under a limit) will show on this machine, section
by section, from ``mmlab.machine``'s facts; ``mmlab.doctor`` gathers it."""

from __future__ import annotations

from mmlab.course.advice import (
    CLEAR,
    DIFFERENT,
    NOT_SHOWN,
    _cold,
    _Facts,
    _Section,
    _storage_counter,
)
from mmlab.instruments.facts import format_size as _size

__all__ = ["notebook_07"]

_CGROUPS = ("cgroup v1", "cgroup v2", "systemd scope")
_PLACES_PER_RECORD = 21  # a record's string offset, its 19 fields and its string


def _mechanism(s: _Section, f: _Facts, under_rlimit: str) -> bool:
    """Add the mechanism's verdict; True where a limit that counts the page cache exists."""
    found = f("memory_limit_mechanism")
    if found is None:
        s.add(
            NOT_SHOWN,
            "no memory limit for a child works here "
            f"({f.why('memory_limit_mechanism')}): the notebook cannot run its children",
            "memory_limit_mechanism",
        )
        return False
    if found in _CGROUPS:
        s.add(
            CLEAR,
            f"the children run under a {found} limit, which counts their page cache too",
            "memory_limit_mechanism",
        )
        return True
    s.add(
        DIFFERENT,
        f"only {found} is usable here ({f.why('memory_limit_mechanism')}): {under_rlimit}",
        "memory_limit_mechanism",
    )
    return False


def notebook_07(f: _Facts) -> list[_Section]:
    loads = _Section("07", "2", "load the store whole, and stream it, under a limit")
    sweep = _Section("07", "3-4", "sweep a mapped working set across the limit")
    hands = _Section("07", "exercises", "find the largest fast working set; stream a statistic")
    cgroup = _mechanism(
        loads,
        f,
        "the naive loads fail with MemoryError (a refused reservation) instead of being "
        "killed, and the stream's page cache is not limited (the notebook says so); a "
        "systemd desktop session often offers the stronger systemd scope",
    )
    for section in (sweep, hands):
        _mechanism(
            section,
            f,
            "RLIMIT_DATA does not limit the page cache, so no working set thrashes: the "
            "sweep stays flat, and the cliff's predictions are revealed as not measurable here",
        )
    for section in (loads, sweep, hands):
        if cgroup and not _cold(
            section,
            f,
            "a cgroup is charged only for pages its child brings in, so with the store "
            "already cached the limit holds nothing back",
        ):
            continue
        _storage_counter(section, f)
    ra = f("read_ahead_kb")
    if cgroup and ra is not None:
        reach = _PLACES_PER_RECORD * ra * 1024
        loads.add(
            CLEAR,
            f"read_ahead_kb is {ra}: a record's values lie in {_PLACES_PER_RECORD} places of "
            f"the file, about {_size(reach)} read ahead at once; the list of records is built "
            "with readahead advised off, so it ends by the OOM killer either way (the notebook "
            "prints the aside from these numbers)",
            "read_ahead_kb",
        )
    _swap_and_lru(loads, sweep, f)
    return [loads, sweep, hands]


def _value(f: _Facts, key: str):
    """A fact's value, or None where it is unknown or was not gathered."""
    info = f.facts.get(key)
    return info.value if info is not None and info.known else None


def _swap_and_lru(loads: _Section, sweep: _Section, f: _Facts) -> None:
    """What swap and the reclaim policy change in what sections 2 and 3 show."""
    from mmlab.course.bigger import sizes

    swap = _value(f, "swap_total")
    if swap is not None:
        loads.add(
            CLEAR,
            "no swap here: private memory past a limit is refused or killed at once"
            if swap == 0
            else f"swap here ({_size(swap)}): a full machine would first swap private pages "
            "out and crawl; the children get none of it, so that is explained, not shown",
            "swap_total",
        )
    limit = _value(f, "cgroup_memory_limit")
    if isinstance(limit, int) and limit < 4 * sizes(False).budget:
        loads.add(
            DIFFERENT,
            f"this notebook's own cgroup is limited to {_size(limit)}: the children's budgets "
            "count against it too (each child offers itself first to the OOM killer)",
            "cgroup_memory_limit",
        )
    lru = _value(f, "lru_gen")
    if lru is not None:
        sweep.add(
            CLEAR,
            "MGLRU reclaims by generations here: sets near the edge may settle differently "
            "from the active/inactive lists the notebook describes"
            if lru
            else "reclaim uses active/inactive lists with refault detection, as the notebook "
            "describes (no MGLRU)",
            "lru_gen",
        )
