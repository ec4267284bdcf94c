"""Invoices: what an account was billed for a period, line by line (minor units)."""

from datetime import UTC, datetime

from chalicelib import errors, pagination
from chalicelib.db.queries import load

Q = load("invoices")
STATUSES = ("draft", "open", "paid", "void", "uncollectible")


def get(tx, invoice_id: str) -> dict:
    invoice = tx.one(Q["get"], id=pagination.parse_id(invoice_id, "id"))
    if invoice is None:
        raise errors.NotFound("no such invoice")
    invoice["lines"] = {"object": "list", "data": tx.all(Q["lines"], invoice_id=invoice["id"])}
    return invoice


def list_page(tx, page: pagination.PageRequest, query: dict) -> dict:
    details = []
    account_id, status = pagination.common_filters(query, STATUSES, details)
    bounds = {name: _timestamp(query, name, details) for name in ("period_start_gte", "period_start_lt")}
    if details:
        raise errors.InvalidRequest("invalid filters", details=details)
    pagination.check_account_filter(tx, account_id)
    pagination.check_cursor(tx, Q["exists"], page, "invoice")
    rows = tx.all(
        Q["list"], account_id=account_id, status=status, after=page.starting_after, limit=page.limit + 1, **bounds
    )
    return pagination.page(rows, page, "/v1/invoices")


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
