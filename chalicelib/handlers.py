"""What each queue does with each domain event: the consumers' handler tables, in one place.

app.py's SQS handlers pass their records to ``consumers.process_batch`` with one of
these tables. Every handler is idempotent: one that writes claims ``{consumer}:{eventId}``
in the transaction of its write (``idempotency.consume_once``); settling a payment claims
the attempt and calls the gateway under the attempt's own key, so a redelivery has no
further effect. An unresolved payment fails the record, which SQS redelivers.
"""

from chalicelib import audit, events, idempotency, notifications
from chalicelib.billing import calendar, collection, engine


def invoice_new_subscription(event: dict) -> bool:
    """generate-invoice: the new subscription's first invoice, then its payment.

    The invoice, its charge and a pending payment intent commit under the event's
    claim; the payment is settled afterwards. A redelivery after a timeout finds the
    claim done and settles the pending intent with the same gateway key.
    """
    tenant_id = event["tenantId"]
    done = idempotency.consume_once(
        tenant_id,
        "generate-invoice",
        event["eventId"],
        lambda tx: engine.bill_first_period(tx, tenant_id, event["subscriptionId"]),
    )
    settled = settle_account(event)
    return done or settled


def settle_account(event: dict) -> bool:
    """generate-invoice: collect what the event's change invoiced (a new subscription's first invoice,
    a canceled one's final invoice, a change invoiced now).
    Settling is idempotent: one settler per attempt, the same key."""
    outcome = collection.settle_pending(event["tenantId"], event["accountId"], calendar.utcnow())
    return collection.resolved(outcome) is not None


def email_new_subscription(event: dict) -> bool:
    """send-notification: the customer's email, once per event (claim, send, mark done)."""
    return idempotency.consume_with_side_effect(
        event["tenantId"],
        "send-notification",
        event["eventId"],
        lambda tx: notifications.recipient_of(tx, event["subscriptionId"]),
        notifications.send_subscription_created,
    )


def record_audit(event: dict) -> bool:
    """audit-log: one audit row per domain event, whatever the redeliveries."""
    entity_id = next(event[k] for k in ("creditNoteId", "invoiceId", "subscriptionId", "accountId") if event.get(k))

    def work(tx):
        audit.record(
            tx, "system:events", event["eventType"], "event", entity_id, {"eventId": event["eventId"], **event}
        )

    return idempotency.consume_once(event["tenantId"], "audit-log", event["eventId"], work)


GENERATE_INVOICE = {
    "subscription.created": invoice_new_subscription,
    "subscription.canceled": settle_account,
    "subscription.updated": settle_account,
}
SEND_NOTIFICATION = {"subscription.created": email_new_subscription}
AUDIT_LOG = {event_type: record_audit for event_type in events.KNOWN_TYPES}
