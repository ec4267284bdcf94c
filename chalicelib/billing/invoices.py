"""Invoices: what an account was billed for a period, line by line (minor units)."""

from datetime import datetime

from chalicelib import errors
from chalicelib.billing import accounts
from chalicelib.db import paging
from chalicelib.db.queries import load

Q = load("invoices")
STATUSES = ("draft", "open", "paid", "void", "uncollectible")


def get(tx, invoice_id: str) -> dict:
    invoice = tx.one(Q["get"], id=invoice_id)
    if invoice is None:
        raise errors.NotFound("no such invoice")
    invoice["lines"] = {"object": "list", "data": tx.all(Q["lines"], invoice_id=invoice["id"])}
    return invoice


def list_page(
    tx,
    page: paging.PageRequest,
    *,
    account_id: str | None = None,
    status: str | None = None,
    period_start_gte: datetime | None = None,
    period_start_lt: datetime | None = None,
) -> dict:
    accounts.check_visible(tx, account_id)
    paging.check_cursor(tx, Q["exists"], page, "invoice")
    rows = tx.all(
        Q["list"],
        account_id=account_id,
        status=status,
        after=page.starting_after,
        limit=page.limit + 1,
        period_start_gte=period_start_gte,
        period_start_lt=period_start_lt,
    )
    return paging.page(rows, page, "/v1/invoices")
