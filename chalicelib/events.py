"""Messages on the wire: the domain-event envelope consumers receive, the rebill queue's
messages, and how a bad one is refused.

An event is one JSON object with ``eventId`` (the outbox row's id: stable across
re-publishes), ``eventType``, ``tenantId``, the type's own fields and ``object`` (the
changed object as the API returns it, which is all tenants see: ``public``). Each known
type has a schema file ``schemas/event_<type>.json``; a message that is not JSON,
names an unknown type or fails its schema is a PoisonMessage.
"""

import json
import uuid

from chalicelib import validation

KNOWN_TYPES = (
    "subscription.created",
    "subscription.canceled",
    "subscription.updated",
    "subscription.paused",
    "subscription.resumed",
    "subscription.trial_will_end",
    "invoice.created",
    "invoice.finalized",
    "invoice.paid",
    "invoice.voided",
    "invoice.marked_uncollectible",
    "invoice.payment_action_required",
    "invoice.payment_failed",
    "credit_note.created",
    "account.created",
    "account.past_due",
    "account.inactive",
    "account.reactivated",
    "refund.succeeded",
    "refund.failed",
    "dispute.created",
    "dispute.closed",
    "dispute.funds_withdrawn",
    "dispute.funds_reinstated",
    "usage.rejected",
    "webhook_endpoint.disabled",
    "tenant.created",
)
# The public shape's version: a change that is not additive (a field removed or retyped) is a new version.
VERSION = 1


class PoisonMessage(Exception):
    """A message no retry can fix; it goes to the DLQ after maxReceiveCount."""


def public(event_id, event_type: str, payload: dict, created) -> dict:
    """An event as tenants see it (GET /v1/notifications, webhooks): Stripe's shape, ``data.object`` being
    the changed object as the API returned it when the change was made."""
    return {
        "id": str(event_id),
        "object": "event",
        "type": event_type,
        "version": VERSION,
        "created": created,
        "data": {"object": payload.get("object")},
    }


def schema_name(event_type: str) -> str:
    return "event_" + event_type.replace(".", "_")


def parse(body: str) -> dict:
    try:
        event = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise PoisonMessage(f"not JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise PoisonMessage("not a JSON object")
    event_type = event.get("eventType")
    if event_type not in KNOWN_TYPES:
        raise PoisonMessage(f"unknown eventType {event_type!r}")
    try:
        validation.validate(schema_name(event_type), event)
        uuid.UUID(event["tenantId"])
        uuid.UUID(event["eventId"])
    except Exception as exc:  # noqa: BLE001 - any failure here means the message itself is bad
        details = getattr(exc, "details", None) or str(exc)
        raise PoisonMessage(f"{event_type} fails its schema: {details}") from exc
    return event


REBILL_KINDS = ("renewal", "retry", "settle")
# A step of the daily run's selection (chalicelib/billing/rebill.py), on the same queue as the accounts.
REBILL_SELECT = "select"


def parse_rebill(body: str) -> dict:
    """A rebill queue message: an account's ``{tenantId, accountId, kind, dueAt}``, ``dueAt`` as an aware
    datetime, or a selection step ``{kind: "select", runId, chain, step}``."""
    from datetime import datetime

    try:
        message = json.loads(body)
        if message["kind"] == REBILL_SELECT:
            return _selection_step(message)
        if message["kind"] not in REBILL_KINDS:
            raise ValueError(f"unknown kind {message['kind']!r}")
        due_at = datetime.fromisoformat(message["dueAt"].replace("Z", "+00:00"))
        if due_at.tzinfo is None:
            raise ValueError("timestamp without offset")
        message["dueAt"] = due_at
        for key in ("tenantId", "accountId"):
            uuid.UUID(message[key])
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise PoisonMessage(f"not a rebill message: {exc}") from exc
    return message


def _selection_step(message: dict) -> dict:
    uuid.UUID(message["runId"])
    for key in ("chain", "step"):
        value = message[key]
        if type(value) is not int or not 0 <= value < 2**31:  # noqa: E721 - a bool is not a step number
            raise ValueError(f"{key} must be a whole number from 0")
    return {"kind": REBILL_SELECT, "runId": message["runId"], "chain": message["chain"], "step": message["step"]}
