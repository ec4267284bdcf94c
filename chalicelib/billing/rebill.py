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
from datetime import datetime

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
    for query in ("due_page", "retry_page"):
        after_at = after_id = None
        while True:
            with transaction() as tx:
                rows = tx.run(Q[query], as_of=as_of, after_at=after_at, after_id=after_id, max_rows=page_size)
            if not rows:
                break
            yield [
                {"tenantId": str(t), "accountId": str(a), "kind": kind, "dueAt": _iso(at)} for t, a, at, kind in rows
            ]
            after_at, after_id = rows[-1][2], rows[-1][1]
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

    def send(chunk: list[dict]) -> int:
        entries = [{"Id": str(i), "MessageBody": json.dumps({**m, "asOf": stamp})} for i, m in enumerate(chunk)]
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        if response.get("Failed"):
            # Unsent accounts stay due: the next run (or a re-run) picks them up.
            raise RuntimeError(f"SendMessageBatch failed for {len(response['Failed'])} entries")
        return len(chunk)

    sent = 0
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for page in due(as_of):
            sent += sum(pool.map(send, [page[i : i + 10] for i in range(0, len(page), 10)]))
            if progress:
                progress(sent)
    emit_metric("rebill_accounts", sent)
    return sent


def queue_url() -> str:
    name = f"{get_settings().resource_prefix}-rebill"
    return aws.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]


# --- processing -------------------------------------------------------------------------


def parse(body: str) -> dict:
    try:
        message = json.loads(body)
        if message["kind"] not in ("renewal", "retry"):
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
    if message["kind"] == "retry":
        return retry_payment(message["tenantId"], message["accountId"], message["dueAt"], now) != "not_due"
    outcome = renew(message["tenantId"], message["accountId"], message["dueAt"], now)
    # Catch up on further overdue periods (a scheduler outage), one transaction each.
    for _ in range(get_settings().rebill_catch_up_periods - 1):
        if outcome in ("not_due", "no_subscription", "canceled", "inactive"):
            break
        with transaction(tenant_id=message["tenantId"]) as tx:
            current = tx.scalar("SELECT next_billing_at FROM accounts WHERE id = :id", id=message["accountId"])
        if current is None or current > now:
            break
        outcome = renew(message["tenantId"], message["accountId"], current, now)
    return outcome != "not_due"


def renew(tenant_id: str, account_id: str, period_start: datetime, now: datetime) -> str:
    """Bill the period starting at ``period_start`` if it is still the account's next one."""
    with transaction(tenant_id=tenant_id) as tx:
        return renew_in(tx, tenant_id, account_id, period_start, now)


def renew_in(tx, tenant_id: str, account_id: str, period_start: datetime, now: datetime) -> str:
    """``renew`` inside the caller's tenant-scoped transaction."""
    account = tx.one(Q["lock_account"], id=account_id)
    if account is None or account["status"] == "INACTIVE":
        return "not_due"
    if account["next_billing_at"] is None or account["next_billing_at"] != period_start or period_start > now:
        return "not_due"
    sub = tx.one(Q["live_subscription"], account_id=account_id)
    if sub is None:
        tx.run(Q["stop_billing"], id=account_id)
        return "no_subscription"
    if sub["cancel_at_period_end"]:
        tx.run(Q["end_subscription"], id=sub["id"])
        tx.run(Q["stop_billing"], id=account_id)
        audit.record(tx, "system:rebill", "subscription.canceled", "subscription", sub["id"], {"at_period_end": True})
        return "canceled"
    start = period_start
    end = _period_end(sub, start)
    totals = {
        row["metric"]: row
        for row in tx.all(Q["usage_totals"], account_id=account_id, from_at=sub["current_period_start"], to_at=start)
    }
    usage = usage_charges.lines(sub["usage_prices"], totals)
    issued = invoicing.issue_for_period(tx, tenant_id, str(sub["id"]), start, end, usage)
    tx.run(Q["advance_subscription"], id=sub["id"], start=start, end=end)
    tx.run(Q["advance_account"], id=account_id, next_billing_at=end)
    if issued.invoice_id is None:
        return "not_due"
    outcome = collection.collect(tx, tenant_id, account, issued.invoice_id, issued.total, sub["currency"], now)
    if outcome != "succeeded":
        emit_metric("rebill_failures", 1, TenantId=tenant_id)
    return outcome


def retry_payment(tenant_id: str, account_id: str, due_at: datetime, now: datetime) -> str:
    """A dunning retry: collect the account's open invoices, oldest first, if the retry is still due."""
    with transaction(tenant_id=tenant_id) as tx:
        account = tx.one(Q["lock_account"], id=account_id)
        if account is None or account["status"] != "PENDING":
            return "not_due"
        if account["payment_retry_at"] is None or account["payment_retry_at"] != due_at or due_at > now:
            return "not_due"
        outcome = "succeeded"
        for invoice in tx.all(Q["open_invoices"], account_id=account_id):
            outcome = collection.collect(
                tx, tenant_id, account, invoice["id"], invoice["total"], invoice["currency"], now
            )
            if outcome != "succeeded":
                break
        return outcome


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


def rebill_now(tx, request) -> tuple[int, dict]:
    """ADMIN route: bill one account's due period now, in the request's transaction.

    The same ``renew_in`` the queue runs, so a period can never be billed twice;
    an account with nothing due is a 422, a gateway timeout a retryable 503.
    """
    from chalicelib import errors, pagination
    from chalicelib.billing import accounts, payments

    account_id = pagination.parse_id(request.path_params["account_id"], "id")
    account = accounts.get(tx, account_id)
    now = calendar.utcnow()
    if account["next_billing_at"] is None or account["next_billing_at"] > now or account["status"] == "INACTIVE":
        raise errors.UnprocessableState("the account has no period due for billing", code="not_due")
    try:
        outcome = renew_in(tx, request.principal.tenant_id, account_id, account["next_billing_at"], now)
    except payments.GatewayTimeout as exc:
        raise errors.ServiceUnavailable("the payment gateway did not answer; retry the request") from exc
    audit.record(tx, request.principal, "account.rebilled", "account", account_id, {"outcome": outcome})
    return 200, {"object": "rebill", "outcome": outcome, "account": accounts.get(tx, account_id)}
