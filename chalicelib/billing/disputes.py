"""Disputes (chargebacks) the gateway reports: the money they take and give back, in the ledger.

A dispute withdraws a payment: a ``dispute`` entry (+amount: the customer owes it again) and
an audit row. Closed and won, the money comes back: ``dispute_won`` (-amount). Lost, it
stays withdrawn (an audit row says so). The invoice stays paid, as at Stripe. Each entry's
key is the dispute's id, so a redelivered or reordered event posts nothing twice: a
``closed`` that arrives before its ``created`` posts the withdrawal first.
"""

from chalicelib import audit
from chalicelib.billing import ledger


def opened(tx, attempt, dispute: dict) -> None:
    """The payment ``attempt`` is disputed."""
    _withdraw(tx, attempt, dispute)
    audit.record(tx, "system:gateway", "dispute.created", "payment_attempt", attempt.attempt_id, _facts(dispute))


def closed(tx, attempt, dispute: dict) -> None:
    """The dispute is decided: ``won`` gives the money back, anything else keeps it withdrawn."""
    _withdraw(tx, attempt, dispute)
    if dispute["status"] == "won":
        ledger.post(
            tx,
            account_id=attempt.account_id,
            entry_type="dispute_won",
            amount=-dispute["amount"],
            currency=dispute["currency"].upper(),
            idempotency_key=f"dispute_won:{dispute['id']}",
            invoice_id=attempt.invoice_id,
            description="Dispute won: payment reinstated",
            metadata=_facts(dispute),
        )
    audit.record(
        tx, "system:gateway", f"dispute.{dispute['status']}", "payment_attempt", attempt.attempt_id, _facts(dispute)
    )


def _withdraw(tx, attempt, dispute: dict) -> None:
    ledger.post(
        tx,
        account_id=attempt.account_id,
        entry_type="dispute",
        amount=dispute["amount"],
        currency=dispute["currency"].upper(),
        idempotency_key=f"dispute:{dispute['id']}",
        invoice_id=attempt.invoice_id,
        description=f"Payment disputed ({dispute.get('reason') or 'unknown reason'})",
        metadata=_facts(dispute),
    )


def _facts(dispute: dict) -> dict:
    return {k: dispute.get(k) for k in ("id", "status", "reason", "amount", "currency", "payment_intent")}
