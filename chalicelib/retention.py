"""Retention: how long the platform keeps what it only needs for a while, and the purge that enforces it.

What is kept, and why that long (migration 0016 holds each table's floor in a policy):

- ``idempotency_keys``: until they expire, 24 hours after the claim (Stripe's window).
- ``processed_events`` (consumers' claims): 15 days; 14 is the longest message retention of any SQS
  queue in infra (the dead-letter queues'), past which no delivery of a message can come again.
- ``webhook_deliveries`` and their attempts, once delivered or failed: 30 days, as Stripe keeps them.
- ``outbox``: published events 30 days (GET /v1/notifications lists 30 days), after the deliveries that
  name them.
- ``usage_events``: an archive path. The hot table keeps its UNIQUE (tenant_id, event_id), the ingest's
  dedupe, which monthly partitions of it could not (a partitioned table's unique key must include the
  partition key: an event id would be unique per month only). Usage received and occurred more than
  35 days ago that no live subscription's current period and no draft still prices moves to
  ``usage_events_archive``, partitioned by the month it was archived in, and a month of the archive
  is dropped whole after 24 months (disputes come up to 540 days after a charge) with no DELETE and
  no vacuum. Nothing unbilled ever leaves the hot table: billing, hard caps and entitlements read it
  alone.

``run`` purges in rounds, one bounded batch per table per round (a short transaction of its own, rows
picked by ctid under a LIMIT), until nothing is due or its time budget is spent, so a backlog in one
table never starves another and no run holds a lock for long. Every purge is idempotent: a rerun, or
two runs at once, remove each row once. It runs at the end of the ``outbox_sweep`` schedule (every
minute) rather than in a function of its own: no new function, role, concurrency reservation or
database connection to budget for.
"""

import logging
import time
from dataclasses import dataclass

from chalicelib.db import transaction
from chalicelib.db.queries import load
from chalicelib.observability import emit_metric

Q = load("retention")
log = logging.getLogger("billing.retention")

DAY_S = 24 * 3600
LONGEST_SQS_RETENTION_S = 14 * DAY_S  # infra/modules/messaging/main.tf: message_retention_seconds, the most
BATCH_ROWS = 2000  # rows a batch looks at: a few tens of ms each (bench/retention.py)
RUN_BUDGET_S = 5.0  # of outbox_sweep's minute; the sweep's own work goes first
USAGE_ARCHIVE_MONTHS = 24


@dataclass(frozen=True)
class Purge:
    table: str
    keep_s: int | None  # None: the function knows (idempotency keys keep until they expire)


PURGES = (
    Purge("idempotency_keys", None),
    Purge("processed_events", LONGEST_SQS_RETENTION_S + DAY_S),
    Purge("webhook_deliveries", 30 * DAY_S),  # before the outbox rows they name
    Purge("outbox", 30 * DAY_S),
    Purge("usage_events", 35 * DAY_S),
)


def run(budget_s: float = RUN_BUDGET_S, batch_rows: int = BATCH_ROWS, clock=time.monotonic) -> dict[str, int]:
    """Purge what is due, a batch per table per round, until done or ``budget_s`` is spent; rows removed
    per table (``usage_events``: moved to the archive), and archive months dropped."""
    deadline = clock() + budget_s
    removed = {purge.table: 0 for purge in PURGES}
    removed["usage_archive_months"] = drop_expired_archive()
    due = list(PURGES)
    while due and clock() < deadline:
        for purge in list(due):
            purged, finished = purge_batch(purge, batch_rows)
            removed[purge.table] += purged
            if finished:
                due.remove(purge)
            if clock() >= deadline:
                break
    if any(removed.values()):
        log.info("retention: %s", ", ".join(f"{table} {n}" for table, n in removed.items() if n))
    return removed


def run_quietly() -> dict[str, int]:
    """``run`` for the minute sweep: a purge that fails (a row referenced meanwhile, the database busy)
    is logged and counted, never fails the sweep; what it did not purge is purged next minute."""
    try:
        return run()
    except Exception:  # noqa: BLE001 - publishing and retries ran before it; nothing is lost
        log.exception("retention: purge failed; retried next minute")
        emit_metric("retention_failures", 1)
        return {}


def purge_batch(purge: Purge, batch_rows: int = BATCH_ROWS) -> tuple[int, bool]:
    """One batch of one table: (rows removed, whether it found the end of what is due)."""
    params = {"max_rows": batch_rows} if purge.keep_s is None else {"max_rows": batch_rows, "keep_s": purge.keep_s}
    with transaction() as tx:
        row = tx.one(Q[purge.table], **params)
    return row["purged"], row["scanned"] < batch_rows


def drop_expired_archive(keep_months: int = USAGE_ARCHIVE_MONTHS) -> int:
    """Drops the usage archive's months past ``keep_months`` (12 at least); how many."""
    with transaction() as tx:
        return tx.scalar(Q["drop_usage_archive"], keep_months=keep_months)
