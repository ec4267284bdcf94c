"""The one writer of bills: invoices, their lines, ledger entries, subscription state and payment intents.

``periods`` computes what each billing instant bills; ``issue`` writes a list of those
bills in the caller's transaction with one set-based statement per table, so a batch
of renewals, one account's renewal, a subscription's first invoice and its final
invoice are all written by the same code. It is idempotent twice over: an invoice is
unique per subscription, reason and period, and a charge's ledger key is
``periods.charge_key``, so a retry of any step adds nothing. Amounts are integer minor
units in the plan's currency. The payment intents it opens are settled after commit
by ``collection``.

A bill's total is posted to the ledger: a charge, or a credit when its credits exceed its
charges (a negative total). An invoice uses the account's credit balance before
anything is collected (``write_invoices``), so balance = sum(ledger) always, and
what the gateway is asked for is the amount due. A draft posts nothing.

Two things join a bill here, whatever computed it: the account's pending invoice items
(one-off charges), which land on its next invoice; and the tenant's grace period: a
renewal or final invoice is *held* as a draft until ``boundary + invoice_grace_hours``,
when ``revise_draft`` prices its usage again (late events count) and takes the items
added meanwhile, and ``invoices.finalize`` numbers, charges and collects it. The invoices
a round writes are born numbered (``write_invoices``, through ``numbering``'s one rule:
gapless, the series' row stays locked until commit).
"""

import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from chalicelib import encoding, outbox
from chalicelib.billing import collection, ledger, periods, subscription_views, usage_charges
from chalicelib.billing.lines import Line, total_of
from chalicelib.billing.periods import Bill
from chalicelib.db.queries import load
from chalicelib.observability import emit_metric

Q = load("invoicing")
# Invoices that bill metered usage in arrears: the ones a tenant's grace period holds as drafts.
HELD_REASONS = ("subscription_cycle", "subscription_cancel")


@dataclass(frozen=True)
class Issued:
    bill: Bill
    invoice_id: str | None  # None: nothing to invoice, or already invoiced (a retry)
    intent: collection.Intent | None  # the payment to settle after commit
    amount_due: int = 0  # what is left to collect once the account's credit balance was used

    @property
    def total(self) -> int:
        return self.bill.total


def issue(tx, tenant_id: str, bills: list[Bill], *, settle_now: bool = False) -> dict[str, Issued]:
    """Write ``bills`` (at most one per account); what was issued, by account id.

    ``settle_now``: the caller settles the payments right after commit, so they are opened
    already claimed by it (``collection.open_intents``).
    """
    started = time.perf_counter()
    if len({bill.account_id for bill in bills}) != len(bills):
        raise ValueError("one bill per account per call")
    bills = _with_pending_items(tx, _held(tx, bills))
    invoiced = [bill for bill in bills if bill.lines]
    written = _write_invoices(tx, invoiced)
    bills_written = [bill for bill in invoiced if bill.account_id in written]
    invoice_ids = {account_id: invoice_id for account_id, (invoice_id, _due) in written.items()}
    _write_lines(
        tx,
        [(invoice_ids[b.account_id], b.currency, b.lines, b.period_start, b.period_end) for b in bills_written],
    )
    ledger.post_many(tx, [_entry(bill, invoice_ids[bill.account_id]) for bill in bills_written if not bill.draft])
    _restate(tx, [bill for bill in bills if bill.then is not None and not bill.ends])
    _end(tx, [bill for bill in bills if bill.ends])
    to_collect = [(bill, *written[bill.account_id]) for bill in bills_written if bill.collect and not bill.draft]
    intents = collection.open_intents(tx, [item for item in to_collect if item[2] > 0], claim=settle_now)
    elapsed_ms = (time.perf_counter() - started) * 1000
    for bill in bills_written:
        emit_metric("invoice_amount", bill.total, "None", TenantId=tenant_id, PlanId=bill.subscription.plan_id)
    if bills_written:
        emit_metric("invoice_generation_time", elapsed_ms / len(bills_written), "Milliseconds", TenantId=tenant_id)
    return {bill.account_id: _issued(bill, written, intents) for bill in bills}


def _issued(bill: Bill, written: dict, intents: dict) -> Issued:
    invoice_id, amount_due = written.get(bill.account_id, (None, 0))
    return Issued(bill, invoice_id, intents.get(bill.account_id), 0 if bill.draft else amount_due)


def usage_totals(tx, windows: list[tuple[str, object, object]]) -> dict[str, dict]:
    """Metered usage per account and metric over each ``(account_id, from, to)`` window, in one statement."""
    totals: dict[str, dict] = {account_id: {} for account_id, _from, _to in windows}
    rows = [{"account_id": a, "from_at": f, "to_at": t} for a, f, t in windows]
    if rows:
        for row in tx.all(Q["usage_totals"], windows=encoding.dumps(rows)):
            totals[str(row["account_id"])][row["metric"]] = row
    return totals


def subscription_state(tx, subscription_id: str) -> dict | None:
    """A subscription with its plan price (``periods.Subscription.of`` reads it) and status."""
    return tx.one(Q["subscription_state"], subscription_id=subscription_id)


def _write_invoices(tx, bills: list[Bill]) -> dict[str, tuple[str, int]]:
    """The invoices written (a retry writes none), by account id: (invoice id, amount due)."""
    if not bills:
        return {}
    rows = [
        {
            "account_id": bill.account_id,
            "subscription_id": bill.subscription.id,
            "billing_reason": bill.reason,
            "currency": bill.currency,
            "total": bill.total,
            "period_start": bill.period_start,
            "period_end": bill.period_end,
            "boundary": bill.boundary,
            "draft": bill.draft,
            "auto_finalize_at": bill.auto_finalize_at,
            "usage_terms": bill.usage_terms,
        }
        for bill in bills
    ]
    written = tx.all(Q["write_invoices"], rows=encoding.dumps(rows))
    return {str(row["account_id"]): (str(row["id"]), row["amount_due"]) for row in written}


def _write_lines(tx, invoices: list[tuple]) -> None:
    """Each ``(invoice id, currency, lines, period start, period end)``'s lines, in order (a line with no
    period of its own has the invoice's); a line billing an invoice item attaches the item to its
    invoice (in the same statement)."""
    rows = [
        {
            "invoice_id": invoice_id,
            "kind": line.kind,
            "description": line.description,
            "metric": line.metric,
            "quantity": line.quantity,
            "unit_amount": line.unit_amount,
            "amount": line.amount,
            "currency": currency,
            "period_start": line.period_start or period_start,
            "period_end": line.period_end or period_end,
            "position": position,
            "invoice_item_id": line.invoice_item_id,
        }
        for invoice_id, currency, lines, period_start, period_end in invoices
        for position, line in enumerate(lines)
    ]
    if rows:
        tx.run(Q["write_lines"], rows=encoding.dumps(rows))


def _held(tx, bills: list[Bill]) -> list[Bill]:
    """Renewal and final bills held as drafts for the tenant's grace period (none by default)."""
    holdable = [bill for bill in bills if bill.lines and bill.reason in HELD_REASONS and not bill.draft]
    hours = tx.scalar(Q["grace_hours"]) if holdable else 0
    if not hours:
        return bills
    held = {id(bill) for bill in holdable}
    return [bill.held(bill.boundary + timedelta(hours=hours)) if id(bill) in held else bill for bill in bills]


def _with_pending_items(tx, bills: list[Bill]) -> list[Bill]:
    """Each invoiced bill with its account's pending invoice items as lines (locked until written),
    collected if the items leave an ACTIVE account something to pay."""
    found = _pending_items(tx, [bill.account_id for bill in bills if bill.lines]) if bills else {}
    with_items = []
    for bill in bills:
        if bill.account_id not in found or not bill.lines:
            with_items.append(bill)
            continue
        status, items = found[bill.account_id]
        lines = (*bill.lines, *items)
        with_items.append(replace(bill, lines=lines, collect=not bill.draft and periods.collects(status, lines)))
    return with_items


def _pending_items(tx, account_ids: list[str]) -> dict[str, tuple[str, list[Line]]]:
    """The accounts' invoice items no invoice has taken yet, as lines, oldest first (locked), with each
    account's status; only accounts that have some."""
    found: dict[str, tuple[str, list[Line]]] = {}
    if not account_ids:
        return found
    for row in tx.all(Q["pending_items"], ids=encoding.dumps(sorted(account_ids))):
        line = Line(
            "invoice_item",
            row["description"],
            row["quantity"],
            row["unit_amount"],
            row["amount"],
            invoice_item_id=str(row["id"]),
        )
        found.setdefault(str(row["account_id"]), (row["account_status"], []))[1].append(line)
    return found


def write_one_off(tx, account: dict, at: datetime, description: str | None) -> str | None:
    """A one-off draft invoice of the account's pending items (None when there are none)."""
    account_id = str(account["id"])
    _status, items = _pending_items(tx, [account_id]).get(account_id, (None, []))
    if not items:
        return None
    total = total_of(items)
    row = {"account_id": account_id, "currency": account["currency"], "total": total, "at": at}
    invoice_id = str(tx.scalar(Q["write_one_off"], **row, description=description))
    _write_lines(tx, [(invoice_id, account["currency"], items, at, at)])
    return invoice_id


def revise_draft(tx, invoice: dict) -> int:
    """A draft's lines as they stand when it is finalized: its usage priced again from the terms it
    was held with (late usage counts), and the account's invoice items added meanwhile. Its total."""
    lines = [_line(row) for row in tx.all(Q["draft_lines"], invoice_id=invoice["id"])]
    terms = invoice["usage_terms"]
    if terms:
        from_at, to_at = (datetime.fromisoformat(terms[k]) for k in ("from", "to"))
        totals = usage_totals(tx, [(str(invoice["account_id"]), from_at, to_at)])[str(invoice["account_id"])]
        usage = usage_charges.lines(terms["prices"], totals, from_at, to_at)
        lines = [line for line in lines if line.kind != "usage"] + usage
    lines += _pending_items(tx, [str(invoice["account_id"])]).get(str(invoice["account_id"]), (None, []))[1]
    total = total_of(lines)
    tx.run(Q["clear_lines"], invoice_id=invoice["id"])
    _write_lines(tx, [(invoice["id"], invoice["currency"], lines, invoice["period_start"], invoice["period_end"])])
    return total


def _line(row: dict) -> Line:
    names = ("kind", "description", "quantity", "unit_amount", "amount", "metric", "period_start", "period_end")
    item = row["invoice_item_id"]
    return Line(**{name: row[name] for name in names}, invoice_item_id=str(item) if item else None)


def _entry(bill: Bill, invoice_id: str) -> dict:
    """The bill's ledger entry: its total as a charge, or as a credit when negative (one key either way)."""
    return {
        "account_id": bill.account_id,
        "entry_type": "charge" if bill.total >= 0 else "credit",
        "amount": bill.total,
        "currency": bill.currency,
        "invoice_id": invoice_id,
        "period_start": bill.boundary,
        "idempotency_key": bill.charge_key,
        "description": bill.description,
    }


def _restate(tx, bills: list[Bill]) -> None:
    """Each subscription as its bill leaves it (``Bill.then``), and when its account is next billed."""
    rows = [_state_row(bill.then) for bill in bills]
    if rows:
        tx.run(Q["restate"], rows=encoding.dumps(rows))


def _state_row(sub) -> dict:
    return {
        "account_id": sub.account_id,
        "subscription_id": sub.id,
        "plan_id": sub.plan_id,
        "quantity": sub.quantity,
        "status": sub.status,
        "billing_anchor": sub.billing_anchor,
        "period_start": sub.current_period_start,
        "period_end": sub.current_period_end,
        "paused_s": sub.current_period_paused_s,
        "paid": sub.current_period_paid,
        "trial_end": sub.trial_end,
        "cancel_at_period_end": sub.cancel_at_period_end,
        "paused_at": sub.paused_at,
        "pause_behavior": sub.pause_behavior,
        "resumes_at": sub.resumes_at,
        "pending_change": sub.pending_change,
        "pending_prorations": [periods.line_json(line) for line in sub.pending_prorations],
        "next_billing_at": sub.next_billing_at,
    }


def _end(tx, ending: list[Bill]) -> None:
    """End the subscriptions whose last bill this was; their accounts are billed no more."""
    if not ending:
        return
    rows = [{"account_id": b.account_id, "subscription_id": b.subscription.id, "ended_at": b.boundary} for b in ending]
    tx.run(Q["end_subscriptions"], rows=encoding.dumps(rows))
    for bill in ending:
        fields = {"subscriptionId": bill.subscription.id, "accountId": bill.account_id, "endedAt": bill.boundary}
        outbox.add(tx, "subscription.canceled", fields, subscription_views.get(tx, bill.subscription.id))
