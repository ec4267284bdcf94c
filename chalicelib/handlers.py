"""What each queue does with each domain event: the consumers' handler tables, in one place.

app.py's SQS handlers pass their records to ``consumers.process_batch`` with one of
these tables. Every handler is idempotent: one that writes claims ``{consumer}:{eventId}``
in the transaction of its write (``idempotency.consume_once``); settling a payment claims
the attempt and calls the gateway under the attempt's own key, so a redelivery has no
further effect. An unresolved payment fails the record, which SQS redelivers.
"""

import logging

from chalicelib import audit, errors, events, idempotency, notifications, outbox
from chalicelib.billing import calendar, collection, engine

log = logging.getLogger("billing.handlers")


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


def _email(event: dict, recipient, build) -> bool:
    """send-notification: one email per event (claim, send, mark done): ``recipient(tx)`` reads who and
    what, ``build(recipient)`` writes it."""
    return idempotency.consume_with_side_effect(
        event["tenantId"],
        "send-notification",
        event["eventId"],
        recipient,
        lambda who: notifications.send(who, build(who)),
    )


def _about_subscription(build):
    return lambda event: _email(event, lambda tx: notifications.recipient_of(tx, event["subscriptionId"]), build)


def _about_invoice(build):
    def handle(event: dict) -> bool:
        tenant_id, invoice_id = event["tenantId"], event["invoiceId"]
        read = lambda tx: notifications.invoice_recipient(tx, tenant_id, invoice_id, calendar.utcnow())  # noqa: E731
        return _email(event, read, build)

    return handle


def email_account_inactive(event: dict) -> bool:
    read = lambda tx: notifications.account_recipient(tx, event["accountId"])  # noqa: E731
    return _email(event, read, notifications.account_inactive_email)


def email_endpoint_disabled(event: dict) -> bool:
    return _email(event, notifications.tenant_admins, lambda who: notifications.endpoint_disabled_email(who, event))


def invite_first_admin(event: dict) -> bool:
    """send-notification: a new tenant's first ADMIN invited to the user pool (Cognito emails them); the
    request that made the tenant usually did it already, and a redelivery finds the user and keeps it."""
    from chalicelib import onboarding

    try:
        onboarding.invite_admin(event["createdTenantId"], event["adminEmail"])
    except errors.Conflict:  # the email signs in to another tenant: no retry changes that
        log.error("tenant %s: its first admin's email belongs to another tenant", event["createdTenantId"])
    return True


def record_audit(event: dict) -> bool:
    """audit-log: one audit row per domain event, whatever the redeliveries."""
    keys = ("creditNoteId", "refundId", "invoiceId", "subscriptionId", "accountId", "endpointId", "createdTenantId")
    entity_id = next((event[k] for k in keys if event.get(k)), None)  # None: a usage batch's rejection

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
    "subscription.created": _about_subscription(notifications.subscription_created_email),
    "subscription.trial_will_end": _about_subscription(notifications.trial_ending_email),
    "invoice.finalized": _about_invoice(notifications.invoice_finalized_email),
    "invoice.payment_failed": _about_invoice(notifications.payment_failed_email),
    "invoice.payment_action_required": _about_invoice(notifications.payment_action_email),
    "account.inactive": email_account_inactive,
    "webhook_endpoint.disabled": email_endpoint_disabled,
    "tenant.created": invite_first_admin,
}
AUDIT_LOG = {event_type: record_audit for event_type in events.KNOWN_TYPES}


def deliver_to_endpoints(event: dict) -> bool:
    """webhooks: the event's deliveries to the tenant's endpoints (made once) and their lanes kicked."""
    from chalicelib import webhook_delivery  # the delivery functions' import, not the API's

    return webhook_delivery.fan_out(event)


WEBHOOKS = {event_type: deliver_to_endpoints for event_type in events.KNOWN_TYPES}

# The queues subscribed to the events topic, each receiving only the types its table handles (its SNS
# filter policy on the ``eventType`` message attribute); a table of every type needs no filter. Queues
# not named here are fed otherwise (rebill: the scheduler; webhook-deliveries: the webhooks consumer).
TOPIC_QUEUES = {
    "generate-invoice": GENERATE_INVOICE,
    "send-notification": SEND_NOTIFICATION,
    "audit-log": AUDIT_LOG,
    "webhooks": WEBHOOKS,
}


def filter_policy(queue: str) -> dict | None:
    """The SNS subscription filter policy of a topic queue (by its name without the prefix); None: every type."""
    types = set(TOPIC_QUEUES[queue])
    return None if types >= set(events.KNOWN_TYPES) else {"eventType": sorted(types)}
