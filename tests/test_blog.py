"""The blog's program as written: its text, its layout's numbers, and running it for real."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import numpy as np
import pytest

from mmlab import blog, seedformat

SMILES = ["C", "N", "O=C=O", "c1ccccc1"]


def molecules(n: int = len(SMILES)) -> list[SimpleNamespace]:
    """Stand-ins for PyG's Data: ``smiles`` and ``y`` of shape [1, 19] (numpy: no torch)."""
    return [
        SimpleNamespace(smiles=SMILES[i % len(SMILES)], y=np.arange(19.0).reshape(1, 19) + i)
        for i in range(n)
    ]


def test_the_program_is_the_blogs_and_changes_only_what_is_named():
    text = blog.program()
    for call in ("data.y.item()", "mmapped_file.seek(-8, os.SEEK_CUR)", "__file__"):
        assert call in text
    assert text.count("mmapped_file.flush()") == 2
    changed = blog.program(blog.RUN_PARTS, filename="x.dat", filesize=1000, target=7)
    diff = blog.changes(changed, blog.RUN_PARTS)
    assert "+filesize = 1000" in diff and "+filename = 'x.dat'" in diff
    assert "data.y[0, 7].item()" in diff
    assert (
        len([line for line in diff.splitlines() if line.startswith("+") and "+++" not in line]) == 3
    )
    once = blog.program(blog.RUN_PARTS, flush="once")
    assert once.count("mmapped_file.flush()") == 1
    assert once.index("mmapped_file.flush()") > once.index("while mmapped_file.tell()")


def test_bad_parts_and_flush_are_refused():
    with pytest.raises(ValueError, match="no part"):
        blog.program(["nope"])
    with pytest.raises(ValueError, match="flush"):
        blog.program(flush="sometimes")


def test_the_loading_line_needs_a_script():
    with pytest.raises(NameError, match="__file__"):
        blog.blog_root({})
    assert blog.blog_root({"__file__": "/a/b/run.py"}).endswith("data/QM9")


@pytest.mark.parametrize(
    ("remainder", "ending"),
    [(0, "without an error"), (2, "buffer of 4 bytes"), (4, "buffer of 8 bytes"), (11, "8 bytes")],
)
def test_the_layout_predicts_how_the_loop_ends(remainder, ending):
    layout = blog.Layout(1, 13, 13 + 12 * 5 + remainder)
    assert layout.phantoms == 5 and layout.remainder == remainder
    assert ending in layout.ending


def test_layout_and_scaled_size():
    layout = blog.layout(SMILES, filesize=10_000)
    assert layout.data_bytes == sum(12 + len(s) for s in SMILES)
    size = blog.scaled_size(20, layout)
    scaled = blog.Layout(1, 20, size)
    assert scaled.remainder == layout.remainder
    assert abs(scaled.tail / 20 - layout.tail / layout.data_bytes) < 12 / 20


def test_running_the_program_doubles_then_runs_past_the_data(tmp_path):
    data = molecules(6)
    path = tmp_path / "blog.dat"
    data_bytes = blog.layout(d.smiles for d in data).data_bytes
    filesize = data_bytes + 12 * 700 + 11  # ends like the blog's 100 MB file
    run = blog.run(data, path, filesize, target=7, progress=False)
    assert run.error == "struct.error: unpack requires a buffer of 8 bytes"
    assert run.layout == blog.Layout(6, data_bytes, filesize) and run.end_position == filesize
    values = [v for _, v in seedformat.scan(path)]
    assert values == [2 * d.y[0, 7] for d in data]
    sparse, _, end = run.allocated
    assert end > sparse and end >= filesize - 4096  # writing 0.0 back allocated the tail
    if run.phantom.write_bytes is not None:
        assert run.phantom.write_bytes >= 700 * 8  # every phantom record dirtied a page again
    assert set(run.per_flush) == {"writing", "doubling", "phantom"}
    assert 1 <= len(run.per_flush["writing"]) <= 20 and (run.per_flush["writing"] > 0).all()
    assert len(run.per_flush["phantom"]) >= 1 and (run.per_flush["phantom"] > 0).all()


def test_per_item_cost_comes_from_the_chunks():
    times = np.cumsum([0.0] + [1.0] * 30 + [2.0] * 30)  # item k done at times[k]
    costs = blog._per_item(times, np.arange(61.0), 1.0)  # 20 chunks of 3 items
    assert costs == pytest.approx([1.0] * 10 + [2.0] * 10)
    positions = np.array([0.0, 24.0, 48.0])  # two 12-byte records per second
    assert blog._per_item(np.array([0.0, 1.0, 2.0]), positions, 12.0).tolist() == [0.5]


def test_without_a_target_the_blogs_item_fails(tmp_path):
    code = blog.program(("imports", "create", "open", "write", "close"), filename=tmp_path / "x")
    with pytest.raises(ValueError, match="size 1"):  # numpy's words for torch's RuntimeError
        blog.runner(code, dataset=molecules(1))()


def test_a_struct_error_is_what_a_short_read_gives():
    with pytest.raises(struct.error, match="8 bytes"):
        struct.unpack("d", b"\0" * 7)


def test_the_flush_cost_comes_from_the_machine_reports_probe_or_says_why_not():
    from mmlab.data import blogreport
    from mmlab.instruments.facts import Fact, Unknown

    probe = {"median": 0.000118, "min": 0.000112, "max": 0.000122, "rounds": 9, "unit": "s"}
    line = blogreport.flush_cost_line(Fact(probe, "probe"))
    assert "0.118 ms" in line and "median of 9 rounds" in line
    assert "unknown: no mapping here" in blogreport.flush_cost_line(Unknown("no mapping here"))


def test_the_load_lines_say_when_the_growth_is_smaller_than_what_the_data_holds():
    from mmlab.data import blogreport

    loaded = {"molecules": 2, "anon_growth": 1 << 20, "held": 2 << 20}

    class Counts(SimpleNamespace):
        def __len__(self):
            return 2

    counts = Counts(atoms=np.array([5, 31]), bonds=np.array([4, 30]))
    lines = blogreport.load_lines(loaded, 3 << 20, 2 << 20, counts)
    assert "+1.00 MiB" in lines[0] and "reused memory" in lines[0]
    assert "36 atoms, 34 bonds" in lines[1] and "about 3 MiB" in lines[1]


def test_bytes_written_without_a_counter_are_unknown_not_a_placeholder():
    from mmlab.data import blogreport

    rows = {
        name: SimpleNamespace(measurements=[SimpleNamespace(write_bytes=None)])
        for name in ("flush every record", "flush once")
    }
    mib, why = blogreport.written_outcome(rows, 10, 500, "ext4")
    assert mib is None and "/proc/self/io" in why
    rows = {
        "flush every record": SimpleNamespace(measurements=[SimpleNamespace(write_bytes=40960)]),
        "flush once": SimpleNamespace(measurements=[SimpleNamespace(write_bytes=4096)]),
    }
    mib, why = blogreport.written_outcome(rows, 10, 500, "ext4")
    assert mib == 40960 / 2**20 and "1 pages: about once each of the 1 pages" in why
