"""SQS batch handling shared by every consumer: parse, dispatch, report partial failures.

Each record is parsed into a domain event (a PoisonMessage is logged with its
reason and fails), handed to the consumer, and any failure is reported as a
``batchItemFailures`` entry for that record alone, so the other records of the
batch are not redelivered. Where the event-source mapping does not report batch
item failures (SQS_REPORT_BATCH_ITEM_FAILURES off), a batch with any failure
raises instead: the whole batch is retried, which idempotent consumers absorb,
rather than Lambda deleting the failed messages.
"""

import logging

from chalicelib import events, observability
from chalicelib.config import get_settings

log = logging.getLogger("billing.consumers")


class BatchFailed(Exception):
    pass


def dispatch(handlers: dict):
    """A record handler for domain events: ``handlers[eventType](event) -> bool``.

    A known event type this consumer has no handler for is acknowledged and skipped.
    """

    def handle_body(body: str) -> bool:
        event = events.parse(body)
        observability.bind(tenant_id=event["tenantId"], event_id=event["eventId"])
        handle = handlers.get(event["eventType"])
        return handle(event) if handle else False

    return handle_body


def process_batch(records, consumer: str, handle_body) -> dict:
    """``handle_body(body) -> bool`` for each record; returns the SQS partial-batch response.

    The batch's metrics are one EMF document, written when it ends (``observability.metrics_batch``).
    """
    failures = []
    with observability.metrics_batch():
        for record in records:
            if not _handled(record, consumer, handle_body):
                failures.append(record.get("messageId", ""))
        return respond(consumer, failures, len(records))


def _handled(record: dict, consumer: str, handle_body) -> bool:
    """False when the record failed (logged): it is reported, retried and then dead-lettered."""
    message_id = record.get("messageId", "")
    receive_count = record.get("attributes", {}).get("ApproximateReceiveCount")
    try:
        done = handle_body(record.get("body", ""))
        log.info("%s %s message %s", consumer, "processed" if done else "skipped", message_id)
        return True
    except events.PoisonMessage as exc:
        log.error("%s: poison message %s (receive %s): %s", consumer, message_id, receive_count, exc)
    except Exception:  # noqa: BLE001 - reported per record; the queue retries and then dead-letters it
        log.exception("%s: message %s failed (receive %s)", consumer, message_id, receive_count)
    return False


def respond(consumer: str, failures: list[str], total: int) -> dict:
    """The partial-batch response, or a whole-batch failure where the mapping cannot report items."""
    if failures and not get_settings().sqs_report_batch_item_failures:
        raise BatchFailed(f"{consumer}: {len(failures)} of {total} records failed")
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failures]}


def records_of(event) -> list[dict]:
    """The raw records of a Chalice SQSEvent (or of a plain Lambda event dict)."""
    raw = event.to_dict() if hasattr(event, "to_dict") else event
    return raw.get("Records", [])
