"""Invoices: what an account was billed, line by line (minor units), and their lifecycle.

``draft -> open -> paid | void | uncollectible``. A draft (a renewal held for the tenant's
grace period, a one-off invoice, the paused time a ``keep_as_draft`` pause kept) bills
nothing until it is finalized: its lines are revised (late usage, pending invoice items),
it is numbered (``numbering``: gapless), its total is posted to the ledger, and it is
collected like any open invoice (the account's credit balance first). Voiding a draft
bills nothing; voiding an open or uncollectible invoice posts a ``void`` entry that reverses
what it still charges. A paid invoice is corrected by a credit note (``credit_notes``),
never voided or edited. Invoice events come from the invoices' status changes (a trigger,
migration 0007), so every path emits them.
"""

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from chalicelib import audit, errors, outbox
from chalicelib.billing import accounts, calendar, collection, invoice_items, invoicing, ledger, numbering, periods
from chalicelib.db import paging, transaction
from chalicelib.db.queries import load
from chalicelib.db.scope import tenant_transaction
from chalicelib.observability import emit_metric

Q = load("invoices")
log = logging.getLogger("billing.invoices")
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


def check_visible(tx, invoice_id: str | None, field_name: str = "invoice") -> None:
    """An invoice id (a list filter) naming no visible invoice is a 404, as the invoice's own URL is."""
    paging.check_exists(tx, Q["exists"], invoice_id, field_name, "invoice")


@dataclass(frozen=True)
class NewInvoice:
    """A one-off invoice for an account: its pending invoice items (and ``items``, added first)."""

    account_id: str
    items: tuple[invoice_items.NewInvoiceItem, ...] = ()
    description: str | None = None
    finalize: bool = True  # False: leave it a draft (finalize it later)
    metadata: dict = field(default_factory=dict)

    @classmethod
    def of(cls, body: dict) -> "NewInvoice":
        account_id = body["account_id"].lower()
        items = tuple(_item_of(position, item, account_id) for position, item in enumerate(body.get("items", ())))
        return cls(account_id, items, body.get("description"), body.get("finalize", True))


def _item_of(position: int, body: dict, account_id: str) -> invoice_items.NewInvoiceItem:
    """One of a one-off invoice's items; its problems named as ``items.N.field``."""
    try:
        return invoice_items.NewInvoiceItem.of({**body, "account_id": account_id})
    except errors.InvalidRequest as exc:
        details = [{**d, "field": f"items.{position}.{d['field']}"} for d in exc.details or ()]
        raise errors.InvalidRequest("invalid invoice item", details=details) from None


def create(tenant_id: str, actor, command: NewInvoice, now: datetime | None = None) -> dict:
    """A one-off invoice, written and collected (``write_one_off``, then ``collected``)."""
    now = now or calendar.utcnow()
    with tenant_transaction(tenant_id) as tx:
        invoice = write_one_off(tx, actor, command, now)
    return collected(tenant_id, invoice, now)


def write_one_off(tx, actor, command: NewInvoice, now: datetime) -> dict:
    """A one-off invoice now (``billing_reason`` manual): a draft of the account's pending items,
    finalized (its payment attempt opened) unless the command says otherwise. 422 with nothing
    to bill, or for an INACTIVE account."""
    account = accounts.lock(tx, command.account_id)
    if account["status"] == "INACTIVE":  # billing has stopped: nothing would ever collect it
        raise errors.UnprocessableState("the account is inactive", code="account_inactive")
    for item in command.items:
        invoice_items.create(tx, actor, item)
    invoice_id = invoicing.write_one_off(tx, account, now, command.description)
    if invoice_id is None:
        raise errors.UnprocessableState("the account has no pending invoice items", code="nothing_to_invoice")
    audit.record(tx, actor, "invoice.created", "invoice", invoice_id)
    if command.finalize:
        _finalize_locked(tx, actor, account, tx.one(Q["lock"], id=invoice_id))
    return get(tx, invoice_id)


def finalize(tenant_id: str, actor, invoice_id: str, now: datetime | None = None) -> dict:
    """Finalize a draft and collect it (``finalize_draft``, then ``collected``)."""
    with tenant_transaction(tenant_id) as tx:
        invoice = finalize_draft(tx, actor, invoice_id)
    return collected(tenant_id, invoice, now or calendar.utcnow())


def finalize_draft(tx, actor, invoice_id: str) -> dict:
    """Finalize a draft: revised, numbered, charged, and its payment attempt opened (an ACTIVE
    account; one in dunning is collected by its retry). The invoice, its ledger entry and the
    attempt commit together; the gateway is called after (``collected``)."""
    account, invoice = _lock(tx, invoice_id, ("draft",), "invoice_not_draft")
    _finalize_locked(tx, actor, account, invoice)
    return get(tx, invoice_id)


def collected(tenant_id: str, invoice: dict, now: datetime) -> dict:
    """After commit: the account's pending payment settled through the gateway; the invoice then.
    An attempt the gateway leaves unresolved stays pending: the daily run settles it under the same key."""
    collection.settle_pending(tenant_id, str(invoice["account_id"]), now)
    with tenant_transaction(tenant_id) as tx:
        return get(tx, str(invoice["id"]))


def _finalize_locked(tx, actor, account: dict, invoice: dict) -> None:
    total = invoicing.revise_draft(tx, invoice)
    finalized = tx.one(Q["finalize"], id=invoice["id"], total=total)
    key, period_start = _charge_of(invoice)
    ledger.post(
        tx,
        account_id=account["id"],
        entry_type="charge" if total >= 0 else "credit",
        amount=total,
        currency=invoice["currency"],
        idempotency_key=key,
        invoice_id=invoice["id"],
        period_start=period_start,
        description=invoice["description"] or "Invoice",
    )
    if account["status"] == "ACTIVE" and total > 0:
        collection.open_for_invoice(tx, str(account["id"]), finalized)
    elif account["status"] == "INACTIVE" and total > 0:  # billing has stopped: owed, but not pursued
        tx.run(Q["mark_uncollectible"], id=invoice["id"])
    number = numbering.number_invoices(tx, [str(invoice["id"])])[str(invoice["id"])]
    audit.record(tx, actor, "invoice.finalized", "invoice", invoice["id"], {"number": number, "total": total})


def _charge_of(invoice: dict) -> tuple[str, datetime | None]:
    """A finalized draft's ledger key and period: a held renewal or final invoice posts exactly the
    charge it would have posted at its boundary (``due_at`` until finalized); any other draft its own."""
    if invoice["auto_finalize_at"] is not None:
        return periods.charge_key(invoice["account_id"], invoice["due_at"]), invoice["due_at"]
    if invoice["subscription_id"] is None:
        return f"charge:invoice:{invoice['id']}", None
    return f"charge:invoice:{invoice['id']}", invoice["period_start"]


def void(tx, actor, invoice_id: str) -> dict:
    """Void a draft (it bills nothing, ever; its invoice items are pending again) or an open or
    uncollectible invoice: a ``void`` ledger
    entry reverses what it still charges, collection stops, and any credit balance it used is the
    account's again. A paid invoice cannot be voided: credit it instead."""
    account, invoice = _lock(tx, invoice_id, ("draft", "open", "uncollectible"), "invoice_not_voidable")
    if invoice["status"] != "draft":
        check_no_payment_in_flight(tx, invoice)
        charged = still_charged(invoice)
        ledger.post(
            tx,
            account_id=account["id"],
            entry_type="void",
            amount=-charged,
            currency=invoice["currency"],
            idempotency_key=f"void:invoice:{invoice_id}",
            invoice_id=invoice_id,
            description=f"Invoice {invoice['number']} voided",
        )
    tx.run(Q["void"], id=invoice_id)
    if invoice["status"] == "draft":  # its invoice items go to the account's next invoice instead
        tx.run(Q["release_items"], id=invoice_id)
    collection.reactivate_if_clear(tx, str(account["id"]))
    audit.record(tx, actor, "invoice.voided", "invoice", invoice_id, {"from": invoice["status"]})
    return get(tx, invoice_id)


def mark_uncollectible(tx, actor, invoice_id: str) -> dict:
    """Stop collecting an open invoice: it is still owed (the ledger keeps it), but not pursued."""
    account, invoice = _lock(tx, invoice_id, ("open",), "invoice_not_open")
    check_no_payment_in_flight(tx, invoice, waiting_too=False)  # the customer may still pay it: that is fine
    tx.run(Q["mark_uncollectible"], id=invoice_id)
    collection.reactivate_if_clear(tx, str(account["id"]))  # no longer pursued: dunning ends with it
    audit.record(tx, actor, "invoice.marked_uncollectible", "invoice", invoice_id)
    return get(tx, invoice_id)


def still_charged(invoice: dict) -> int:
    """What a finalized invoice still charges: its total less every credit note on it (what is left to
    credit, and what a void reverses)."""
    credited = invoice["pre_payment_credit_notes_amount"] + invoice["post_payment_credit_notes_amount"]
    return max(invoice["total"], 0) - credited


def lock_finalized(tx, invoice_id: str) -> tuple[dict, dict]:
    """An invoice a credit note may correct (open, paid or uncollectible) and its account, locked."""
    return _lock(tx, invoice_id, ("open", "paid", "uncollectible"), "invoice_not_finalized")


def check_no_payment_in_flight(tx, invoice: dict, *, waiting_too: bool = True) -> None:
    """409 while a payment of the invoice waits for the gateway's answer (or, ``waiting_too``, for the
    customer's authentication): its amount must not move under a charge that may still succeed."""
    in_flight = collection.pending_for_invoice(tx, invoice["id"]) is not None
    if in_flight or (waiting_too and collection.waiting_for(tx, invoice["id"]) is not None):
        raise errors.Conflict(
            "a payment of this invoice is waiting for the gateway's answer; try again shortly",
            code="payment_in_progress",
        )


def withdraw_waiting_payment(tenant_id: str, invoice_id: str, now) -> None:
    """Before a void or a credit note: a payment of the invoice that waits for the customer is
    cancelled at the gateway (or found completed and recorded), so the change does not leave a
    live charge behind. If the gateway does not answer, it still waits, and the change's own
    ``check_no_payment_in_flight`` refuses it (409 ``payment_in_progress``)."""
    collection.withdraw_waiting(tenant_id, invoice_id, now)


def _lock(tx, invoice_id: str, statuses: tuple[str, ...], code: str) -> tuple[dict, dict]:
    """The invoice's account, then the invoice, locked; 404 when absent, 422 ``code`` unless in ``statuses``."""
    invoice = tx.one(Q["get"], id=invoice_id)
    if invoice is None:
        raise errors.NotFound("no such invoice")
    account = accounts.lock(tx, str(invoice["account_id"]))
    invoice = tx.one(Q["lock"], id=invoice_id)
    if invoice["status"] not in statuses:
        allowed = " or ".join(statuses)
        raise errors.UnprocessableState(f"the invoice is {invoice['status']}, not {allowed}", code=code)
    return account, invoice


def finalize_due(now: datetime | None = None, max_rows: int = 500, budget_s: float = 20.0) -> dict:
    """Finalize the drafts whose grace period is over, across tenants (the scheduled finalizer).

    Each in its own transactions; one that cannot be finalized is logged, counted and left for
    the next run, never blocking the others; the run stops after ``budget_s`` seconds and the
    next one (15 minutes on) goes on, so a backlog never outlives the function's timeout.
    """
    now = now or calendar.utcnow()
    started = time.monotonic()
    with transaction() as tx:
        due = tx.all(Q["drafts_due"], as_of=now, max_rows=max_rows)
    counts = {"finalized": 0, "failed": 0}
    for row in due:
        if time.monotonic() - started > budget_s:
            break
        counts[_finalize_due_one(str(row["tenant_id"]), str(row["invoice_id"]), now)] += 1
    return counts


def _finalize_due_one(tenant_id: str, invoice_id: str, now: datetime) -> str:
    try:
        finalize(tenant_id, "system:invoice_finalizer", invoice_id, now)
    except errors.UnprocessableState as exc:
        if exc.code == "invoice_not_draft":  # the tenant finalized or voided it meanwhile
            return "finalized"
        log.warning("draft %s not finalized: %s", invoice_id, exc)
        emit_metric("draft_finalize_failures", 1, TenantId=tenant_id)
        return "failed"
    except Exception:  # noqa: BLE001 - one draft's failure (the database, the gateway) never stops the rest
        log.exception("draft %s not finalized", invoice_id)
        emit_metric("draft_finalize_failures", 1, TenantId=tenant_id)
        return "failed"
    finally:
        outbox.flush_quietly(tenant_id)
    return "finalized"
