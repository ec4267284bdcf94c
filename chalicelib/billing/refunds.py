"""Refunds: money a credit note sends back through the gateway, settled like a payment.

A refund is recorded ``pending`` with its own gateway key (``refund:{credit note}``) in the
credit note's transaction, and its ledger entry (``refund``, positive: money paid back out)
is posted with it, so the customer's balance never offers the same money twice. After
commit the refund is *claimed* (a lease, as payment attempts are), the gateway is called
with exactly that key and amount, and the answer is written once: ``succeeded``; or
``failed``, when a ``credit`` entry returns the amount to the customer's balance (the
credit note stands, as a credit). No answer (a timeout) leaves it pending; the scheduled
finalizer settles stale ones again with the same key, which can never refund twice.
"""

import logging
from dataclasses import dataclass
from datetime import datetime

from chalicelib import audit, outbox, tracing
from chalicelib.billing import gateways, ledger, payments
from chalicelib.config import get_settings
from chalicelib.db import transaction
from chalicelib.db.queries import load

Q = load("refunds")
log = logging.getLogger("billing.refunds")


@dataclass(frozen=True)
class Refund:
    id: str
    account_id: str
    credit_note_id: str
    key: str
    amount: int
    currency: str
    charge_reference: str | None
    age_s: int | None = None  # how long ago it was recorded (a gateway's keys expire)


def refundable(tx, invoice: dict) -> int:
    """What the gateway collected for the invoice, less what was (or is being) refunded of it."""
    return tx.scalar(Q["refundable"], invoice_id=invoice["id"], amount_paid=invoice["amount_paid"])


def record_pending(tx, invoice: dict, note: dict, amount: int) -> Refund:
    """A pending refund of the invoice's payment, and its ledger entry, in the credit note's transaction."""
    row = tx.one(
        Q["open"],
        invoice_id=invoice["id"],
        credit_note_id=note["id"],
        amount=amount,
        currency=invoice["currency"],
        key=f"refund:{note['id']}",
    )
    ledger.post(
        tx,
        account_id=row["account_id"],
        entry_type="refund",
        amount=amount,
        currency=invoice["currency"],
        idempotency_key=row["idempotency_key"],
        invoice_id=invoice["id"],
        credit_note_id=note["id"],
        description=f"Refund for credit note {note['number']}",
    )
    return _refund(row)


def settle_for_credit_note(tenant_id: str, credit_note_id: str, now: datetime) -> str | None:
    """Settle the credit note's refund if it is still pending; its outcome (None: nothing pending)."""
    with transaction(tenant_id=tenant_id) as tx:
        row = tx.one(Q["pending_of_credit_note"], credit_note_id=credit_note_id)
    return settle(tenant_id, _refund(row), now) if row else None


def settle(tenant_id: str, refund: Refund, now: datetime) -> str:
    """Send the refund to the gateway once and record the answer; ``succeeded``, ``failed``,
    ``timeout`` (still pending) or ``in_progress`` (someone else holds it)."""
    with transaction(tenant_id=tenant_id) as tx:
        if not tx.all(Q["claim"], id=refund.id, lease_s=get_settings().payment_claim_lease_s):
            return "in_progress"
    try:
        with tracing.subsegment("payment.refund", tenant_id=tenant_id):
            result = gateways.of(tenant_id).refund(
                account_id=refund.account_id,
                amount=refund.amount,
                currency=refund.currency,
                idempotency_key=refund.key,
                charge_reference=refund.charge_reference,
                metadata={"tenant_id": tenant_id, "refund_id": refund.id, "credit_note_id": refund.credit_note_id},
                sent_before_s=refund.age_s,
            )
    except payments.RetryableGatewayError as exc:
        gateways.note_unanswered(exc, f"refund {refund.id}")
        with transaction(tenant_id=tenant_id) as tx:
            tx.run(Q["release"], id=refund.id)
        return "timeout"
    with transaction(tenant_id=tenant_id) as tx:
        if result.outcome == "pending":  # taken; the gateway settles it later, by its webhook
            tx.run(Q["keep_reference"], id=refund.id, reference=result.reference)
            return "timeout"
        return _record(tx, refund, result)


def record_answer(tx, refund_id: str, result: payments.PaymentResult) -> str:
    """The gateway's later word on a refund (its webhook): written once, onto a refund still pending,
    or a failure after it succeeded (an expired card: the amount returns to the customer's balance)."""
    row = tx.one(Q["get"], id=refund_id)
    if row is None or result.outcome == "pending":
        return "in_progress"
    return _record(tx, _refund(row), result)


def _record(tx, refund: Refund, result: payments.PaymentResult) -> str:
    outcome = "succeeded" if result.succeeded else "failed"
    resolved = tx.one(Q["resolve"], id=refund.id, status=outcome, reference=result.reference, code=result.decline_code)
    if resolved is None:
        return "in_progress"
    fields = {"refundId": refund.id, "accountId": refund.account_id, "creditNoteId": refund.credit_note_id}
    outbox.add(tx, f"refund.{outcome}", {**fields, "amount": refund.amount, "currency": refund.currency}, resolved)
    if outcome == "failed":
        ledger.post(
            tx,
            account_id=refund.account_id,
            entry_type="credit",
            amount=-refund.amount,
            currency=refund.currency,
            idempotency_key=f"refund_failed:{refund.credit_note_id}",
            credit_note_id=refund.credit_note_id,
            description=f"Refund failed ({result.decline_code}): returned to the balance",
        )
    audit.record(tx, "system:refunds", f"refund.{outcome}", "refund", refund.id, {"amount": refund.amount})
    return outcome


def settle_stale(now: datetime, max_rows: int = 500) -> int:
    """Settle refunds a timeout or a crash left pending (across tenants); how many were tried."""
    with transaction() as tx:
        rows = tx.all(Q["stale"], max_rows=max_rows)
    for row in rows:
        try:
            with transaction(tenant_id=str(row["tenant_id"])) as tx:
                refund = _refund(tx.one(Q["get"], id=row["refund_id"]))
            settle(str(row["tenant_id"]), refund, now)
        except Exception:  # noqa: BLE001 - one refund's failure never stops the others; the next run retries it
            log.exception("refund %s not settled", row["refund_id"])
    return len(rows)


def _refund(row: dict) -> Refund:
    return Refund(
        id=str(row["id"]),
        account_id=str(row["account_id"]),
        credit_note_id=str(row["credit_note_id"]),
        key=row["idempotency_key"],
        amount=row["amount"],
        currency=row["currency"],
        charge_reference=row["charge_reference"],
        age_s=row.get("age_s"),
    )
