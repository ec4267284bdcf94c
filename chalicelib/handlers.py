"""What each queue does with each domain event: the consumers' handler tables, in one place.

app.py's SQS handlers pass their records to ``consumers.process_batch`` with one of
these tables. Every handler is idempotent: one that writes claims ``{consumer}:{eventId}``
in the transaction of its write (``idempotency.consume_once``); settling a payment claims
the attempt and calls the gateway under the attempt's own key, so a redelivery has no
further effect. An unresolved payment fails the record, which SQS redelivers.
"""

from chalicelib import audit, events, idempotency, notifications, outbox
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
    a canceled one's final invoice, a change invoiced now), and publish what collecting it said (a
    payment that needs the customer) at once rather than at the next outbox sweep.
    Settling is idempotent: one settler per attempt, the same key."""
    outcome = collection.settle_pending(event["tenantId"], event["accountId"], calendar.utcnow())
    outbox.flush_quietly(event["tenantId"])
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


def email_payment_action_required(event: dict) -> bool:
    """send-notification: the customer is asked to confirm a payment, with the invoice's hosted link."""
    tenant_id = event["tenantId"]
    return idempotency.consume_with_side_effect(
        tenant_id,
        "send-notification",
        event["eventId"],
        lambda tx: notifications.invoice_recipient(tx, tenant_id, event["invoiceId"], calendar.utcnow()),
        notifications.send_payment_action_required,
    )


def record_audit(event: dict) -> bool:
    """audit-log: one audit row per domain event, whatever the redeliveries."""
    entity_id = next(event[k] for k in ("creditNoteId", "invoiceId", "subscriptionId", "accountId") if event.get(k))

    def work(tx):
        audit.record(
            tx, "system:events", event["eventType"], "event", entity_id, {"eventId": event["eventId"], **event}
        )

    return idempotency.consume_once(event["tenantId"], "audit-log", event["eventId"], work)


def stripe_webhook(tenant_id: str, payload: bytes, signature: str | None) -> dict:
    """A Stripe webhook delivery: verified, then processed once (its Stripe event id claimed in the
    transaction of its writes); a type we do not handle is acknowledged and ignored."""
    from chalicelib.billing import stripe_events  # only Stripe's webhooks pay for importing it

    event = stripe_events.verify(tenant_id, payload, signature)
    if not stripe_events.handles(event):
        return {"received": True, "handled": False}
    prepared = stripe_events.prepare(tenant_id, event)
    now = calendar.utcnow()
    work = lambda tx: stripe_events.apply(tx, tenant_id, event, prepared, now)  # noqa: E731
    handled = idempotency.consume_once(tenant_id, "stripe", event["id"], work)
    outbox.flush_quietly(tenant_id)  # what it changed (an invoice paid, a payment waiting) goes out now
    return {"received": True, "handled": handled}


GENERATE_INVOICE = {
    "subscription.created": invoice_new_subscription,
    "subscription.canceled": settle_account,
    "subscription.updated": settle_account,
}
SEND_NOTIFICATION = {
    "subscription.created": email_new_subscription,
    "invoice.payment_action_required": email_payment_action_required,
}
AUDIT_LOG = {event_type: record_audit for event_type in events.KNOWN_TYPES}
