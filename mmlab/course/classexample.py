"""A SYNTHETIC class: students' files invented to show the class results before any exist.

Before students have sent their ``results.save`` files, the class results notebook has nothing
to show. ``write(folder)`` writes files in the same format for five invented machines (a
laptop, an arm64 VM with 16 KiB pages, a JupyterHub container whose ``read_ahead_kb`` is not
known, a server VM with ``read_ahead_kb`` 8192, and a laptop that saved only notebook 03), so
the instructor sees the table and the figures take shape. None of these numbers was measured:
every line says ``"synthetic": true`` in its fingerprint, its machine id starts with
``example-``, and the table and figures built from them carry a SYNTHETIC banner.

The invented values follow the labs' own model where it gives one (one cold fault caches one
readahead window: ``read_ahead_kb`` / page size pages); the rest (race ratios, worker growth)
are round numbers chosen only to draw a figure.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmlab.course import results

__all__ = ["MACHINES", "write"]

_LAPTOP = {
    "kernel": "6.8.0", "page_size": 4096, "cpu_count": 8, "cpus_usable": 8,
    "cpu_model": "example laptop CPU", "hypervisor": False, "memory_total": 16 * 2**30,
    "cgroup_memory_limit": "unlimited", "cgroup_cpu_limit": "unlimited",
    "thp_enabled": "madvise", "filesystem": "ext4", "read_ahead_kb": 128, "cachestat": True,
    "block_device": "nvme0n1", "machine": "x86_64", "synthetic": True,
}  # fmt: skip

# machine id -> (fingerprint, the notebooks it "saved", ratios mmap/read by block, MiB growth)
MACHINES: dict[str, tuple[dict, tuple[str, ...], dict[int, float], tuple[float, float]]] = {
    "example-laptop": (_LAPTOP, ("03", "04", "06"), {4096: 1.6, 65536: 1.1, 2**20: 0.9}, (38, 0.2)),
    "example-arm-vm": (
        _LAPTOP | {"page_size": 16384, "machine": "aarch64", "hypervisor": True, "cpu_count": 4},
        ("03", "04", "06"), {4096: 1.3, 65536: 0.95, 2**20: 0.8}, (41, 0.3),
    ),
    "example-hub": (
        _LAPTOP | {"filesystem": "overlay", "read_ahead_kb": None, "hypervisor": True,
                   "cgroup_memory_limit": 2 * 2**30, "block_device": None},
        ("03", "04", "06"), {4096: 1.2, 65536: 1.0, 2**20: 0.85}, (37, 0.2),
    ),
    "example-server": (
        _LAPTOP | {"read_ahead_kb": 8192, "hypervisor": True, "block_device": "vda"},
        ("03", "04", "06"), {4096: 1.5, 65536: 1.15, 2**20: 1.0}, (40, 0.4),
    ),
    "example-03-only": (_LAPTOP | {"cpu_model": "another laptop CPU"}, ("03",), {}, (0, 0)),
}  # fmt: skip


def _values(fingerprint: dict, notebook: str, ratios: dict[int, float], growth) -> dict:
    if notebook == "03":
        ra, page = fingerprint["read_ahead_kb"] or 128, fingerprint["page_size"]
        return {"cold_major_faults": 1, "cold_cached_pages": ra * 1024 // page}
    if notebook == "04":
        samples = {str(b): [r * 0.97, r, r * 1.03] for b, r in ratios.items()}
        sides = {
            str(b): 0 if abs(r - 1) < 0.06 else (1 if r > 1 else -1) for b, r in ratios.items()
        }
        return {"warm_slice_over_read": samples, "warm_slice_side": sides}
    return {"list_worker_growth": growth[0] * 2**20, "store_worker_growth": growth[1] * 2**20}


def write(folder: str | Path) -> Path:
    """Write the synthetic class's files into ``folder`` (made if needed); return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for ident, (fingerprint, notebooks, ratios, growth) in MACHINES.items():
        for notebook in notebooks:
            common = {"schema": results.SCHEMA, "notebook": notebook, "machine_id": ident}
            common |= {"saved_at": "2000-01-01T00:00:00+00:00", "quick": False}
            common["fingerprint"] = fingerprint
            values = _values(fingerprint, notebook, ratios, growth)
            lines = [common | {"kind": "value", "name": k, "value": v} for k, v in values.items()]
            text = "".join(json.dumps(line) + "\n" for line in lines)
            (folder / f"{notebook}-{ident}.jsonl").write_text(text)
    return folder
