"""Cursor pagination, Stripe-style: ``limit`` (1-100, default 20) and ``starting_after``.

Queries fetch ``limit + 1`` rows in a stable keyset order (an index, never OFFSET);
the extra row only says whether there is more.
"""

import re
import uuid
from dataclasses import dataclass

from chalicelib import errors
from chalicelib.db.queries import load

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass(frozen=True)
class PageRequest:
    limit: int
    starting_after: str | None


def page_request(query: dict | None) -> PageRequest:
    query = query or {}
    details = []
    limit = DEFAULT_LIMIT
    raw_limit = query.get("limit")
    if raw_limit is not None:
        if not re.fullmatch(r"[0-9]{1,3}", raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            details.append({"field": "limit", "issue": f"must be an integer from 1 to {MAX_LIMIT}"})
        else:
            limit = int(raw_limit)
    after = query.get("starting_after")
    if after is not None:
        after = parse_id(after, "starting_after", details)
    if details:
        raise errors.InvalidRequest("invalid pagination parameters", details=details)
    return PageRequest(limit=limit, starting_after=after)


def parse_id(value: str, field: str, details: list | None = None) -> str | None:
    """A canonical UUID string, or a field-level problem."""
    try:
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        problem = {"field": field, "issue": "must be an id (UUID)"}
        if details is None:
            raise errors.InvalidRequest(f"invalid {field}", details=[problem]) from None
        details.append(problem)
        return None


def page(rows: list[dict], request: PageRequest, url: str) -> dict:
    has_more = len(rows) > request.limit
    data = rows[: request.limit]
    return {
        "object": "list",
        "url": url,
        "data": data,
        "has_more": has_more,
        "next_cursor": str(data[-1]["id"]) if has_more and data else None,
    }


def common_filters(query: dict, statuses: tuple[str, ...], details: list) -> tuple[str | None, str | None]:
    """The ``account_id`` and ``status`` list filters, problems appended to ``details``."""
    account_id = parse_id(query["account_id"], "account_id", details) if "account_id" in query else None
    status = query.get("status")
    if status is not None and status not in statuses:
        details.append({"field": "status", "issue": f"must be one of {', '.join(statuses)}"})
    return account_id, status


def check_cursor(tx, exists_sql: str, page: PageRequest, noun: str, **scope) -> None:
    """A ``starting_after`` that names nothing visible is a 404, not a silently empty page."""
    check_exists(tx, exists_sql, page.starting_after, "starting_after", noun, **scope)


def check_account_filter(tx, account_id: str | None) -> None:
    """An ``account_id`` filter naming no visible account is a 404, as the account's own URL is."""
    check_exists(tx, _ACCOUNT_EXISTS, account_id, "account_id", "account")


def check_exists(tx, exists_sql: str, value: str | None, field: str, noun: str, **scope) -> None:
    """An id parameter naming nothing visible, absent or another tenant's alike, is a 404 resource_missing."""
    if value and not tx.run(exists_sql, id=value, **scope):
        raise errors.NotFound(f"no such {noun}", details=[{"field": field, "issue": f"no such {noun}"}])


_ACCOUNT_EXISTS = load("accounts")["exists"]
