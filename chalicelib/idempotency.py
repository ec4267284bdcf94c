"""Idempotency-Key for POSTs, with Stripe's semantics, stored in PostgreSQL.

States follow Powertools: a key is claimed ``in_progress`` in a short transaction
of its own (so a concurrent duplicate sees it at once and gets a retryable 409),
then completed with the response in the same transaction as the business write
(Lago): either both commit or neither does. A request that fails releases its
claim so a retry runs again. A retry with the same key and body replays the
stored response; a different body (or route) with the key is a 409. Keys are per
tenant and expire after 24 hours. Validation happens before the claim, so an
invalid request stores nothing.

A route's ``before`` step (the usage rate) runs in the claim's transaction once the key is
claimed, so a replay, a reused key or one still in flight never runs it. The claim's
transaction commits without waiting for its WAL flush (``synchronous_commit`` off): a crash
may lose it, which is a claim never made (the retry claims again) and a rate step not taken;
the work's own commit, which waits, flushes it first, so committed work never outlives it.
"""

import hashlib
import json
import logging
from contextlib import suppress
from dataclasses import dataclass

from chalicelib import encoding, errors
from chalicelib.db import errors as db_errors
from chalicelib.db import scope, transaction
from chalicelib.db.queries import load
from chalicelib.db.scope import tenant_transaction

Q = load("idempotency")
log = logging.getLogger("billing.idempotency")
# Part of every stored fingerprint: changing it invalidates every stored key.
KEY_VERSION = "v1"
MAX_KEY_LENGTH = 255
# A claim older than this is a crashed request (API Gateway gives up after 29 s).
STALE_AFTER_S = 60
# The completion's refusal when the claim was taken over (migration 0023).
SUPERSEDED = "BK001"


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict
    replayed: bool = False


def fingerprint(method: str, path: str, body) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{KEY_VERSION}\n{method}\n{path}\n{canonical}".encode()).hexdigest()


def run(
    request, work, *, status: int = 200, own_transactions: bool = False, then=None, stored=None, before=None
) -> Outcome:
    """Run ``work`` at most once per Idempotency-Key; the body it returns is answered with ``status``.

    ``work(tx)`` runs in the request's tenant transaction and the key completes in the same one, as its
    last statement, with its COMMIT (``work`` ends its statements; nothing of it runs after it returns);
    ``then(body)`` (moving money: a payment, a refund) runs after that commit and its body becomes the
    stored response; if it fails, the committed work and its response stand and the schedules finish
    it, so a retry never does the work twice.
    With ``own_transactions`` it is ``work()`` and commits its own work (the rebill); the key is then
    completed in a transaction of its own afterwards. ``stored(body)`` is what the key keeps, when that
    must be less than the answer (a secret shown once). ``before(tx)`` runs first in a short
    transaction (the claim's, unless the key answers), as its last statement, which takes the COMMIT
    with it (one round trip); its refusal claims nothing (a claim it committed is released).
    """
    tenant_id, key = request.principal.tenant_id, request.idempotency_key
    if key is None:
        return Outcome(status, _after_commit(then, _without_key(tenant_id, work, own_transactions, before)))
    _check_key(key)
    # The route template alone would let one key replay across different ids (cancel A, then B): the path counts.
    path = request.path.format(**request.path_params) if request.path_params else request.path
    claimed = _claim(tenant_id, key, request.method, path, fingerprint(request.method, path, request.body), before)
    if isinstance(claimed, Outcome):
        return claimed

    def complete(tx, body) -> None:
        _complete(tx, key, claimed, status, _kept(stored, body))

    def work_and_complete(tx):
        body = work(tx)
        complete(tx, body)
        return body

    try:
        if own_transactions:
            body = work()
            in_tenant_scope(tenant_id, lambda tx: complete(tx, body), checked=True)
        else:
            body = in_tenant_scope(tenant_id, work_and_complete, checked=True)
    except BaseException:
        _release(tenant_id, key, claimed)
        raise
    settled = _after_commit(then, body)  # ``body`` itself without a ``then``
    if settled is not body:
        _refresh(tenant_id, key, claimed, _kept(stored, settled))
    return Outcome(status, settled)


def _complete(tx, key: str, claimed, status: int, body: str) -> None:
    """The key completes with ``body`` as its transaction's last statement, with the COMMIT; a claim
    taken over meanwhile (as stale, by a retry) is a 409 and the work rolls back with it."""
    try:
        tx.all_then_commit(Q["complete"], key=key, locked_at=claimed, status=status, body=body)
    except db_errors.DatabaseError as exc:
        if exc.code != SUPERSEDED:
            raise
        # The new owner's result stands.
        raise errors.Conflict("this request took too long and was superseded; retry", code="idempotency_retry") from exc


def _refresh(tenant_id, key: str, claimed, body: str) -> None:
    """Store the answer the step after commit settled on, over the one stored at commit."""
    with suppress(Exception):  # the response stored at commit stands: true when it was written
        in_tenant_scope(tenant_id, lambda tx: tx.run(Q["refresh"], key=key, locked_at=claimed, body=body))


def _kept(stored, body) -> str:
    """The answer as the key stores it: all of it, or what ``stored`` keeps of it."""
    return encoding.dumps(stored(body) if stored else body)


def _after_commit(then, body):
    """``then(body)``, or the committed ``body`` if there is no such step or it failed (logged)."""
    if then is None:
        return body
    try:
        return then(body)
    except Exception:  # noqa: BLE001 - committed work stands; what failed here is finished by the schedules
        log.exception("the step after commit failed; the committed result is answered")
        return body


def in_tenant_scope(tenant_id: str, work, *, checked: bool = False):
    """``work(tx)`` in the tenant's scope; retried once if the database asks for it (a serialization
    failure, a deadlock or a lock timeout roll the whole transaction back, so nothing is half done).
    ``checked``: this request's key was just claimed, which only an active tenant's request does (an
    unknown or suspended tenant is refused); the work's transaction does not ask again."""
    for attempt in (1, 2):
        try:
            with transaction(tenant_id=tenant_id) if checked else tenant_transaction(tenant_id) as tx:
                return work(tx)
        except db_errors.RetryableError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise errors.InvalidRequest(
            "invalid Idempotency-Key",
            details=[{"field": "Idempotency-Key", "issue": f"must be 1-{MAX_KEY_LENGTH} printable characters"}],
        )


def _without_key(tenant_id: str, work, own_transactions: bool, before):
    """A request without a key: ``before(tx)`` in a transaction of its own, committed without waiting for
    the WAL flush as a claim's is (lost in a crash, it is a step never taken: the work's commit, which
    waits, flushes it first), then the work; its body."""
    if before is not None:
        with transaction(tenant_id=tenant_id, wait_for_flush=False) as tx:
            before(tx)
    return work() if own_transactions else in_tenant_scope(tenant_id, work)


def _claim(tenant_id: str, key: str, method: str, path: str, digest: str, before=None):
    """The claim's token (its locked_at) when this request now owns the key, else the Outcome to replay.
    ``before(tx)`` runs once the key is claimed, in the same transaction (``_before_claimed``). The claim
    is the transaction's first statement: only an active tenant claims (see the SQL), so the tenant is
    checked (``scope.check``) only when nothing was claimed."""
    with transaction(tenant_id=tenant_id) as tx:  # committed without waiting for the flush (see the SQL)
        claimed = tx.run(Q["claim"], key=key, method=method, path=path, hash=digest, stale_after_s=STALE_AFTER_S)
        if claimed:
            _before_claimed(tx, before, lambda: _release(tenant_id, key, claimed[0][0]))
            return claimed[0][0]
        scope.check(tx)  # an unknown or suspended tenant is refused; an active one's key is taken
        row = tx.one(Q["existing"], key=key)
    if row is None:  # released between our insert and our look: the client may simply retry
        raise errors.Conflict("a request with this Idempotency-Key just failed; retry", code="idempotency_retry")
    if (row["request_method"], row["request_path"], row["request_hash"]) != (method, path, digest):
        raise errors.Conflict(
            "this Idempotency-Key was already used with a different request",
            code="idempotency_key_reused",
        )
    if row["status"] != "complete":
        raise errors.Conflict(
            "a request with this Idempotency-Key is still in progress; retry shortly",
            code="idempotency_request_in_progress",
        )
    return Outcome(row["response_status"], row["response_body"], replayed=True)


def _before_claimed(tx, before, release) -> None:
    """``before(tx)`` as the claim's last statement: it commits the claim with it, so if it then refuses
    (a refusal moved nothing) the claim is released (``release``): a refusal claims nothing. Should the
    release fail, the claim goes stale and is taken over after STALE_AFTER_S."""
    if before is None:
        return
    try:
        before(tx)
    except BaseException:
        if tx.committed:
            release()
        raise


def _release(tenant_id: str, key: str, locked_at) -> None:
    try:
        with tenant_transaction(tenant_id) as tx:
            tx.run(Q["release"], key=key, locked_at=locked_at)
    except Exception:  # noqa: BLE001 - the claim goes stale and is taken over after STALE_AFTER_S
        pass


# --- consumer claims: at-least-once delivery, effects exactly once ------------------


class ClaimedElsewhere(Exception):
    """Another live invocation holds this message's claim: retry the message later."""


def claim_message(tx, consumer: str, message_id: str):
    """Claim ``message_id`` for ``consumer`` in ``tx``: the claim's token, or None when already done."""
    from chalicelib.config import get_settings

    stale_after_s = get_settings().consumer_stale_after_s
    claimed = tx.run(Q["claim_message"], consumer=consumer, message_id=message_id, stale_after_s=stale_after_s)
    if claimed:
        return claimed[0][0]
    if tx.scalar(Q["message_status"], consumer=consumer, message_id=message_id) == "done":
        return None
    raise ClaimedElsewhere(f"{consumer}:{message_id} is being processed by another invocation")


def complete_message(tx, consumer: str, message_id: str, token) -> None:
    if not tx.run(Q["complete_message"], consumer=consumer, message_id=message_id, claimed_at=token):
        raise ClaimedElsewhere(f"{consumer}:{message_id} was taken over while this invocation ran")


def consume_once(tenant_id: str, consumer: str, message_id: str, work) -> bool:
    """Run ``work(tx)`` and record the message done in one transaction; False for a duplicate.

    A concurrent duplicate waits on the claim's row until this commits, then sees
    it done. A failure rolls back the work and the claim together.
    """
    with transaction(tenant_id=tenant_id) as tx:
        token = claim_message(tx, consumer, message_id)
        if token is None:
            return False
        work(tx)
        complete_message(tx, consumer, message_id, token)
    return True


def consume_with_side_effect(tenant_id: str, consumer: str, message_id: str, prepare, effect) -> bool:
    """For work outside the database (an email): claim and commit, act, then mark done.

    ``prepare(tx)`` reads what ``effect(data)`` needs. A failed effect releases the
    claim for the retry; a crash after the effect leaves the claim in progress
    until it goes stale, which is the one window where the effect can repeat.
    """
    with transaction(tenant_id=tenant_id) as tx:
        token = claim_message(tx, consumer, message_id)
        if token is None:
            return False
        data = prepare(tx)
    try:
        effect(data)
    except BaseException:
        with transaction(tenant_id=tenant_id) as tx:
            tx.run(Q["release_message"], consumer=consumer, message_id=message_id, claimed_at=token)
        raise
    with transaction(tenant_id=tenant_id) as tx:
        complete_message(tx, consumer, message_id, token)
    return True
