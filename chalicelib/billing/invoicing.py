"""Issuing an invoice for one subscription period: the invoice, its lines, and the ledger charge.

All in the caller's transaction, and idempotent twice over: the invoice is unique
per subscription and period, and the charge's ledger key is
``charge:{account}:{period_start}``, so a retry of any step adds nothing.
Amounts are integer minor units in the plan's currency.
"""

import time
from dataclasses import dataclass, field
from datetime import datetime

from chalicelib import errors
from chalicelib.billing import ledger
from chalicelib.db.queries import load
from chalicelib.observability import emit_metric

Q = load("invoicing")
# The largest amount the API accepts anywhere (chalicelib/schemas): no invoice may exceed it either.
MAX_AMOUNT = 999_999_999_999
_BIGINT = 2**63 - 1


@dataclass(frozen=True)
class Line:
    kind: str
    description: str
    quantity: int
    unit_amount: int
    amount: int
    metric: str | None = None
    period_start: datetime | None = None  # defaults to the invoice's period
    period_end: datetime | None = None


@dataclass
class IssuedInvoice:
    invoice_id: str | None  # None when the period was already invoiced
    total: int
    lines: list[Line] = field(default_factory=list)


def total_of(lines: list[Line]) -> int:
    """The invoice's total, refused when beyond what can be billed: usage within bounds event by event
    can sum, times its price, past any sane amount (and past bigint, where the insert would fail)."""
    total = sum(line.amount for line in lines)
    if total > MAX_AMOUNT or any(line.quantity > _BIGINT for line in lines):
        raise errors.UnprocessableState(
            f"the period's invoice would be {total} minor units; the largest amount is {MAX_AMOUNT}",
            code="amount_too_large",
        )
    return total


def charge_key(account_id, period_start: datetime) -> str:
    return f"charge:{account_id}:{period_start.isoformat()}"


def issue_for_period(
    tx, tenant_id: str, subscription_id: str, period_start: datetime, period_end: datetime, extra_lines=()
) -> IssuedInvoice:
    started = time.perf_counter()
    sub = tx.one(Q["subscription_for_invoice"], subscription_id=subscription_id)
    if sub is None:
        raise errors.NotFound(f"no such subscription {subscription_id}")
    lines = [Line("subscription", f"{sub['plan_name']} ({sub['plan_code']})", 1, sub["amount"], sub["amount"])]
    lines += list(extra_lines)
    total = total_of(lines)
    invoice_id = tx.scalar(
        Q["insert_invoice"],
        account_id=sub["account_id"],
        subscription_id=sub["subscription_id"],
        currency=sub["currency"],
        total=total,
        period_start=period_start,
        period_end=period_end,
    )
    if invoice_id is None:
        return IssuedInvoice(None, total, lines)
    for position, line in enumerate(lines):
        tx.run(
            Q["insert_line"],
            invoice_id=invoice_id,
            kind=line.kind,
            description=line.description,
            metric=line.metric,
            quantity=line.quantity,
            unit_amount=line.unit_amount,
            amount=line.amount,
            currency=sub["currency"],
            period_start=line.period_start or period_start,
            period_end=line.period_end or period_end,
            position=position,
        )
    ledger.post(
        tx,
        account_id=sub["account_id"],
        entry_type="charge",
        amount=total,
        currency=sub["currency"],
        idempotency_key=charge_key(sub["account_id"], period_start),
        invoice_id=invoice_id,
        period_start=period_start,
        description=f"Invoice for {period_start:%Y-%m-%d} to {period_end:%Y-%m-%d}",
    )
    plan_id = str(sub["plan_id"])
    emit_metric("invoice_generation_time", (time.perf_counter() - started) * 1000, "Milliseconds", TenantId=tenant_id)
    emit_metric("invoice_amount", total, "None", TenantId=tenant_id, PlanId=plan_id)
    return IssuedInvoice(str(invoice_id), total, lines)


def on_subscription_created(event: dict) -> bool:
    """generate-invoice consumer: the first invoice for the new subscription's period, then its payment.

    The invoice, its charge and a pending payment intent commit under the event's
    claim; the payment is settled afterwards. A redelivery after a timeout finds
    the claim done and settles the pending intent with the same gateway key. A
    subscription canceled (or an account deactivated) before the event arrives
    is not invoiced.
    """
    from chalicelib import idempotency
    from chalicelib.billing import calendar, collection

    def work(tx):
        account = tx.one(collection.Q["lock_account"], id=event["accountId"])
        status = tx.scalar(Q["subscription_status"], subscription_id=event["subscriptionId"])
        if account is None or account["status"] == "INACTIVE" or status not in ("active", "past_due"):
            return
        issued = issue_for_period(
            tx,
            event["tenantId"],
            event["subscriptionId"],
            _timestamp(event["periodStart"]),
            _timestamp(event["periodEnd"]),
        )
        if issued.invoice_id is not None and account["status"] == "ACTIVE":
            collection.open_intent(tx, event["accountId"], issued.invoice_id, issued.total, event["currency"])

    done = idempotency.consume_once(event["tenantId"], "generate-invoice", event["eventId"], work)
    settled = collection.settle_pending(event["tenantId"], event["accountId"], calendar.utcnow())
    return done or settled is not None


def _timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
