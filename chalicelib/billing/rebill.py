"""The daily rebill: select due accounts, enqueue them, bill each exactly once per period.

Selection pages through ``rebill_due_accounts`` / ``rebill_retry_accounts`` (the
cross-tenant definer functions) in keyset order and sends one SQS message per
account, ten per SendMessageBatch call, never holding more than a page in
memory. A message names the account and what it is for: ``renewal`` of the
period starting at ``dueAt`` (the account's ``next_billing_at`` when selected),
or a dunning ``retry``.

Processing locks the account row and re-checks that the work is still due, so a
duplicate message, a second scheduler run or a redelivery after a crash finds
nothing to do; the ledger's unique charge per (account, period) backs that up
at the database. A renewal issues the period's invoice (plan price in advance,
the previous period's metered usage in arrears), posts the charge, collects the
payment and advances ``next_billing_at`` by the plan interval from the
subscription's anchor, all in one transaction.
"""

import json
import logging
import uuid
from datetime import datetime, timedelta

from chalicelib import audit, aws, events
from chalicelib.billing import calendar, collection, invoicing, usage_charges
from chalicelib.config import get_settings
from chalicelib.db import transaction
from chalicelib.db.queries import load
from chalicelib.observability import emit_metric

Q = load("rebill")
log = logging.getLogger("billing.rebill")
PAGE_SIZE = 1000


# --- selection --------------------------------------------------------------------------


def due(as_of: datetime, page_size: int = PAGE_SIZE):
    """Yield pages of {tenantId, accountId, kind, dueAt} due at ``as_of``: renewals, then retries."""
    for query in ("due_page", "retry_page", "settle_page"):
        after_at = after_id = None
        while True:
            with transaction() as tx:
                rows = tx.run(Q[query], as_of=as_of, after_at=after_at, after_id=after_id, max_rows=page_size)
            if not rows:
                break
            after_at, after_id = rows[-1][2], rows[-1][1]
            # Grouped by tenant within the page: the processor bills a tenant's
            # accounts of one SQS batch together, so neighbours should share one.
            page = [
                {"tenantId": str(t), "accountId": str(a), "kind": kind, "dueAt": _iso(at)} for t, a, at, kind in rows
            ]
            yield sorted(page, key=lambda m: m["tenantId"])
            if len(rows) < page_size:
                break


def enqueue_due(as_of: datetime, queue_url: str, progress=None, concurrency: int = 8) -> int:
    """Send every due account to the rebill queue; returns how many were enqueued.

    SendMessageBatch takes ten messages and a round trip of some milliseconds, so
    a page's batches go out on ``concurrency`` threads (boto3 clients are
    thread-safe); pages are still read one at a time.
    """
    from concurrent.futures import ThreadPoolExecutor

    sqs = aws.client("sqs")
    stamp = _iso(as_of)

    failed = []

    def send(chunk: list[dict]) -> int:
        entries = [{"Id": str(i), "MessageBody": json.dumps({**m, "asOf": stamp})} for i, m in enumerate(chunk)]
        for _attempt in range(3):
            response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            retry = {f["Id"] for f in response.get("Failed", [])}
            entries = [e for e in entries if e["Id"] in retry]
            if not entries:
                break
        # Still unsent: they stay due and the next run picks them up; the rest go on.
        failed.extend(entries)
        return len(chunk) - len(entries)

    sent = 0
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for page in due(as_of):
            sent += sum(pool.map(send, [page[i : i + 10] for i in range(0, len(page), 10)]))
            if progress:
                progress(sent)
    emit_metric("rebill_accounts", sent)
    if failed:
        emit_metric("rebill_failures", len(failed))
        log.error("%d due accounts could not be enqueued; they stay due for the next run", len(failed))
    return sent


def queue_url() -> str:
    name = f"{get_settings().resource_prefix}-rebill"
    return aws.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]


# --- processing -------------------------------------------------------------------------


def parse(body: str) -> dict:
    try:
        message = json.loads(body)
        if message["kind"] not in ("renewal", "retry", "settle"):
            raise ValueError(f"unknown kind {message['kind']!r}")
        message["dueAt"] = _parse_ts(message["dueAt"])
        for key in ("tenantId", "accountId"):
            uuid.UUID(message[key])
    except (TypeError, ValueError, KeyError) as exc:
        raise events.PoisonMessage(f"not a rebill message: {exc}") from exc
    return message


def handle(body: str, now: datetime | None = None) -> bool:
    """The SQS record handler; True when something was billed or collected."""
    message = parse(body)
    now = now or calendar.utcnow()
    tenant_id, account_id = message["tenantId"], message["accountId"]
    # Whatever the message says, first resolve payments a crash or timeout left pending.
    settled = collection.settle_pending(tenant_id, account_id, now) is not None
    if message["kind"] == "settle":
        return settled
    if message["kind"] == "retry":
        return retry_payment(tenant_id, account_id, message["dueAt"], now) != "not_due" or settled
    outcome = renew(tenant_id, account_id, message["dueAt"], now)
    billed = outcome != "not_due"
    # Catch up on further overdue periods (a scheduler outage), one transaction
    # each, from wherever the account now stands (a redelivery may find the
    # message's own period done and later ones still due).
    for _ in range(get_settings().rebill_catch_up_periods - 1):
        if outcome not in ("succeeded", "invoiced", "not_due"):
            break
        with transaction(tenant_id=tenant_id) as tx:
            current = tx.scalar(Q["next_billing_at"], id=account_id)
        if current is None or current > now:
            break
        outcome = renew(tenant_id, account_id, current, now)
        billed = billed or outcome != "not_due"
    return billed or settled


def renew(tenant_id: str, account_id: str, period_start: datetime, now: datetime) -> str:
    """Bill the period starting at ``period_start`` if it is still the account's next one, then collect it."""
    with transaction(tenant_id=tenant_id) as tx:
        outcome, intent = renew_in(tx, tenant_id, account_id, period_start, now)
    if intent is None:
        return outcome
    outcome = collection.settle(tenant_id, intent, now)
    if outcome != "succeeded":
        emit_metric("rebill_failures", 1, TenantId=tenant_id)
    return outcome


def renew_in(tx, tenant_id: str, account_id: str, period_start: datetime, now: datetime):
    """Invoice, charge and advance in the caller's transaction; returns (outcome, payment intent or None).

    An ACTIVE account gets a payment intent to settle after commit. A PENDING one
    (in dunning) is invoiced only: its retry schedule collects every open invoice,
    so one renewal cannot add a dunning failure of its own.
    """
    account = tx.one(Q["lock_account"], id=account_id)
    if account is None or account["status"] == "INACTIVE":
        return "not_due", None
    if account["next_billing_at"] is None or account["next_billing_at"] != period_start or period_start > now:
        return "not_due", None
    sub = tx.one(Q["live_subscription"], account_id=account_id)
    if sub is None:
        tx.run(Q["stop_billing"], id=account_id)
        return "no_subscription", None
    if sub["cancel_at_period_end"]:
        tx.run(Q["end_subscription"], id=sub["id"])
        tx.run(Q["stop_billing"], id=account_id)
        audit.record(tx, "system:rebill", "subscription.canceled", "subscription", sub["id"], {"at_period_end": True})
        return "canceled", None
    start = period_start
    end = _period_end(sub, start)
    usage_from = sub["current_period_start"]
    totals = {
        row["metric"]: row for row in tx.all(Q["usage_totals"], account_id=account_id, from_at=usage_from, to_at=start)
    }
    usage = usage_charges.lines(sub["usage_prices"], totals, usage_from, start)
    issued = invoicing.issue_for_period(tx, tenant_id, str(sub["id"]), start, end, usage)
    tx.run(Q["advance_subscription"], id=sub["id"], start=start, end=end)
    tx.run(Q["advance_account"], id=account_id, next_billing_at=end)
    if issued.invoice_id is None:
        return "not_due", None
    if account["status"] != "ACTIVE":
        return "invoiced", None
    intent = collection.open_intent(tx, account_id, issued.invoice_id, issued.total, sub["currency"])
    return ("succeeded", None) if intent is None else ("invoiced", intent)


def retry_payment(tenant_id: str, account_id: str, due_at: datetime, now: datetime) -> str:
    """A dunning retry: collect the account's open invoices, oldest first, if the retry is still due."""
    with transaction(tenant_id=tenant_id) as tx:
        account = tx.one(Q["lock_account"], id=account_id)
        if account is None or account["status"] != "PENDING":
            return "not_due"
        if account["payment_retry_at"] is None or account["payment_retry_at"] != due_at or due_at > now:
            return "not_due"
        # Lease this retry before leaving the lock: a duplicate message now finds it
        # not due, and if this invocation dies the next daily run retries it.
        tx.run(Q["lease_retry"], id=account_id, lease_until=now + timedelta(hours=1))
    return collection.collect_open(tenant_id, account_id, now)


def _period_end(sub: dict, start: datetime) -> datetime:
    period_start, period_end = calendar.period_containing(
        sub["billing_anchor"], sub["interval"], sub["interval_count"], start
    )
    if period_start != start:  # billing date moved off the anchor's grid: keep the interval from here
        return calendar.period_boundary(start, sub["interval"], sub["interval_count"], 1)
    return period_end


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _parse_ts(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("timestamp without offset")
    return parsed


def rebill_now(request) -> tuple[int, dict]:
    """ADMIN route: bill one account's due period now, exactly as the queue would.

    Runs in its own transactions (the payment is settled after the invoice
    commits), so the route uses idempotency's own-transaction mode. Nothing due
    is a 422; a gateway timeout a retryable 503 (the pending payment is settled
    by the retry, or by the next daily run).
    """
    from chalicelib import errors, pagination
    from chalicelib.billing import accounts, payments, tenants

    account_id = pagination.parse_id(request.path_params["account_id"], "id")
    tenant_id = request.principal.tenant_id
    now = calendar.utcnow()
    with tenants.active(tenant_id) as tx:
        account = accounts.get(tx, account_id)
    try:
        settled = collection.settle_pending(tenant_id, account_id, now)
        due = account["next_billing_at"] is not None and account["next_billing_at"] <= now
        if account["status"] == "INACTIVE" or not due:
            if settled is None:
                raise errors.UnprocessableState("the account has no period due for billing", code="not_due")
            outcome = settled
        else:
            outcome = renew(tenant_id, account_id, account["next_billing_at"], now)
    except payments.GatewayTimeout as exc:
        raise errors.ServiceUnavailable("the payment gateway did not answer; retry the request") from exc
    with tenants.active(tenant_id) as tx:
        audit.record(tx, request.principal, "account.rebilled", "account", account_id, {"outcome": outcome})
        return 200, {"object": "rebill", "outcome": outcome, "account": accounts.get(tx, account_id)}
