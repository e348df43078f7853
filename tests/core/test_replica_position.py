"""The primary's position that a replica's replay must reach (`app.core.replica.end_of_records`): the insert
position, less a page header with nothing after it yet."""

from __future__ import annotations

import pytest

from app.core.replica import end_of_records

BLOCK, SEGMENT = 8192, 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("insert", "end"),
    [
        # Past records on a page: the position as it is.
        ("0/3002040", "0/3002040"),
        ("0/300A1F8", "0/300A1F8"),
        # Just past a page's short header, nothing on the page yet: the end of the page before.
        ("0/3002018", "0/3002000"),
        # Just past the long header of a segment's first page.
        ("0/3000028", "0/3000000"),
        ("1/28", "1/0"),
        ("A/FF000028", "A/FF000000"),
        # 40 bytes into a page that is not a segment's first: a record's end, as it is.
        ("0/3002028", "0/3002028"),
    ],
)
def test_the_insert_position_as_the_end_of_the_last_record(insert: str, end: str) -> None:
    assert end_of_records(insert, BLOCK, SEGMENT) == end
