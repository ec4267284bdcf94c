"""Billing-period arithmetic. Calendar-correct, always from the anchor.

Periods are computed as ``anchor + n * interval`` rather than by stepping from the
previous period end, so a subscription anchored on Jan 31 bills Feb 28 (or 29),
then Mar 31, not Mar 28: the day clamps to the month's length and recovers.
All datetimes are timezone-aware UTC.
"""

import calendar
from datetime import UTC, datetime, timedelta

from chalicelib import errors

BILLING_CYCLES = {"daily": "day", "weekly": "week", "monthly": "month", "yearly": "year"}
CYCLE_OF = {interval: cycle for cycle, interval in BILLING_CYCLES.items()}


def add_months(anchor: datetime, months: int) -> datetime:
    month_index = anchor.month - 1 + months
    year, month = anchor.year + month_index // 12, month_index % 12 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def period_boundary(anchor: datetime, interval: str, interval_count: int, n: int) -> datetime:
    """The start of the n-th period (n = 0 is the anchor itself)."""
    steps = n * interval_count
    if interval == "day":
        return anchor + timedelta(days=steps)
    if interval == "week":
        return anchor + timedelta(weeks=steps)
    if interval == "month":
        return add_months(anchor, steps)
    if interval == "year":
        return add_months(anchor, 12 * steps)
    raise ValueError(f"unknown interval {interval!r}")


def period_containing(anchor: datetime, interval: str, interval_count: int, at: datetime) -> tuple[datetime, datetime]:
    """The [start, end) period of this schedule that contains ``at`` (at >= anchor)."""
    n = 0
    if interval in ("month", "year"):
        months = (at.year - anchor.year) * 12 + at.month - anchor.month
        per = interval_count * (12 if interval == "year" else 1)
        n = max(months // per - 1, 0)
    else:
        length = timedelta(days=interval_count * (7 if interval == "week" else 1))
        n = max(int((at - anchor) / length) - 1, 0)
    while period_boundary(anchor, interval, interval_count, n + 1) <= at:
        n += 1
    return period_boundary(anchor, interval, interval_count, n), period_boundary(
        anchor, interval, interval_count, n + 1
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def timestamp(body: dict, name: str, *, allow_now: bool = False) -> datetime | str | None:
    """An RFC 3339 date-time field (``"now"`` where allowed) as an aware datetime; 400 otherwise."""
    value = body.get(name)
    if value is None or (allow_now and value == "now"):
        return value
    try:
        parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))  # RFC 3339 allows t and z
    except (AttributeError, ValueError):
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        issue = "must be an RFC 3339 date-time with an offset" + (', or "now"' if allow_now else "")
        raise errors.InvalidRequest(f"invalid {name}", details=[{"field": name, "issue": issue}])
    return parsed
