"""What a held shard copy counts against a holder's budgets: its bytes on disk.

Counted as SQLite stores a row of ``shard_store``'s ``records`` table, so the budgets bound
the file, not only the records' own bytes; ``row_bytes`` for one copy in Python and
``ROW_BYTES_SQL`` for the same figure over rows in SQL.
"""

from __future__ import annotations

# What a row costs on disk. A row of up to LOCAL_PAYLOAD bytes lives in its b-tree page:
# its record and term plus the publisher id three times (key and both indexes), expiry
# twice and cell headers — measured 885 bytes a row over 10,665 rows of one site's
# shards (26.0 MB for 16.6 MB of records and terms). A larger row (a 50-posting shard is
# ~6 KB) keeps ~LOCAL_PART bytes there and the rest in whole overflow pages: counting
# those pages whole is what the file grows by (the red-team flood's 7 KB rows took 8.5 KB
# each on disk against 8 KB counted as len + 1,024).
ROW_OVERHEAD = 1024
LOCAL_PAYLOAD = 1004  # SQLite's largest local payload in an index b-tree page of 4 KiB
LOCAL_PART = 489  # what an overflowing row keeps in its b-tree page
OVERFLOW_PAGE = 4092  # usable bytes of an overflow page (4 KiB pages)
PAGE_BYTES = 4096


def row_bytes(term: str, record: bytes, summary: bytes = b"") -> int:
    """What a held copy counts against the budgets (SQL's twin in ``ROW_BYTES_SQL``)."""
    size = len(record) + len(summary) + len(term.encode("utf-8"))
    if size <= LOCAL_PAYLOAD:
        return size + ROW_OVERHEAD
    pages = (size - LOCAL_PART + OVERFLOW_PAGE - 1) // OVERFLOW_PAGE
    return LOCAL_PART + pages * PAGE_BYTES + ROW_OVERHEAD


_ROW_SIZE = "(length(record) + ifnull(length(summary), 0) + length(CAST(term AS BLOB)))"
ROW_BYTES_SQL = (
    f"(CASE WHEN {_ROW_SIZE} <= {LOCAL_PAYLOAD} THEN {_ROW_SIZE} + {ROW_OVERHEAD} ELSE "
    f"{LOCAL_PART} + (({_ROW_SIZE} - {LOCAL_PART} + {OVERFLOW_PAGE - 1}) / {OVERFLOW_PAGE})"
    f" * {PAGE_BYTES} + {ROW_OVERHEAD} END)"
)
