"""Keyset pages of a tenant's rows: ``limit + 1`` rows in a stable index order, never OFFSET.

The domain's list functions take a ``PageRequest`` and return ``page(...)``; the HTTP
edge (``chalicelib.pagination``) parses ``limit`` and ``starting_after`` into one. An id
(a cursor, a filter) that names nothing visible, absent or another tenant's alike, is a
NotFound with ``resource_missing``.
"""

from dataclasses import dataclass

from chalicelib import errors

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass(frozen=True)
class PageRequest:
    limit: int = DEFAULT_LIMIT
    starting_after: str | None = None


def page(rows: list[dict], request: PageRequest, url: str) -> dict:
    """The list object from ``limit + 1`` fetched rows: the extra row only says whether there is more."""
    has_more = len(rows) > request.limit
    data = rows[: request.limit]
    return {
        "object": "list",
        "url": url,
        "data": data,
        "has_more": has_more,
        "next_cursor": str(data[-1]["id"]) if has_more and data else None,
    }


def check_cursor(tx, exists_sql: str, request: PageRequest, noun: str, **scope) -> None:
    """A ``starting_after`` that names nothing visible is a 404, not a silently empty page."""
    check_exists(tx, exists_sql, request.starting_after, "starting_after", noun, **scope)


def check_exists(tx, exists_sql: str, value: str | None, field: str, noun: str, **scope) -> None:
    """An id parameter naming nothing visible, absent or another tenant's alike, is a 404 resource_missing."""
    if value and not tx.run(exists_sql, id=value, **scope):
        raise errors.NotFound(f"no such {noun}", details=[{"field": field, "issue": f"no such {noun}"}])
