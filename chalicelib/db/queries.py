"""Named SQL queries: one ``.sql`` file per entity under ``chalicelib/db/sql``.

A file holds blocks headed ``-- name: due_accounts``; each block is one statement
with ``:name`` bind parameters for pg8000.native. Files are read on first use.
"""

import re
from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).parent / "sql"
_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse_query_file(text: str) -> dict[str, str]:
    parts = _HEADER.split(text)
    queries = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        sql = "\n".join(line for line in body.strip().splitlines() if not line.lstrip().startswith("--"))
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = sql.strip().rstrip(";")
    return queries


@cache
def load(entity: str) -> dict[str, str]:
    """The queries of ``sql/<entity>.sql`` by name."""
    return parse_query_file((SQL_DIR / f"{entity}.sql").read_text())
