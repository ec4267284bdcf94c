"""Disputes (chargebacks) the gateway reports: the money they take and give back, in the ledger.

Money moves with Stripe's funds events, never with the dispute's opening: an inquiry
(``warning_needs_response``) takes nothing. ``charge.dispute.funds_withdrawn`` posts a
``dispute`` entry (+amount: the customer owes it again); ``funds_reinstated`` (a dispute won)
posts ``dispute_won`` (-amount). The invoice stays paid, as at Stripe. Opening and closing
are audit rows. Each entry's key is the dispute's id and the direction, so a redelivered or
reordered event posts nothing twice.
"""

from chalicelib import audit
from chalicelib.billing import ledger


def funds_moved(tx, attempt, dispute: dict) -> None:
    """Money the dispute took or gave back: ``dispute["funds"]`` is "withdrawn" or "reinstated",
    ``dispute["amount"]`` how much, in our minor units of the account's currency."""
    withdrawn = dispute["funds"] == "withdrawn"
    ledger.post(
        tx,
        account_id=attempt.account_id,
        entry_type="dispute" if withdrawn else "dispute_won",
        amount=dispute["amount"] if withdrawn else -dispute["amount"],
        currency=attempt.currency,
        idempotency_key=f"dispute_{dispute['funds']}:{dispute['id']}",
        invoice_id=attempt.invoice_id,
        description="Payment disputed: funds withdrawn" if withdrawn else "Dispute won: funds reinstated",
        metadata=_facts(dispute),
    )


def noted(tx, attempt, dispute: dict) -> None:
    """An audit row for a dispute's opening or decision."""
    audit.record(
        tx, "system:gateway", f"dispute.{dispute['status']}", "payment_attempt", attempt.attempt_id, _facts(dispute)
    )


def _facts(dispute: dict) -> dict:
    return {k: dispute.get(k) for k in ("id", "status", "reason", "amount", "payment_intent")}
