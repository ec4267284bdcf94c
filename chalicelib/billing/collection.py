"""Collecting invoices through the gateway, and the dunning state machine after a decline.

Three steps, so money never moves without a record that says so:
1. ``open_intent`` (in the billing transaction): a ``pending`` payment attempt
   with its gateway key ``pay:{subscription}:{period_start}:{attempt}`` and the
   amount, committed together with the invoice and its ledger charge.
2. ``settle``: the gateway is called with exactly that key and amount, outside
   any transaction. A GatewayTimeout leaves the attempt pending.
3. In a new transaction, under the account lock, the outcome is written onto
   the attempt (once: a concurrent settler finds it resolved) with its ledger
   entry and the dunning transition.
``settle_pending`` resolves attempts a crash or a timeout left behind; the same
key makes the gateway answer with what really happened, never charge again.

Dunning: a decline makes the account PENDING and schedules a retry at the start
of the day DUNNING_RETRY_DAYS[n] days later (1, 3, 7), so the daily run finds it
that day; a decline after the last retry makes it INACTIVE, stops billing and
marks its open invoices uncollectible. The account returns to ACTIVE only when
no open invoice remains. Every transition is an audit row; every outcome a
ledger entry (a payment negative, a failure recorded at zero).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from chalicelib import audit, tracing
from chalicelib.billing import ledger, payments
from chalicelib.config import get_settings
from chalicelib.db import transaction
from chalicelib.db.queries import load
from chalicelib.observability import emit_metric

Q = load("rebill")


@dataclass(frozen=True)
class Intent:
    attempt_id: str
    account_id: str
    invoice_id: str
    key: str
    amount: int
    currency: str


def open_intent(tx, account_id, invoice_id, amount: int, currency: str) -> Intent | None:
    """Record a pending attempt for an open invoice; None when there is nothing to charge."""
    if amount == 0:
        tx.run(Q["mark_paid"], id=invoice_id)
        return None
    pending = tx.one(Q["pending_for_invoice"], invoice_id=invoice_id)
    if pending is not None:
        return _intent(pending)
    row = tx.one(Q["open_attempt"], account_id=account_id, invoice_id=invoice_id, amount=amount, currency=currency)
    return _intent(row)


def settle(tenant_id: str, intent: Intent, now: datetime) -> str:
    """Charge one intent and record the outcome: "succeeded", "declined" or "inactive"."""
    with tracing.subsegment("payment.charge", tenant_id=tenant_id):
        result = payments.get_gateway().charge(
            account_id=intent.account_id, amount=intent.amount, currency=intent.currency, idempotency_key=intent.key
        )
    with transaction(tenant_id=tenant_id) as tx:
        account = tx.one(Q["lock_account"], id=intent.account_id)
        recorded = tx.scalar(Q["lock_attempt"], id=intent.attempt_id)
        if recorded != "pending":  # settled meanwhile by a concurrent delivery
            return recorded
        tx.run(
            Q["resolve_attempt"],
            id=intent.attempt_id,
            outcome=result.outcome,
            reference=result.reference,
            decline_code=result.decline_code,
        )
        return _apply(tx, tenant_id, account, intent, result, now)


def settle_pending(tenant_id: str, account_id: str, now: datetime) -> str | None:
    """Resolve attempts a crash or timeout left pending; the last outcome, or None if there were none."""
    with transaction(tenant_id=tenant_id) as tx:
        intents = [_intent(row) for row in tx.all(Q["pending_for_account"], account_id=account_id)]
    outcome = None
    for intent in intents:
        outcome = settle(tenant_id, intent, now)
    return outcome


def collect_open(tenant_id: str, account_id: str, now: datetime) -> str:
    """A dunning retry: charge the account's open invoices oldest first, stopping at a decline."""
    outcome = "succeeded"
    while outcome == "succeeded":
        with transaction(tenant_id=tenant_id) as tx:
            tx.one(Q["lock_account"], id=account_id)
            invoice = tx.one(Q["oldest_open_invoice"], account_id=account_id)
            if invoice is None:
                _reactivate_if_clear(tx, tenant_id, account_id)
                return outcome
            intent = open_intent(tx, account_id, invoice["id"], invoice["amount_due"], invoice["currency"])
        if intent is not None:
            outcome = settle(tenant_id, intent, now)
    return outcome


def _apply(tx, tenant_id, account, intent: Intent, result, now: datetime) -> str:
    if result.succeeded:
        ledger.post(
            tx,
            account_id=intent.account_id,
            entry_type="payment",
            amount=-intent.amount,
            currency=intent.currency,
            idempotency_key=f"payment:{intent.key}",
            invoice_id=intent.invoice_id,
            description="Payment",
            metadata={"reference": result.reference},
        )
        tx.run(Q["mark_paid"], id=intent.invoice_id)
        _reactivate_if_clear(tx, tenant_id, intent.account_id, account)
        return "succeeded"
    ledger.post(
        tx,
        account_id=intent.account_id,
        entry_type="payment_failed",
        amount=0,
        currency=intent.currency,
        idempotency_key=f"payment_failed:{intent.key}",
        invoice_id=intent.invoice_id,
        description=f"Payment declined ({result.decline_code})",
    )
    emit_metric("payment_declines", 1, TenantId=tenant_id)
    failures = account["failure_count"] + 1
    schedule = get_settings().dunning_retry_days
    if failures > len(schedule):
        _transition(tx, account, "INACTIVE", failures, None, "unpaid")
        tx.run(Q["mark_uncollectible"], account_id=account["id"])
        return "inactive"
    day = (now + timedelta(days=schedule[failures - 1])).replace(hour=0, minute=0, second=0, microsecond=0)
    _transition(tx, account, "PENDING", failures, day, "past_due")
    return "declined"


def _reactivate_if_clear(tx, tenant_id, account_id, account=None) -> None:
    account = account or tx.one(Q["lock_account"], id=account_id)
    if account["status"] == "ACTIVE" and not account["failure_count"]:
        return
    if account["status"] == "INACTIVE" or tx.one(Q["oldest_open_invoice"], account_id=account_id):
        return
    _transition(tx, account, "ACTIVE", 0, None, "active")


def _transition(tx, account, status, failures, retry_at, subscription_status) -> None:
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


def _intent(row: dict) -> Intent:
    return Intent(
        attempt_id=str(row["id"]),
        account_id=str(row["account_id"]),
        invoice_id=str(row["invoice_id"]),
        key=row["idempotency_key"],
        amount=row["amount"],
        currency=row["currency"],
    )
