"""Disputes (chargebacks) the gateway reports: the money they take and give back, in the ledger.

Money moves with Stripe's funds events, never with the dispute's opening: an inquiry
(``warning_needs_response``) takes nothing. ``charge.dispute.funds_withdrawn`` posts a
``dispute`` entry (+amount: the customer owes it again); ``funds_reinstated`` (a dispute won)
posts ``dispute_won`` (-amount). The invoice stays paid, as at Stripe. Opening and closing
are audit rows. Each entry's key is the dispute's id and the direction, so a redelivered or
reordered event posts nothing twice.
"""

from chalicelib import audit, outbox
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
    _announce(tx, f"dispute.funds_{dispute['funds']}", attempt, dispute)


def noted(tx, attempt, dispute: dict, *, closed: bool) -> None:
    """A dispute's opening or decision: an audit row and its event (dispute.created, dispute.closed)."""
    audit.record(
        tx, "system:gateway", f"dispute.{dispute['status']}", "payment_attempt", attempt.attempt_id, _facts(dispute)
    )
    _announce(tx, "dispute.closed" if closed else "dispute.created", attempt, dispute)


def _announce(tx, event_type: str, attempt, dispute: dict) -> None:
    """The event tenants hear: the dispute as the gateway described it, with our account, invoice and currency."""
    obj = {"object": "dispute", **_facts(dispute), "currency": attempt.currency}
    obj.update(account_id=attempt.account_id, invoice_id=attempt.invoice_id, payment_attempt_id=attempt.attempt_id)
    fields = {"disputeId": dispute["id"], "accountId": attempt.account_id, "invoiceId": attempt.invoice_id}
    outbox.add(tx, event_type, fields, obj)


def _facts(dispute: dict) -> dict:
    return {k: dispute.get(k) for k in ("id", "status", "reason", "amount", "payment_intent")}
