"""The rebill queue's batches: a tenant's renewals billed together by the one engine.

A rebill SQS batch (up to 100 messages) is grouped by tenant. Each group's renewals
go to ``engine.renew`` together: one transaction that loads and writes them in two
statements, then the payments, recorded in a third (``engine``). Accounts the round
finds with a payment still pending, dunning retries and settle messages go one message
at a time (``rebill.handle``, the same engine with a batch of one), and so does the
whole group if the set-based round fails, so a failure is reported for its own record
only.
"""

import logging
from collections import defaultdict
from datetime import datetime

from chalicelib import events
from chalicelib.billing import calendar, collection, engine, rebill

log = logging.getLogger("billing.rebill")


def process(records: list[dict], now: datetime | None = None) -> dict:
    """The rebill_processor body: returns the SQS partial-batch response."""
    from chalicelib import consumers

    now = now or calendar.utcnow()
    failures: list[str] = []
    groups: dict[str, list[tuple[str, str, dict]]] = defaultdict(list)
    steps: list[tuple[str, dict]] = []
    for record in records:
        message_id, body = record.get("messageId", ""), record.get("body", "")
        try:
            message = events.parse_rebill(body)
        except events.PoisonMessage as exc:
            log.error("rebill: poison message %s: %s", message_id, exc)
            failures.append(message_id)
            continue
        if message["kind"] == events.REBILL_SELECT:  # a step of the daily run's selection
            steps.append((message_id, message))
            continue
        groups[message["tenantId"]].append((message_id, body, message))
    failures += rebill.select(steps)  # first: the run's chains move on while this batch bills
    for tenant_id, group in groups.items():
        failures += _process_group(tenant_id, group, now)
    return consumers.respond("rebill", failures, len(records))


def _process_group(tenant_id: str, group: list, now: datetime) -> list[str]:
    renewals = [item for item in group if item[2]["kind"] == "renewal"]
    one_by_one = [item for item in group if item[2]["kind"] != "renewal"]
    results = _renew_together(tenant_id, renewals, now)
    if results is None:  # the round failed: every renewal alone
        one_by_one += renewals
        results = {}
    failures = []
    for item in renewals:
        outcome = results.get(item[2]["accountId"])
        if outcome == "unsettled":
            one_by_one.append(item)  # settle its pending payment first, then bill
        elif outcome in collection.UNRESOLVED:
            failures.append(item[0])
    for message_id, body, _message in one_by_one:
        try:
            rebill.handle(body, now=now)
        except Exception:  # noqa: BLE001 - reported for this record; SQS redelivers it
            log.exception("rebill: message %s failed", message_id)
            failures.append(message_id)
    return failures


def _renew_together(tenant_id: str, renewals: list, now: datetime) -> dict[str, str] | None:
    """Bill the group's renewals in one round; each account's outcome, or None when the round failed."""
    if not renewals:
        return {}
    due: dict[str, datetime] = {}
    for _message_id, _body, message in renewals:
        account_id = message["accountId"]
        due[account_id] = min(due.get(account_id, message["dueAt"]), message["dueAt"])
    try:
        results = engine.renew(tenant_id, due, now)
    except Exception:  # noqa: BLE001 - retried one message at a time, failures reported per record
        log.exception("rebill: batch round failed for tenant %s; falling back to one by one", tenant_id)
        return None
    return {account_id: result.outcome for account_id, result in results.items()}
