"""List requests at the HTTP edge, Stripe-style: ``limit`` (1-100, default 20), ``starting_after``,
and the filters lists share, parsed from the query string into typed values.

Invalid values are a 400 with one field detail each; the paging itself (keyset, a
cursor naming nothing is a 404) is ``chalicelib.db.paging``'s.
"""

import re
import uuid
from datetime import UTC, datetime

from chalicelib import errors
from chalicelib.db.paging import MAX_LIMIT, PageRequest


def page_request(query: dict | None) -> PageRequest:
    query = query or {}
    details = []
    limit = PageRequest().limit
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


def choice(query: dict, name: str, allowed: tuple[str, ...]) -> str | None:
    """An optional query parameter that must be one of ``allowed`` (an event type, a status)."""
    value = query.get(name)
    if value is not None and value not in allowed:
        raise errors.InvalidRequest(f"invalid {name}", details=[{"field": name, "issue": "not a known value"}])
    return value


def filters(query: dict, statuses: tuple[str, ...], timestamps: tuple[str, ...] = ()) -> dict:
    """The ``account_id`` and ``status`` filters (and any timestamp bounds named), or one 400 with every problem."""
    details = []
    values = {
        "account_id": parse_id(query["account_id"], "account_id", details) if "account_id" in query else None,
        "status": query.get("status"),
    }
    if values["status"] is not None and values["status"] not in statuses:
        details.append({"field": "status", "issue": f"must be one of {', '.join(statuses)}"})
    for name in timestamps:
        values[name] = _timestamp(query, name, details)
    if details:
        raise errors.InvalidRequest("invalid filters", details=details)
    return values


def _timestamp(query: dict, name: str, details: list) -> datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        value = value.astimezone(UTC) if value.tzinfo else None
        if value is not None and not 1970 <= value.year <= 9998:
            value = None
    except (ValueError, OverflowError):
        value = None
    if value is None:
        details.append({"field": name, "issue": "must be an RFC 3339 timestamp with offset, years 1970-9998"})
        return None
    return value


def flag(query: dict, name: str) -> bool | None:
    """A ``true``/``false`` filter, None when absent; 400 otherwise."""
    raw = query.get(name)
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise errors.InvalidRequest("invalid filters", details=[{"field": name, "issue": "must be true or false"}])
    return raw == "true"
