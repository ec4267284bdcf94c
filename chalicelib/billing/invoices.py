"""Invoices: what an account was billed for a period, line by line (minor units).

A draft (the paused time a ``keep_as_draft`` pause kept) is billed only when the tenant
finalizes it: numbered, charged to the ledger, and collected like any open invoice (the
account's credit balance first); or voided, which bills nothing.
"""

from datetime import datetime

from chalicelib import audit, errors
from chalicelib.billing import accounts, calendar, collection, ledger, periods
from chalicelib.db import paging
from chalicelib.db.queries import load
from chalicelib.db.scope import tenant_transaction

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


def finalize(tenant_id: str, actor, invoice_id: str, now: datetime | None = None) -> dict:
    """Finalize a draft and collect it (an ACTIVE account; one in dunning is collected by its retry).

    In its own transactions: the invoice, its ledger charge and its payment attempt commit
    together; the gateway is called after.
    """
    now = now or calendar.utcnow()
    with tenant_transaction(tenant_id) as tx:
        account, invoice = _lock_draft(tx, invoice_id)
        number = periods.draft_number(str(invoice["subscription_id"]), now)
        finalized = tx.one(Q["finalize"], id=invoice_id, number=number)
        ledger.post(
            tx,
            account_id=account["id"],
            entry_type="charge",
            amount=invoice["total"],
            currency=invoice["currency"],
            idempotency_key=f"charge:invoice:{invoice_id}",
            invoice_id=invoice_id,
            period_start=invoice["period_start"],
            description=f"Invoice {number}",
        )
        if account["status"] == "ACTIVE":
            collection.open_for_invoice(tx, str(account["id"]), finalized)
        audit.record(tx, actor, "invoice.finalized", "invoice", invoice_id, {"number": number})
    # An attempt the gateway leaves unresolved stays pending: the daily run settles it under the same key.
    collection.settle_pending(tenant_id, str(account["id"]), now)
    with tenant_transaction(tenant_id) as tx:
        return get(tx, invoice_id)


def void(tx, actor, invoice_id: str) -> dict:
    """Void a draft: it bills nothing, ever."""
    _lock_draft(tx, invoice_id)
    tx.run(Q["void"], id=invoice_id)
    audit.record(tx, actor, "invoice.voided", "invoice", invoice_id)
    return get(tx, invoice_id)


def _lock_draft(tx, invoice_id: str) -> tuple[dict, dict]:
    """The invoice's account, then the invoice, locked; 404 when absent, 422 unless a draft."""
    invoice = tx.one(Q["get"], id=invoice_id)
    if invoice is None:
        raise errors.NotFound("no such invoice")
    account = accounts.lock(tx, str(invoice["account_id"]))
    invoice = tx.one(Q["lock"], id=invoice_id)
    if invoice["status"] != "draft":
        raise errors.UnprocessableState(f"the invoice is {invoice['status']}, not a draft", code="invoice_not_draft")
    return account, invoice
