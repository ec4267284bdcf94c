"""Metered usage events: recorded once per client ``event_id``, judged one by one.

A batch (up to 100) is accepted event by event: an event for an unknown account,
stamped too far in the past or the future, or where it could never be billed
(before the subscription started, in a period already invoiced (unless a draft held for
the tenant's grace period still prices it), after the
subscription ends or ended, for an account with no subscription or an inactive
one), or past a hard cap of its plan (``usage_caps``), is rejected with its reasons while
the rest are stored. A resent ``event_id`` is reported as a duplicate and counted once.
Quantities are integers.
"""

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from chalicelib import audit, encoding, errors, outbox
from chalicelib.billing import calendar, usage_caps
from chalicelib.config import get_settings
from chalicelib.db import separate_transaction
from chalicelib.db.queries import load

Q = load("usage")
log = logging.getLogger("billing.usage")


def schema_for(body) -> str:
    """One event, or ``{"events": [...]}`` for a batch."""
    return "usage_event_batch" if isinstance(body, dict) and "events" in body else "usage_event"


@dataclass(frozen=True)
class UsageBatch:
    """Usage events as the API takes them (``{"events": [...]}`` or one event), each judged alone."""

    events: tuple[dict, ...]

    @classmethod
    def of(cls, body: dict) -> "UsageBatch":
        return cls(tuple(body["events"] if "events" in body else [body]))


def record(tx, actor, batch: UsageBatch) -> dict:
    events = batch.events
    settings = get_settings()
    now = calendar.utcnow()
    oldest = now - timedelta(days=settings.usage_max_age_days)
    newest = now + timedelta(seconds=settings.usage_max_future_s)

    ids = encoding.dumps(sorted({e["account_id"].lower() for e in events}))
    tx.run(Q["lock_accounts"], ids=ids)
    known = {account["id"]: account for account in map(_known, tx.all(Q["known_accounts"], ids=ids))}
    results, to_insert, seen = [], [], set()
    for event in events:
        reasons = _reasons(event, known, oldest, newest, settings)
        if not reasons and event["event_id"] in seen:
            results.append({"event_id": event["event_id"], "status": "duplicate"})
            continue
        results.append({"event_id": event["event_id"], "status": "rejected" if reasons else "accepted"})
        if reasons:
            results[-1]["reasons"] = reasons
            continue
        seen.add(event["event_id"])
        to_insert.append({**event, "account_id": event["account_id"].lower()})
    to_insert = _within_caps(tx, known, to_insert, results)

    inserted = set(tx.scalar(Q["insert_batch"], events=encoding.dumps(to_insert)) if to_insert else ())
    for result in results:
        if result["status"] == "accepted" and result["event_id"] not in inserted:
            result["status"] = "duplicate"

    summary = _summary(results)
    if summary["accepted"]:
        audit.record(tx, actor, "usage.recorded", "usage_batch", None, {"accepted": summary["accepted"]})
    if summary["rejected"] and summary["rejected"] < len(results):
        _rejected_event(tx, summary)
    if summary["rejected"] == len(results):
        _announce_rejection(actor.tenant_id, summary)  # this transaction rolls back: the event needs its own
        raise errors.UnprocessableState(
            "no event was accepted",
            code="usage_rejected",
            details=[{"field": f"events.{i}", "issue": "; ".join(r["reasons"])} for i, r in enumerate(results)],
        )
    return summary


def _summary(results: list[dict]) -> dict:
    counts = Counter(r["status"] for r in results)
    return {
        "object": "usage_batch",
        "accepted": counts["accepted"],
        "duplicates": counts["duplicate"],
        "rejected": counts["rejected"],
        "data": results,
    }


def _within_caps(tx, known: dict, to_insert: list[dict], results: list[dict]) -> list[dict]:
    """The events a plan's hard cap leaves to store; the others' results say why (``usage_caps``)."""
    refused = usage_caps.refused(tx, known, to_insert)
    for position, reason in refused.items():
        event_id = to_insert[position]["event_id"]
        result = next(r for r in results if r["event_id"] == event_id and r["status"] == "accepted")
        result.update(status="rejected", reasons=[reason], code=usage_caps.CODE)
    return [event for position, event in enumerate(to_insert) if position not in refused]


def _rejected_event(tx, summary: dict) -> None:
    """usage.rejected: the events of a batch that were not stored, each with its reasons."""
    rejected = [r for r in summary["data"] if r["status"] == "rejected"]
    obj = {"object": "usage_rejection", "accepted": summary["accepted"], "rejected": len(rejected), "data": rejected}
    outbox.add(tx, "usage.rejected", {"rejected": len(rejected)}, obj)


def _announce_rejection(tenant_id: str, summary: dict) -> None:
    """A batch rejected whole is a 422 that stores nothing; its usage.rejected is committed on a connection
    of its own (a retry of the same request is another rejection, and another event). Failing to record
    it never turns the 422 into an error."""
    try:
        with separate_transaction(tenant_id) as tx:
            _rejected_event(tx, summary)
    except Exception:  # noqa: BLE001 - the sender still gets its 422 with every reason
        log.exception("recording a rejected usage batch failed")


def _reasons(event: dict, known: dict, oldest: datetime, newest: datetime, settings) -> list[str]:
    account = known.get(event["account_id"].lower())
    try:
        at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    except ValueError:
        return [*([] if account else ["no such account"]), "timestamp is not a valid date and time"]
    if account is None:
        return ["no such account"]
    if at < oldest:
        return [f"timestamp is more than {settings.usage_max_age_days} days old"]
    if at > newest:
        return [f"timestamp is more than {settings.usage_max_future_s} seconds in the future"]
    reason = _outside_billing(account, at)
    return [reason] if reason else []


def _known(account: dict) -> dict:
    """An account as ``known_accounts`` reads it, its id as text and its held drafts' windows as instants."""
    held = [tuple(datetime.fromisoformat(stamp) for stamp in window[:2]) for window in account["held_windows"] or ()]
    return {**account, "id": str(account["id"]), "held": held}


def _outside_billing(account: dict, at: datetime) -> str | None:
    """Why usage at ``at`` could never be billed (accepting it would bill it never), or None."""
    if any(start <= at < end for start, end in account["held"]):
        return None  # a draft in its grace period prices it when it is finalized
    if account["open_since"] is None:  # no live subscription
        if account["status"] == "INACTIVE" and account["ended_at"] is not None:
            return "the account is inactive; billing has stopped"
        if account["ended_at"] is None:
            return "the account has no subscription"
        if at >= account["ended_at"]:
            return "timestamp is after the subscription ended"
        return "timestamp falls in a billing period that is already invoiced"
    if at < account["started_at"]:
        return "timestamp is before the subscription started"
    if at < account["open_since"]:
        return "timestamp falls in a billing period that is already invoiced"
    if account["open_until"] is not None and at >= account["open_until"]:
        return "timestamp is after the subscription ends"
    if account["paused_since"] is not None and at >= account["paused_since"]:
        return "the subscription is paused"
    return None
