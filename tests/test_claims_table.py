"""The claims table of notebooks/README.md is written from recorded claims, never by hand."""

from __future__ import annotations

import pytest

from mmlab.course import claims

ROW = {
    "claim": "Sharing | between processes",
    "shown_in": "06 §2",
    "measured": "4 readers:\nsum of PSS 87.5 MiB",
    "verdict": "true",
}
MACHINE = {"kernel": "6.18", "cpu_count": 2, "filesystem": "ext4", "memory_copy_gb_s": 9.1}


def test_the_table_has_a_row_per_claim_and_names_the_machine():
    table = claims.render([ROW, ROW], MACHINE, {"06": 11.4}, quick=False)
    rows = [line for line in table.splitlines() if line.startswith("| Sharing")]
    assert (
        rows
        == ["| Sharing \\| between processes | 06 §2 | 4 readers: sum of PSS 87.5 MiB | true |"] * 2
    )
    assert "Linux 6.18" in table and "2 CPUs" in table and "ext4" in table and "06: 11 s" in table
    assert "at full size" in table and "9.1 GB/s" in table


def test_only_the_text_between_the_markers_is_replaced():
    readme = f"intro\n{claims.BEGIN}\nold table\n{claims.END}\noutro\n"
    new = claims.replace_table(readme, claims.render([ROW], MACHINE, {}, quick=True))
    assert new.startswith("intro\n") and new.endswith("\noutro\n")
    assert "old table" not in new and "quick mode" in new
    assert claims.replace_table(new, "X") == "intro\nX\noutro\n"


def test_a_readme_without_markers_is_an_error():
    with pytest.raises(ValueError, match="no claims markers"):
        claims.replace_table("no table here", "X")
