"""The transactional outbox: events are stored with the change and published to SNS after.

``add`` runs inside the business transaction. ``flush`` publishes a tenant's
unpublished events (each row locked while it is sent, so no two publishers send
the same row at once) and marks them; a failed publish is counted and left for
the next flush. ``sweep`` is the scheduled safety net that finds tenants with a
backlog through the one cross-tenant function the app role may call. A crash
between publish and mark re-sends the same event id, which consumers ignore.
"""

import json
import logging

from chalicelib import aws, encoding, errors, events
from chalicelib.config import get_settings
from chalicelib.db import paging, transaction
from chalicelib.db.queries import load

Q = load("outbox")
log = logging.getLogger("billing.outbox")


def add(tx, event_type: str, fields: dict, obj: dict) -> str:
    """Store one event in the caller's (tenant-scoped) transaction; returns its event id. ``obj`` is the
    changed object as the API returns it now (what tenants see of the event: ``events.public``)."""
    return str(tx.scalar(Q["add"], event_type=event_type, payload=encoding.dumps({**fields, "object": obj})))


def add_many(tx, events: list[tuple[str, dict]]) -> None:
    """Store ``(event_type, fields)`` events in one statement (a billing round's); each one's fields
    carry its ``object``, as ``add``'s."""
    if events:
        rows = [{"event_type": event_type, "payload": fields} for event_type, fields in events]
        tx.run(Q["add_many"], rows=encoding.dumps(rows))


def flush(tenant_id: str, limit: int = 25) -> int:
    """Publish this tenant's unpublished events, oldest first; returns how many went out."""
    topic = get_settings().events_topic_arn
    if not topic:
        log.warning("EVENTS_TOPIC_ARN is not set: events stay in the outbox")
        return 0
    sent = 0
    with transaction(tenant_id=tenant_id) as tx:
        for row in tx.all(Q["take_unpublished"], limit=limit):
            event = _envelope(tenant_id, row)
            try:
                aws.client("sns").publish(
                    TopicArn=topic,
                    Message=json.dumps(event),
                    MessageAttributes={
                        "eventType": {"DataType": "String", "StringValue": event["eventType"]},
                        "tenantId": {"DataType": "String", "StringValue": tenant_id},
                    },
                )
            except Exception as exc:  # noqa: BLE001 - any publish failure is retried by the next flush
                log.warning("publishing event %s failed: %s", row["id"], exc)
                tx.run(Q["mark_failed"], id=row["id"], error=str(exc)[:500])
                break  # keep order: later events wait for this one
            tx.run(Q["mark_published"], id=row["id"])
            sent += 1
    return sent


def flush_quietly(tenant_id: str) -> None:
    """After a request commits: publish now if we can; the sweeper covers any failure."""
    try:
        flush(tenant_id)
    except Exception:  # noqa: BLE001 - the change is committed; its event is safe in the outbox
        log.exception("outbox flush after commit failed; the sweeper will retry")


def sweep(older_than_s: int = 0, max_rows: int = 1000) -> int:
    """Publish every tenant's backlog older than ``older_than_s``; returns events sent."""
    with transaction() as tx:
        tenants = [
            str(row[0]) for row in tx.run(Q["tenants_with_backlog"], older_than_s=older_than_s, max_rows=max_rows)
        ]
    return sum(flush(tenant_id, limit=max_rows) for tenant_id in tenants)


def list_page(tx, page: paging.PageRequest, event_type: str | None = None) -> dict:
    """The tenant's events of the last 30 days, newest first, as tenants see them (``events.public``)."""
    paging.check_cursor(tx, Q["exists"], page, "event")
    rows = tx.all(Q["list"], type=event_type, id=None, after=page.starting_after, limit=page.limit + 1)
    return paging.page([_public(row) for row in rows], page, "/v1/notifications")


def get(tx, event_id: str) -> dict:
    row = tx.one(Q["list"], type=None, id=event_id, after=None, limit=1)
    if row is None:
        raise errors.NotFound("no such event")
    return _public(row)


def _public(row: dict) -> dict:
    return events.public(row["id"], row["event_type"], row["payload"], row["created_at"])


def _envelope(tenant_id: str, row: dict) -> dict:
    payload = dict(row["payload"])
    return {**payload, "eventId": str(row["id"]), "eventType": row["event_type"], "tenantId": tenant_id}
