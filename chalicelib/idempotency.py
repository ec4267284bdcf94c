"""Idempotency-Key for POSTs, with Stripe's semantics, stored in PostgreSQL.

States follow Powertools: a key is claimed ``in_progress`` in a short transaction
of its own (so a concurrent duplicate sees it at once and gets a retryable 409),
then completed with the response in the same transaction as the business write
(Lago): either both commit or neither does. A request that fails releases its
claim so a retry runs again. A retry with the same key and body replays the
stored response; a different body (or route) with the key is a 409. Keys are per
tenant and expire after 24 hours. Validation happens before the claim, so an
invalid request stores nothing.
"""

import hashlib
import json
from dataclasses import dataclass

from chalicelib import encoding, errors
from chalicelib.billing import tenants
from chalicelib.db.queries import load

Q = load("idempotency")
# Part of every stored fingerprint: changing it invalidates every stored key.
KEY_VERSION = "v1"
MAX_KEY_LENGTH = 255
# A claim older than this is a crashed request (API Gateway gives up after 29 s).
STALE_AFTER_S = 60


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict
    replayed: bool = False


def fingerprint(method: str, path: str, body) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{KEY_VERSION}\n{method}\n{path}\n{canonical}".encode()).hexdigest()


def run(request, action) -> Outcome:
    """Run ``action(tx, request) -> (status, body)`` at most once per Idempotency-Key."""
    tenant_id = request.principal.tenant_id
    key = request.idempotency_key
    if key is None:
        with tenants.active(tenant_id) as tx:
            status, body = action(tx, request)
        return Outcome(status, body)
    _check_key(key)
    digest = fingerprint(request.method, request.path, request.body)
    replay = _claim(tenant_id, key, request.method, request.path, digest)
    if replay is not None:
        return replay
    try:
        with tenants.active(tenant_id) as tx:
            status, body = action(tx, request)
            tx.run(Q["complete"], key=key, status=status, body=encoding.dumps(body))
    except BaseException:
        _release(tenant_id, key)
        raise
    return Outcome(status, body)


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise errors.InvalidRequest(
            "invalid Idempotency-Key",
            details=[{"field": "Idempotency-Key", "issue": f"must be 1-{MAX_KEY_LENGTH} printable characters"}],
        )


def _claim(tenant_id: str, key: str, method: str, path: str, digest: str) -> Outcome | None:
    with tenants.active(tenant_id) as tx:
        if tx.run(Q["claim"], key=key, method=method, path=path, hash=digest, stale_after_s=STALE_AFTER_S):
            return None
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


def _release(tenant_id: str, key: str) -> None:
    try:
        with tenants.active(tenant_id) as tx:
            tx.run(Q["release"], key=key)
    except Exception:  # noqa: BLE001 - the claim goes stale and is taken over after STALE_AFTER_S
        pass
