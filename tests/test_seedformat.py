"""The blog's layout: byte-exact records, a scan that stops at the data, doubling in place."""

from __future__ import annotations

import mmap
import struct

import pytest

from mmlab import seedformat

RECORDS = [("C", -1101.4878), ("N", -1538.1477), ("O=C=O", 0.0), ("c1ccccc1ñ", 2.5)]


def test_the_bytes_are_the_blogs_layout(tmp_path):
    path = tmp_path / "blog.bin"
    used = seedformat.write(path, RECORDS[:2], size=64)
    expected = struct.pack("I", 1) + b"C" + struct.pack("d", -1101.4878)
    expected += struct.pack("I", 1) + b"N" + struct.pack("d", -1538.1477)
    data = path.read_bytes()
    assert used == len(expected) == 26
    assert data == expected + b"\0" * (64 - 26)  # preallocated, zero-filled tail


def test_the_default_size_is_the_blogs_100_mb(tmp_path):
    path = tmp_path / "blog.bin"
    seedformat.write(path, RECORDS)
    assert path.stat().st_size == 100 * 1024 * 1024


@pytest.mark.parametrize("flush_every", [1, 3, None])
def test_scan_returns_the_records_and_stops_at_the_data(tmp_path, flush_every):
    path = tmp_path / "blog.bin"
    seedformat.write(path, RECORDS, size=4096, flush_every=flush_every)
    assert seedformat.scan(path) == RECORDS


def test_scan_of_exactly_full_file(tmp_path):
    path = tmp_path / "blog.bin"
    size = seedformat.write(path, RECORDS, size=4096)
    path.write_bytes(path.read_bytes()[:size])
    assert seedformat.scan(path) == RECORDS


def test_the_blogs_own_scan_fails_on_the_zero_tail(tmp_path):
    """The loop the blog prints, for contrast: it reads the tail as empty records and crashes."""
    path = tmp_path / "blog.bin"
    seedformat.write(path, RECORDS[:1], size=1000)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        offset, seen = 0, 0
        with pytest.raises(struct.error):
            while offset < len(mm):
                (length,) = struct.unpack("I", mm[offset : offset + 4])
                offset += 4 + length
                struct.unpack("d", mm[offset : offset + 8])
                offset += 8
                seen += 1
    assert seen > 1  # "records" past the real data were read before the crash


@pytest.mark.parametrize("flush_every", [1, 2, None])
def test_double_in_place(tmp_path, flush_every):
    path = tmp_path / "blog.bin"
    seedformat.write(path, RECORDS, size=4096)
    assert seedformat.double_in_place(path, flush_every=flush_every) == len(RECORDS)
    assert seedformat.scan(path) == [(s, 2 * v) for s, v in RECORDS]


def test_data_that_does_not_fit(tmp_path):
    with pytest.raises(ValueError, match="does not fit"):
        seedformat.write(tmp_path / "blog.bin", RECORDS, size=20)


def test_empty_strings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="empty string"):
        seedformat.write(tmp_path / "blog.bin", [("", 1.0)], size=100)


def test_a_length_past_the_end_is_reported(tmp_path):
    path = tmp_path / "blog.bin"
    path.write_bytes(struct.pack("I", 1000) + b"C" * 20)
    with pytest.raises(ValueError, match="past the end of the file"):
        seedformat.scan(path)


def test_bad_flush_every(tmp_path):
    with pytest.raises(ValueError, match="flush_every"):
        seedformat.write(tmp_path / "blog.bin", RECORDS, size=100, flush_every=0)


def test_an_empty_file_holds_no_records(tmp_path):
    path = tmp_path / "empty.bin"
    path.touch()
    assert seedformat.scan(path) == []
    assert seedformat.double_in_place(path) == 0


def test_data_size_fits_exactly(tmp_path):
    path = tmp_path / "blog.bin"
    size = seedformat.data_size(RECORDS)
    assert seedformat.write(path, RECORDS, size=size) == size - 4  # room for the end marker
    assert seedformat.scan(path) == RECORDS
