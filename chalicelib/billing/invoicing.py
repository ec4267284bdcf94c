"""The one writer of bills: invoices, their lines, ledger charges, period changes and payment intents.

``periods`` computes what each billing instant bills; ``issue`` writes a list of those
bills in the caller's transaction with one set-based statement per table, so a batch
of renewals, one account's renewal, a subscription's first invoice and its final
invoice are all written by the same code. It is idempotent twice over: an invoice is
unique per subscription, reason and period, and a charge's ledger key is
``periods.charge_key``, so a retry of any step adds nothing. Amounts are integer minor
units in the plan's currency. The payment intents it opens are settled after commit
by ``collection``.
"""

import time
from dataclasses import dataclass

from chalicelib import encoding, outbox
from chalicelib.billing import collection, ledger
from chalicelib.billing.periods import Bill
from chalicelib.db.queries import load
from chalicelib.observability import emit_metric

Q = load("invoicing")


@dataclass(frozen=True)
class Issued:
    bill: Bill
    invoice_id: str | None  # None: nothing to invoice, or already invoiced (a retry)
    intent: collection.Intent | None  # the payment to settle after commit

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
    invoiced = [bill for bill in bills if bill.lines]
    invoice_ids = _write_invoices(tx, invoiced)
    written = [bill for bill in invoiced if bill.account_id in invoice_ids]
    _write_lines(tx, written, invoice_ids)
    ledger.post_many(tx, [_charge(bill, invoice_ids[bill.account_id]) for bill in written])
    _move_periods(tx, bills)
    to_collect = [(bill, invoice_ids[bill.account_id]) for bill in written if bill.collect]
    intents = collection.open_intents(tx, to_collect, claim=settle_now)
    elapsed_ms = (time.perf_counter() - started) * 1000
    for bill in written:
        emit_metric("invoice_amount", bill.total, "None", TenantId=tenant_id, PlanId=bill.subscription.plan_id)
    if written:
        emit_metric("invoice_generation_time", elapsed_ms / len(written), "Milliseconds", TenantId=tenant_id)
    return {
        bill.account_id: Issued(bill, invoice_ids.get(bill.account_id), intents.get(bill.account_id)) for bill in bills
    }


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


def _write_invoices(tx, bills: list[Bill]) -> dict[str, str]:
    if not bills:
        return {}
    rows = [
        {
            "account_id": bill.account_id,
            "subscription_id": bill.subscription.id,
            "billing_reason": bill.reason,
            "number": bill.number,
            "currency": bill.currency,
            "total": bill.total,
            "period_start": bill.period_start,
            "period_end": bill.period_end,
            "boundary": bill.boundary,
        }
        for bill in bills
    ]
    return {str(row["account_id"]): str(row["id"]) for row in tx.all(Q["write_invoices"], rows=encoding.dumps(rows))}


def _write_lines(tx, bills: list[Bill], invoice_ids: dict[str, str]) -> None:
    rows = [
        {
            "invoice_id": invoice_ids[bill.account_id],
            "kind": line.kind,
            "description": line.description,
            "metric": line.metric,
            "quantity": line.quantity,
            "unit_amount": line.unit_amount,
            "amount": line.amount,
            "currency": bill.currency,
            "period_start": line.period_start or bill.period_start,
            "period_end": line.period_end or bill.period_end,
            "position": position,
        }
        for bill in bills
        for position, line in enumerate(bill.lines)
    ]
    if rows:
        tx.run(Q["write_lines"], rows=encoding.dumps(rows))


def _charge(bill: Bill, invoice_id: str) -> dict:
    return {
        "account_id": bill.account_id,
        "entry_type": "charge",
        "amount": bill.total,
        "currency": bill.currency,
        "invoice_id": invoice_id,
        "period_start": bill.boundary,
        "idempotency_key": bill.charge_key,
        "description": bill.description,
    }


def _move_periods(tx, bills: list[Bill]) -> None:
    """Advance renewed subscriptions to their next period; end the ones whose last bill this was."""
    advancing = [
        {
            "account_id": b.account_id,
            "subscription_id": b.subscription.id,
            "period_start": b.next_period[0],
            "period_end": b.next_period[1],
        }
        for b in bills
        if b.next_period
    ]
    if advancing:
        tx.run(Q["advance_periods"], rows=encoding.dumps(advancing))
    ending = [b for b in bills if b.ends]
    if ending:
        rows = [
            {"account_id": b.account_id, "subscription_id": b.subscription.id, "ended_at": b.boundary} for b in ending
        ]
        tx.run(Q["end_subscriptions"], rows=encoding.dumps(rows))
    for bill in ending:
        outbox.add(
            tx,
            "subscription.canceled",
            {"subscriptionId": bill.subscription.id, "accountId": bill.account_id, "endedAt": bill.boundary},
        )
