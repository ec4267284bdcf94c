"""Stripe's webhooks for one tenant: verified, and what each event means, in any order.

``verify`` checks the raw body with the tenant's webhook secret (the SDK's signature check,
5-minute tolerance): a bad signature, or a tenant with no Stripe connected, is
``invalid_signature`` and nothing is stored. The caller (``handlers.stripe_webhook``)
processes each verified event once, under its Stripe id in ``processed_events`` (consumer
``stripe``), in one transaction with what ``apply`` writes. Every write it makes is guarded
by the state it moves (an attempt still pending or waiting, a refund still pending, a ledger
key not yet posted, a card older than this event's), so events arriving late, early or twice
change nothing twice. Types we do not handle, and objects that are not ours (a charge the
tenant made outside this platform), are acknowledged and ignored.
"""

import logging
import uuid

from chalicelib import errors
from chalicelib.billing import (
    collection,
    disputes,
    gateway_credentials,
    gateways,
    payment_methods,
    payments,
    refunds,
    tenants,
)
from chalicelib.db import transaction

log = logging.getLogger("billing.stripe_events")


def verify(tenant_id: str, payload: bytes, signature: str | None) -> dict:
    """The Stripe event in a webhook's raw body, verified with the tenant's webhook secret;
    ``invalid_signature`` (400) for a bad signature or a tenant with no Stripe connected."""
    known = _is_uuid(tenant_id) and _exists(tenant_id)
    credentials = gateway_credentials.get_for_request(tenant_id) if known else None
    if credentials is None:
        raise errors.InvalidRequest("the webhook signature does not verify", code="invalid_signature")
    from chalicelib.billing import stripe_gateway

    try:
        return stripe_gateway.verify_event(payload, signature, credentials.webhook_secret)
    except ValueError as exc:
        raise errors.InvalidRequest("the webhook signature does not verify", code="invalid_signature") from exc


def _exists(tenant_id: str) -> bool:
    """A tenant we know (one indexed read): an unknown id in the URL costs no Secrets Manager call."""
    with transaction(tenant_id=tenant_id) as tx:
        return tenants.exists(tx)


def handles(event: dict) -> bool:
    return event.get("type") in HANDLERS


def prepare(tenant_id: str, event: dict):
    """What the event's handler needs from Stripe before its transaction opens (a card's details,
    with the event's time: the newer of two cards is the one Stripe confirmed last)."""
    found = _prepare(tenant_id, event["type"], event["data"]["object"])
    return {**found, "at": int(event.get("created") or 0)} if found else None


def apply(tx, tenant_id: str, event: dict, prepared, now) -> None:
    """Write what a verified event means, in ``tx`` (the caller records the event processed in it)."""
    HANDLERS[event["type"]](tx, tenant_id, event["data"]["object"], prepared, now)


def _prepare(tenant_id: str, event_type: str, obj: dict):
    """What a handler needs from Stripe before its transaction opens (a card's details)."""
    if event_type == "setup_intent.succeeded" and obj.get("payment_method"):
        method = obj["payment_method"]
        method_id = method["id"] if isinstance(method, dict) else method
        return gateways.stripe_of(tenant_id).payment_method(method_id)  # 503 while Stripe is down: redelivered
    return None


def _attempt(tx, tenant_id: str, intent: dict):
    """Our attempt behind a PaymentIntent, or None when the intent is not ours."""
    metadata = intent.get("metadata") or {}
    if metadata.get("tenant_id") not in (None, tenant_id):
        return None
    attempt_id = metadata.get("attempt_id")
    attempt_id = attempt_id if attempt_id and _is_uuid(attempt_id) else None
    return collection.attempt_at_gateway(tx, attempt_id, intent.get("id"))


def payment_intent(tx, tenant_id, intent, _prepared, now) -> None:
    """What a PaymentIntent now is (succeeded, failed, waiting for the customer), onto our attempt."""
    attempt = _attempt(tx, tenant_id, intent)
    if attempt is None:
        return
    from chalicelib.billing import stripe_gateway

    try:
        result = stripe_gateway.result_of(intent)
    except payments.GatewayTimeout:
        return  # processing: its final word comes in a later event
    collection.record_answer(tx, attempt, result, now)


def setup_succeeded(tx, _tenant_id, setup_intent, prepared, _now) -> None:
    if prepared and setup_intent.get("customer"):
        method = {k: v for k, v in prepared.items() if k != "at"}
        payment_methods.set_default(tx, setup_intent["customer"], method, prepared["at"])


def refund_changed(tx, tenant_id, refund, _prepared, _now) -> None:
    """A refund Stripe settled (a timeout, or Stripe's own ``pending``, left ours pending), or one that
    failed after it succeeded."""
    metadata = refund.get("metadata") or {}
    if metadata.get("tenant_id") != tenant_id or not _is_uuid(metadata.get("refund_id") or ""):
        return  # not ours
    from chalicelib.billing import stripe_gateway

    refunds.record_answer(tx, metadata["refund_id"], stripe_gateway.refund_result(refund))


def charge_refunded(tx, tenant_id, charge, prepared, now) -> None:
    """Older API versions list the charge's refunds in it; newer ones send ``refund.*`` events."""
    for refund in (charge.get("refunds") or {}).get("data") or []:
        refund_changed(tx, tenant_id, refund, prepared, now)


def _dispute_funds(funds: str):
    """Money a dispute took (``withdrawn``) or gave back (``reinstated``); an inquiry moves none."""

    def handle(tx, tenant_id, dispute, _prepared, _now) -> None:
        attempt = _attempt(tx, tenant_id, {"id": dispute.get("payment_intent")})
        if attempt is None:
            return
        disputes.funds_moved(tx, attempt, {**dispute, "funds": funds, "amount": _our_amount(dispute)})

    return handle


def _dispute_noted(closed: bool):
    """A dispute opened or closed: an audit row and an event (the money moves with the funds events)."""

    def handle(tx, tenant_id, dispute, _prepared, _now) -> None:
        attempt = _attempt(tx, tenant_id, {"id": dispute.get("payment_intent")})
        if attempt is not None:
            disputes.noted(tx, attempt, {**dispute, "amount": _our_amount(dispute)}, closed=closed)

    return handle


def _our_amount(dispute: dict) -> int:
    from chalicelib.billing import stripe_gateway

    return stripe_gateway.from_stripe(dispute["amount"], dispute["currency"])


HANDLERS = {
    "payment_intent.succeeded": payment_intent,
    "payment_intent.payment_failed": payment_intent,
    "payment_intent.requires_action": payment_intent,
    "setup_intent.succeeded": setup_succeeded,
    "refund.created": refund_changed,
    "refund.updated": refund_changed,
    "refund.failed": refund_changed,
    "charge.refunded": charge_refunded,
    "charge.dispute.created": _dispute_noted(closed=False),
    "charge.dispute.closed": _dispute_noted(closed=True),
    "charge.dispute.funds_withdrawn": _dispute_funds("withdrawn"),
    "charge.dispute.funds_reinstated": _dispute_funds("reinstated"),
}


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True
