"""Webhook delivery: events fanned out to tenants' endpoints, signed, sent, retried, recorded.

The ``webhooks`` queue receives every domain event (SNS, no filter). ``fan_out`` makes one
delivery per matching endpoint (once, however often the event comes) and *kicks* each
endpoint's lane: a message ``{tenantId, endpointId}`` on the ``webhook-deliveries`` queue.
``process`` takes a batch of kicks and runs each lane in its own thread: it claims the
endpoint (one worker per endpoint at a time), sends its due deliveries oldest first until
its time budget is spent, and releases it. So a slow endpoint (up to the 10 s timeout per
request) or a failing one holds its own lane and never another endpoint's.

A request follows the Standard Webhooks specification: ``webhook-id`` is the event's id (the
same on every retry, so receivers dedupe), ``webhook-timestamp`` the attempt's time, and
``webhook-signature`` ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` with each
signing secret (two for 24 h after a rotation), made by the ``standardwebhooks`` library.
A 2xx is delivered; anything else waits ``RETRY_SCHEDULE_S[n]`` (+-20% jitter) and is sent
again, for up to 3 days, then it is failed. A wait up to 15 minutes is an SQS delay on the
kick; a longer one is found by ``retry_due``, which the ``outbox_sweep`` schedule runs every
minute, since SQS delays stop at 15 minutes. An endpoint that has failed for 3 days is disabled and its
pending deliveries failed; the tenant hears of it (``webhook_endpoint.disabled``). Every
attempt is recorded (status, latency, the first 1 KB of the answer).
"""

import json
import logging
import math
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from chalicelib import aws, consumers, encoding, errors, events, webhook_endpoints, webhook_http
from chalicelib.billing import calendar
from chalicelib.config import get_settings
from chalicelib.db import paging, transaction
from chalicelib.db.queries import load
from chalicelib.db.scope import tenant_transaction
from chalicelib.observability import emit_metric

Q = load("webhook_delivery")
log = logging.getLogger("billing.webhooks")

# Waits after the 1st, 2nd, ... failed attempt: 5 s, 5 min, 30 min, 2 h, 5 h, then 10 h: 12 attempts over
# about 2.8 days (3 days at most, jitter included, when the last wait would pass that, it is failed).
RETRY_SCHEDULE_S = (5, 300, 1800, 7200, 18000, 36000, 36000, 36000, 36000, 36000, 36000)
GIVE_UP_AFTER_S = 3 * 24 * 3600
SQS_MAX_DELAY_S = 900
LANE_BUDGET_S = 15.0  # a lane stops starting requests after this; one more may take the timeout
RENEW_AFTER_S = 5.0  # a lane's lease (the timeout + 20 s) is renewed before a request once it is this old
_lanes = ThreadPoolExecutor(max_workers=10, thread_name_prefix="webhook-lane")
_random = random.SystemRandom()


@dataclass(frozen=True)
class Kick:
    tenant_id: str
    endpoint_id: str


def fan_out(event: dict) -> bool:
    """The webhooks consumer: this event's deliveries, made once, and their lanes kicked."""
    tenant_id = event["tenantId"]
    with transaction(tenant_id=tenant_id) as tx:
        endpoints = [str(r[0]) for r in tx.run(Q["fan_out"], event_id=event["eventId"], event_type=event["eventType"])]
    kick([Kick(tenant_id, endpoint_id) for endpoint_id in endpoints])
    return bool(endpoints)


def kick(kicks: list[Kick], delay_s: int = 0) -> None:
    """Ask for these lanes to be delivered (after ``delay_s``, at most SQS's 15 minutes)."""
    if not kicks:
        return  # most events of most tenants: no endpoint wants them, and SQS is not asked anything
    url = queue_url()
    for start in range(0, len(kicks), 10):
        entries = [
            {
                "Id": str(i),
                "MessageBody": json.dumps({"tenantId": k.tenant_id, "endpointId": k.endpoint_id}),
                "DelaySeconds": max(0, min(int(delay_s), SQS_MAX_DELAY_S)),
            }
            for i, k in enumerate(kicks[start : start + 10])
        ]
        failed = aws.client("sqs").send_message_batch(QueueUrl=url, Entries=entries).get("Failed") or []
        if failed:  # the retry schedule finds these lanes within a minute
            log.warning("%d webhook kicks not sent: %s", len(failed), failed[0].get("Message"))


def queue_url() -> str:
    name = f"{get_settings().resource_prefix}-webhook-deliveries"
    return aws.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]


def process(records: list[dict], budget_s: float = LANE_BUDGET_S) -> dict:
    """The webhook-deliveries consumer: each distinct lane of the batch in a thread of its own."""
    lanes: dict[Kick, list[str]] = {}
    failures = []
    for record in records:
        try:
            lanes.setdefault(_parse_kick(record.get("body", "")), []).append(record.get("messageId", ""))
        except events.PoisonMessage as exc:
            log.error("webhook-deliveries: poison message %s: %s", record.get("messageId"), exc)
            failures.append(record.get("messageId", ""))
    deadline = time.monotonic() + budget_s
    futures = {lane: _lanes.submit(deliver_lane, lane, deadline) for lane in lanes}
    for lane, future in futures.items():
        try:
            future.result()
        except Exception:  # noqa: BLE001 - this lane's kicks come back; the others are done
            log.exception("webhook lane %s failed", lane.endpoint_id)
            failures += lanes[lane]
    return consumers.respond("webhook-deliveries", failures, len(records))


def deliver_lane(lane: Kick, deadline: float) -> str:
    """Claim the endpoint, send what is due until ``deadline``, release it, and kick it again if more
    is due within SQS's reach. "busy" when another worker holds it (that worker sends ours too)."""
    with transaction(tenant_id=lane.tenant_id) as tx:
        claimed = webhook_endpoints.claim_lane(tx, lane.endpoint_id, _lease_s(), calendar.utcnow())
    if claimed is None:
        return "busy"
    try:
        sent = _send_due(lane.tenant_id, claimed, deadline)
    finally:
        with transaction(tenant_id=lane.tenant_id) as tx:
            webhook_endpoints.release_lane(tx, claimed)
            next_at = tx.scalar(Q["next_due"], endpoint_id=lane.endpoint_id)
    _kick_again(lane, next_at)
    return f"sent {sent}"


def _lease_s() -> int:
    """A lane is held for one request (its deadline) and its bookkeeping at a time, renewed before each."""
    return math.ceil(get_settings().webhook_timeout_s) + 20


def _send_due(tenant_id: str, endpoint: webhook_endpoints.Lane, deadline: float) -> int:
    sent, held_since = 0, time.monotonic()
    while time.monotonic() < deadline:
        with transaction(tenant_id=tenant_id) as tx:
            due = tx.all(Q["due"], endpoint_id=endpoint.id, now=calendar.utcnow(), limit=10)
        for delivery in due:
            if time.monotonic() >= deadline:
                return sent
            if time.monotonic() - held_since > RENEW_AFTER_S:  # a lease left for a whole request and more
                with transaction(tenant_id=tenant_id) as tx:
                    if not webhook_endpoints.renew_lane(tx, endpoint, _lease_s()):
                        return sent  # the lane is another worker's now (or the endpoint is off)
                held_since = time.monotonic()
            sent += 1
            if attempt(tenant_id, endpoint, delivery) == "disabled":
                return sent
        if len(due) < 10:
            break
    return sent


def _kick_again(lane: Kick, next_at: datetime | None) -> None:
    if next_at is None:
        return
    wait = (next_at - calendar.utcnow()).total_seconds()
    if wait <= SQS_MAX_DELAY_S:  # later than that, the retry schedule finds it
        kick([lane], delay_s=math.ceil(max(wait, 0)))


def attempt(tenant_id: str, endpoint: webhook_endpoints.Lane, delivery: dict) -> str:
    """One signed request for one delivery, and what it leaves: delivered, retrying, failed or disabled."""
    body = encoding.dumps(
        events.public(delivery["event_id"], delivery["event_type"], delivery["payload"], delivery["event_created"])
    )
    now = calendar.utcnow()
    headers = sign(endpoint.secrets, str(delivery["event_id"]), now, body)
    settings = get_settings()
    answer = webhook_http.post(
        endpoint.url, body.encode(), headers, timeout_s=settings.webhook_timeout_s, local=settings.runs_locally
    )
    emit_metric("webhook_delivered" if answer.delivered else "webhook_attempt_failed", 1)
    with transaction(tenant_id=tenant_id) as tx:
        return _record(tx, endpoint.id, delivery, answer, calendar.utcnow())


def sign(secrets: tuple[str, ...], message_id: str, at: datetime, body: str) -> dict:
    """Standard Webhooks headers: one ``v1,`` signature per secret that signs now."""
    from standardwebhooks import Webhook  # imported by the delivery function only

    signatures = " ".join(Webhook(secret).sign(message_id, at, body) for secret in secrets)
    return {"webhook-id": message_id, "webhook-timestamp": str(int(at.timestamp())), "webhook-signature": signatures}


def _record(tx, endpoint_id: str, delivery: dict, answer: webhook_http.Answer, now: datetime) -> str:
    tx.run(
        Q["record_attempt"],
        delivery_id=delivery["id"],
        attempted_at=now,
        status_code=answer.status,
        latency_ms=answer.latency_ms,
        excerpt=_text(answer.excerpt, 1024),
        error=_text(answer.error, 500),
    )
    scale = get_settings().webhook_time_scale
    failing_since = webhook_endpoints.answered(tx, endpoint_id, answer.delivered, now)
    if answer.delivered:
        tx.run(Q["delivered"], id=delivery["id"], status_code=answer.status, now=now)
        return "delivered"
    next_at = next_attempt_at(delivery["schedule_failures"] + 1, delivery["schedule_from"], now, scale)
    if _failing_too_long(failing_since, delivery["schedule_from"], next_at, now, scale):
        webhook_endpoints.disable(tx, endpoint_id, failing_since)
        tx.run(Q["failed"], id=delivery["id"], status_code=answer.status, now=now)
        tx.run(Q["fail_pending"], endpoint_id=endpoint_id, now=now)
        return "disabled"
    if next_at is None:
        tx.run(Q["failed"], id=delivery["id"], status_code=answer.status, now=now)
        webhook_endpoints.forget_failures(tx, endpoint_id)
        emit_metric("webhook_failed", 1)
        return "failed"
    tx.run(Q["retry_later"], id=delivery["id"], status_code=answer.status, next_attempt_at=next_at)
    return "retrying"


def _text(value: str | None, most: int) -> str | None:
    """What a receiver said, storable: PostgreSQL text holds no NUL (a binary answer has them)."""
    return (value or "").replace("\x00", "\ufffd")[:most] or None


def _failing_too_long(failing_since, schedule_from: datetime, next_at, now: datetime, scale: float) -> bool:
    """Disable an endpoint that has failed for 3 days, or whose delivery used up its whole schedule (about
    3 days) with the endpoint failing since that delivery's first day: it answers nothing well. (A
    delivery that gives up otherwise clears the count: ``forget_failures``.)"""
    if failing_since is None:
        return False
    if (now - failing_since).total_seconds() >= GIVE_UP_AFTER_S * scale:
        return True
    return next_at is None and failing_since <= schedule_from + timedelta(seconds=24 * 3600 * scale)


def next_attempt_at(failures: int, schedule_from: datetime, now: datetime, scale: float = 1.0) -> datetime | None:
    """When to try again after ``failures`` failed attempts; None when the schedule (3 days) is over."""
    if failures > len(RETRY_SCHEDULE_S):
        return None
    wait = RETRY_SCHEDULE_S[failures - 1] * _random.uniform(0.8, 1.2) * scale
    at = now + timedelta(seconds=wait)
    return None if at > schedule_from + timedelta(seconds=GIVE_UP_AFTER_S * scale) else at


def retry_due(now: datetime, max_rows: int = 1000) -> int:
    """The schedule's part (every minute): kick every lane with a delivery due that no worker holds,
    across tenants; this is what sends retries later than SQS's 15-minute delay, and any lost kick."""
    with transaction() as tx:
        lanes = [Kick(str(r[0]), str(r[1])) for r in tx.run(Q["lanes_due"], now=now, max_rows=max_rows)]
    kick(lanes)
    return len(lanes)


def list_page(tx, endpoint_id: str, page: paging.PageRequest, status: str | None = None) -> dict:
    """An endpoint's deliveries, newest first, each with every attempt made."""
    webhook_endpoints.get(tx, endpoint_id)
    paging.check_cursor(tx, Q["exists"], page, "webhook delivery", endpoint_id=endpoint_id)
    after, limit = page.starting_after, page.limit + 1
    rows = tx.all(Q["list"], endpoint_id=endpoint_id, id=None, status=status, after=after, limit=limit)
    return paging.page(rows, page, f"/v1/webhook_endpoints/{endpoint_id}/deliveries")


def resend(tenant_id: str, endpoint_id: str, delivery_id: str, now: datetime) -> dict:
    """A manual retry: the delivery is due now (sent again even if it was delivered), same webhook-id.
    A tenant's request, so a suspended or unknown tenant is refused first (``tenant_transaction``)."""
    with tenant_transaction(tenant_id) as tx:
        endpoint = webhook_endpoints.get(tx, endpoint_id)
        if not endpoint["enabled"]:
            raise errors.UnprocessableState("the webhook endpoint is disabled", code="webhook_endpoint_disabled")
        if tx.scalar(Q["resend"], id=delivery_id, endpoint_id=endpoint_id, now=now) is None:
            raise errors.NotFound("no such webhook delivery")
        delivery = tx.one(Q["list"], endpoint_id=endpoint_id, id=delivery_id, status=None, after=None, limit=1)
    kick([Kick(tenant_id, endpoint_id)])
    return delivery


def _parse_kick(body: str) -> Kick:
    try:
        message = json.loads(body)
        kick = Kick(str(uuid.UUID(message["tenantId"])), str(uuid.UUID(message["endpointId"])))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise events.PoisonMessage(f"not a webhook kick: {exc}") from exc
    return kick
