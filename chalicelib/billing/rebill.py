"""The daily rebill: select due accounts, enqueue them, bill each exactly once per period.

Selection fans out. The schedule opens a run (``start``): ``PARTITIONS`` chains of renewals,
each owning a range of the 256 account-id buckets, one chain of dunning retries and one of
payments left pending, each chain's position kept in ``rebill_chains``. It sends each chain's
first step message onto the rebill queue, where the rebill processor takes step messages
beside the accounts (``select``): a step locks its chain's row, reads one bounded page in keyset
order from the stored position (``rebill_due_page`` and the other cross-tenant definer
functions), sends one SQS message per account, ten per SendMessageBatch call, then the chain's
next step message, and moves the row on in the same transaction. So no invocation selects more
than ``STEP_BUDGET`` accounts, a step that dies before its commit is redelivered and re-sends
only its own page, and a duplicate or late step message finds its step done and sends nothing.
An account message names the account and what it is for: ``renewal`` of the period starting
at ``dueAt`` (the account's ``next_billing_at`` when selected), or a dunning ``retry``, or
``settle`` a pending payment.

Processing is the billing engine's (``engine``): a message on its own (``handle``,
the admin route's ``rebill_now``) is a batch of one, and ``rebill_batch`` hands it a
tenant's renewals together. A renewal that finds a payment still unresolved raises,
so the message comes back and settles it under the same key.
"""

import json
import logging
import uuid
from dataclasses import asdict, dataclass
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
# Renewal chains per run: selection's parallelism. Each step's page is sent in about 100
# SendMessageBatch calls (~0.2 s on 8 threads), so 16 chains outrun any processor reservation.
PARTITIONS = 16
# Accounts one invocation selects and sends over all the step messages of its batch: a few
# seconds of a 30-second timeout at worst, beside the batch's renewals.
STEP_BUDGET = 5000
SOURCES = ("renewal", "retry", "settle")
LAST_BUCKET = 255


class EnqueueFailed(Exception):
    """SQS refused some of a page's messages after retries: the step rolls back and is redelivered."""


@dataclass(frozen=True)
class Position:
    """Where a chain stands: the next bucket to read, and the last (due at, account) read in it."""

    bucket: int = 0
    after_at: datetime | None = None
    after_id: str | None = None


@dataclass(frozen=True)
class Step:
    """What one step sent: how many accounts, and whether its chain has finished."""

    sent: int
    finished: bool


# --- selection --------------------------------------------------------------------------


def due(as_of: datetime, page_size: int = PAGE_SIZE):
    """Yield pages of {tenantId, accountId, kind, dueAt} due at ``as_of``: renewals, retries, pending payments.

    Read only, one page per transaction: the operators' preview and inline runs, and tests.
    """
    for source in SOURCES:
        position, finished = Position(), False
        while not finished:
            with transaction() as tx:
                page, position, finished = _page(tx, source, as_of, LAST_BUCKET, position, page_size)
            if page:
                yield page


def _page(tx, source: str, as_of: datetime, last_bucket: int, position: Position, max_rows: int):
    """One keyset page of ``source`` after ``position``: (messages, next position, whether it was the last)."""
    keys = {"as_of": as_of, "after_at": position.after_at, "after_id": position.after_id, "max_rows": max_rows}
    if source == "renewal":
        keys.update(last_bucket=last_bucket, from_bucket=position.bucket)
    rows = tx.run(Q[f"{source}_page"], **keys)
    if rows:
        _tenant, account, at, _kind, bucket = rows[-1]
        position = Position(bucket, at, str(account))
    # Grouped by tenant within the page: the processor bills a tenant's accounts of one SQS
    # batch together, so neighbours should share one.
    page = [{"tenantId": str(t), "accountId": str(a), "kind": kind, "dueAt": _iso(at)} for t, a, at, kind, _b in rows]
    return sorted(page, key=lambda m: m["tenantId"]), position, len(rows) < max_rows


def start(as_of: datetime, queue_url: str, partitions: int | None = None) -> dict:
    """The schedule's part of a run: open its chains and send each its first step; {run, chains, stalled}.

    In one transaction: if a send fails nothing is open, and the schedule's retry opens another run.
    ``stalled``: chains of earlier runs that stopped short, forgotten now (this run selects their accounts).
    """
    run_id = str(uuid.uuid4())
    with transaction() as tx:
        [[chains, stalled]] = tx.run(Q["open_run"], run_id=run_id, as_of=as_of, partitions=partitions or PARTITIONS)
        _send(aws.client("sqs"), queue_url, [_step_message(run_id, chain, 0) for chain in range(chains)])
    if stalled:
        emit_metric("rebill_chains_stalled", stalled)
        log.error("%d selection chain(s) of earlier runs stopped short; this run selects their accounts", stalled)
    return {"run": run_id, "chains": chains, "stalled": stalled}


def select(steps: list[tuple[str, dict]]) -> list[str]:
    """Run a batch's step messages ((message id, parsed message) each); the ids of those that failed.

    The batch's steps share STEP_BUDGET accounts, so an invocation's work is bounded however
    many step messages its batch holds (at most 100): a smaller page only means more steps.
    """
    if not steps:
        return []
    url, page_size = queue_url(), min(PAGE_SIZE, max(1, STEP_BUDGET // len(steps)))
    failures = []
    for message_id, message in steps:
        try:
            step(message, url, page_size)
        except Exception:  # noqa: BLE001 - reported for this record: SQS redelivers the step
            log.exception("rebill: selection step %s failed", message_id)
            failures.append(message_id)
    return failures


def step(message: dict, queue_url: str, page_size: int = PAGE_SIZE, forward: bool = True) -> Step | None:
    """One step of a chain: send its next page and (``forward``) the chain's next step message; None when
    the step is no longer current (done already: a duplicate or late message), so nothing is sent.

    The chain's row stays locked from the claim to the commit, sends included: a concurrent copy of
    the message waits, then finds the step done. Without ``forward`` the caller runs the next step.
    """
    run_id, chain, number = message["runId"], message["chain"], message["step"]
    sqs = aws.client("sqs")
    with transaction() as tx:
        claimed = tx.run(Q["claim_step"], run_id=run_id, chain=chain, step=number)
        if not claimed:
            return None
        as_of, source, last_bucket, bucket, after_at, after_id = claimed[0]
        position = Position(bucket, after_at, after_id and str(after_id))
        page, position, finished = _page(tx, source, as_of, last_bucket, position, page_size)
        _send(sqs, queue_url, [{**m, "asOf": _iso(as_of)} for m in page])
        if forward and not finished:
            _send(sqs, queue_url, [_step_message(run_id, chain, number + 1)])
        keys = {"run_id": run_id, "chain": chain, "step": number, "sent": len(page), "finished": finished}
        tx.run(Q["advance_chain"], **asdict(position), **keys)
    emit_metric("rebill_accounts", len(page))
    return Step(len(page), finished)


def enqueue_due(as_of: datetime, queue_url: str, progress=None, partitions: int | None = None) -> int:
    """Send every due account to the rebill queue from this process (the operators' CLI); how many were sent.

    The same run and steps as the schedule's, walked here one chain after another instead of
    through the queue. A crash leaves the run unfinished; running the command again starts another.
    """
    run_id = str(uuid.uuid4())
    with transaction() as tx:
        [[chains, _stalled]] = tx.run(Q["open_run"], run_id=run_id, as_of=as_of, partitions=partitions or PARTITIONS)
    sent = 0
    for chain in range(chains):
        number, result = 0, None
        while result is None or not result.finished:
            result = step(_step_message(run_id, chain, number), queue_url, forward=False)
            if result is None:
                break
            sent, number = sent + result.sent, number + 1
            if progress:
                progress(sent)
    return sent


def progress_of(run_id: str) -> list[dict]:
    """Each chain of a run: {chain, source, step, enqueued, done}."""
    with transaction() as tx:
        return tx.all(Q["run_progress"], run_id=run_id)


def _step_message(run_id: str, chain: int, number: int) -> dict:
    return {"kind": "select", "runId": run_id, "chain": chain, "step": number}


def _send(sqs, queue_url: str, messages: list) -> None:
    """Every message onto the queue, ten per SendMessageBatch call on up to 8 threads (boto3 clients
    are thread-safe); raises EnqueueFailed when SQS still refuses some after three attempts."""
    from concurrent.futures import ThreadPoolExecutor

    bodies = [json.dumps(m) for m in messages]
    chunks = [bodies[i : i + 10] for i in range(0, len(bodies), 10)]
    if len(chunks) <= 1:  # a step message, or a short page: no threads to start
        unsent = sum(_send_batch(sqs, queue_url, chunk) for chunk in chunks)
    else:
        with ThreadPoolExecutor(max_workers=8) as pool:
            unsent = sum(pool.map(lambda chunk: _send_batch(sqs, queue_url, chunk), chunks))
    if unsent:
        emit_metric("rebill_failures", unsent)
        raise EnqueueFailed(f"SQS refused {unsent} of {len(bodies)} rebill messages")


def _send_batch(sqs, queue_url: str, bodies: list[str]) -> int:
    """One SendMessageBatch, its refused entries retried twice; how many stay unsent."""
    entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)]
    for _attempt in range(3):
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        retry = {f["Id"] for f in response.get("Failed", [])}
        entries = [e for e in entries if e["Id"] in retry]
        if not entries:
            break
    return len(entries)


def queue_url() -> str:
    name = f"{get_settings().resource_prefix}-rebill"
    return aws.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]


# --- processing -------------------------------------------------------------------------


def handle(body: str, now: datetime | None = None) -> bool:
    """One rebill message on its own, through the same engine as a batch: True when something was
    billed or collected. A payment left unresolved raises (GatewayTimeout, collection.PaymentUnresolved)."""
    message = events.parse_rebill(body)
    if message["kind"] == "select":  # a step of the daily run's selection, not an account
        return step(message, queue_url()) is not None
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
