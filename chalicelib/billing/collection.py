"""Collecting an invoice, and the dunning state machine that follows a decline.

Runs inside the caller's transaction with the account row locked. The gateway
key is ``pay:{subscription}:{period_start}:{attempt}``, where ``attempt`` counts
this invoice's recorded attempts. It is built from what the invoice is for, not
from its row id: a rolled-back attempt re-creates the invoice under a new id,
and the retry must still present the same key, so the gateway cannot charge
twice; a GatewayTimeout propagates and rolls everything back, and
the retry learns the real outcome under that same key.

Dunning: a decline sets the account PENDING and schedules a retry after
DUNNING_RETRY_DAYS[n] days (1, 3, 7); a decline after the last retry makes it
INACTIVE, stops billing and marks its open invoices uncollectible. Any success
returns it to ACTIVE. Every transition is an audit row; every attempt a ledger
entry (a payment is negative, a failure is recorded at zero).
"""

from datetime import datetime, timedelta

from chalicelib import audit
from chalicelib.billing import ledger, payments
from chalicelib.config import get_settings
from chalicelib.db.queries import load
from chalicelib.observability import emit_metric

Q = load("rebill")


def collect(tx, tenant_id: str, account: dict, invoice_id, amount: int, currency: str, now: datetime) -> str:
    """Charge one open invoice; returns "succeeded", "declined" or "inactive"."""
    if amount == 0:
        tx.run(Q["mark_paid"], id=invoice_id)
        return "succeeded"
    attempt = tx.scalar(Q["attempts_for_invoice"], invoice_id=invoice_id)
    key = f"pay:{tx.scalar(Q['payment_key_basis'], invoice_id=invoice_id)}:{attempt}"
    result = payments.get_gateway().charge(
        account_id=account["id"], amount=amount, currency=currency, idempotency_key=key
    )
    tx.run(
        Q["record_attempt"],
        account_id=account["id"],
        invoice_id=invoice_id,
        attempt=attempt,
        key=key,
        amount=amount,
        currency=currency,
        outcome=result.outcome,
        reference=result.reference,
        decline_code=result.decline_code,
    )
    if result.succeeded:
        ledger.post(
            tx,
            account_id=account["id"],
            entry_type="payment",
            amount=-amount,
            currency=currency,
            idempotency_key=f"payment:{invoice_id}:{attempt}",
            invoice_id=invoice_id,
            description="Payment",
            metadata={"reference": result.reference},
        )
        tx.run(Q["mark_paid"], id=invoice_id)
        if account["status"] != "ACTIVE" or account["failure_count"]:
            _transition(tx, tenant_id, account, "ACTIVE", 0, None, "active")
        return "succeeded"
    ledger.post(
        tx,
        account_id=account["id"],
        entry_type="payment_failed",
        amount=0,
        currency=currency,
        idempotency_key=f"payment_failed:{invoice_id}:{attempt}",
        invoice_id=invoice_id,
        description=f"Payment declined ({result.decline_code})",
    )
    emit_metric("payment_declines", 1, TenantId=tenant_id)
    failures = account["failure_count"] + 1
    schedule = get_settings().dunning_retry_days
    if failures > len(schedule):
        _transition(tx, tenant_id, account, "INACTIVE", failures, None, "unpaid")
        tx.run(Q["mark_uncollectible"], account_id=account["id"])
        return "inactive"
    retry_at = now + timedelta(days=schedule[failures - 1])
    _transition(tx, tenant_id, account, "PENDING", failures, retry_at, "past_due")
    return "declined"


def _transition(tx, tenant_id, account, status, failures, retry_at, subscription_status) -> None:
    tx.run(Q["set_dunning"], id=account["id"], status=status, failure_count=failures, retry_at=retry_at)
    tx.run(Q["set_subscription_status"], account_id=account["id"], status=subscription_status)
    audit.record(
        tx,
        "system:dunning",
        f"account.{status.lower()}",
        "account",
        account["id"],
        {"from": account["status"], "failure_count": failures, "retry_at": retry_at},
    )
    account.update(status=status, failure_count=failures, payment_retry_at=retry_at)
