"""The daily rebill: select due accounts, enqueue them, bill each exactly once per period.

Selection pages through ``rebill_due_accounts`` / ``rebill_retry_accounts`` (the
cross-tenant definer functions) in keyset order and sends one SQS message per
account, ten per SendMessageBatch call, never holding more than a page in
memory. A message names the account and what it is for: ``renewal`` of the
period starting at ``dueAt`` (the account's ``next_billing_at`` when selected),
or a dunning ``retry``.

Processing is the billing engine's (``engine``): a message on its own (``handle``,
the admin route's ``rebill_now``) is a batch of one, and ``rebill_batch`` hands it a
tenant's renewals together. A renewal that finds a payment still unresolved raises,
so the message comes back and settles it under the same key.
"""

import json
import logging
from datetime import datetime, timedelta

from chalicelib import audit, aws, errors, events
from chalicelib.billing import accounts, calendar, collection, engine, payments
from chalicelib.config import get_settings
from chalicelib.db import transaction
from chalicelib.db.queries import load
from chalicelib.db.scope import tenant_transaction
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


def handle(body: str, now: datetime | None = None) -> bool:
    """One rebill message on its own, through the same engine as a batch: True when something was
    billed or collected. A payment left unresolved raises (GatewayTimeout, collection.PaymentUnresolved)."""
    message = events.parse_rebill(body)
    now = now or calendar.utcnow()
    tenant_id, account_id = message["tenantId"], message["accountId"]
    # Whatever the message says, first resolve payments a crash or timeout left pending.
    settled = collection.resolved(collection.settle_pending(tenant_id, account_id, now))
    if message["kind"] == "settle":
        return settled is not None
    if message["kind"] == "retry":
        outcome = retry_payment(tenant_id, account_id, message["dueAt"], now)
    else:
        outcome = engine.renew(tenant_id, {account_id: message["dueAt"]}, now)[account_id].outcome
    return collection.resolved(outcome) != "not_due" or settled is not None


def renew(tenant_id: str, account_id: str, period_start: datetime, now: datetime) -> str:
    """Bill the period starting at ``period_start`` if it is still the account's next one, then collect it."""
    return collection.resolved(engine.bill_due(tenant_id, {account_id: period_start}, now)[account_id].outcome)


def retry_payment(tenant_id: str, account_id: str, due_at: datetime, now: datetime) -> str:
    """A dunning retry: collect the account's open invoices, oldest first, if the retry is still due."""
    with transaction(tenant_id=tenant_id) as tx:
        account = accounts.find_locked(tx, account_id)
        if account is None or account["status"] != "PENDING":
            return "not_due"
        if account["payment_retry_at"] is None or account["payment_retry_at"] != due_at or due_at > now:
            return "not_due"
        # Lease this retry before leaving the lock: a duplicate message now finds it
        # not due, and if this invocation dies the next daily run retries it.
        collection.lease_retry(tx, account_id, now + timedelta(hours=1))
    return collection.collect_open(tenant_id, account_id, now)


def rebill_now(tenant_id: str, account_id: str, actor, now: datetime | None = None) -> dict:
    """Bill one account's due period now, exactly as the queue would; the rebill and the account after it.

    Settles a pending payment first. Concurrent calls for one account call the gateway
    once: one bills, the others find nothing due (``not_due``) or the payment being
    settled (``rebill_in_progress``), both UnprocessableState. A gateway without a
    final answer is ServiceUnavailable (the pending payment is settled by the retry,
    or by the next daily run).
    """
    now = now or calendar.utcnow()
    with tenant_transaction(tenant_id) as tx:
        account = accounts.get(tx, account_id)
    try:
        settled = collection.resolved(collection.settle_pending(tenant_id, account_id, now))
        due_at = account["next_billing_at"]
        if account["status"] == "INACTIVE" or due_at is None or due_at > now:
            outcome = settled
        else:
            outcome = collection.resolved(engine.bill_due(tenant_id, {account_id: due_at}, now)[account_id].outcome)
            outcome = settled if outcome == "not_due" else outcome
        if outcome is None or outcome == "not_due":
            raise errors.UnprocessableState("the account has no period due for billing", code="not_due")
    except collection.PaymentUnresolved as exc:
        raise errors.UnprocessableState(
            "a payment for this account is being settled by another request", code="rebill_in_progress"
        ) from exc
    except payments.RetryableGatewayError as exc:
        raise errors.ServiceUnavailable("the payment gateway did not answer; retry the request") from exc
    with tenant_transaction(tenant_id) as tx:
        audit.record(tx, actor, "account.rebilled", "account", account_id, {"outcome": outcome})
        return {"object": "rebill", "outcome": outcome, "account": accounts.get(tx, account_id)}


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
