"""Tenant plan limits: what the platform's plan a tenant is on (``tenants.plan_tier``, a row of
``platform_plans``) allows, enforced where the limited things are made.

* ``enforce(tx, limit, in_use)``: one more account, webhook endpoint or API client, or a 403
  (``Forbidden``, code ``{limit}_limit_reached``) naming the limit and its number. Counted under a
  per-tenant, per-limit transaction lock, so concurrent creations never both take the last place.
  An unlimited tier (NULL) takes no lock and counts nothing.
* ``admit_usage(tx)``: the tier's request rate on usage ingestion, shared by every Lambda container
  through one row per tenant; over it, a 429 (``RateLimited``, code ``usage_rate_limit_exceeded``),
  answered with ``Retry-After: 1`` by the one error table (``chalicelib.http``): a refused request's
  wait is at most one interval of a rate of at least one request a second, so one second, rounded
  up, is the exact answer. The route runs it through ``idempotency.run(before=...)``: in a short
  transaction before the work (the key's claim, when there is one), so a replay spends nothing.
* ``require_tier(tx, tier)``: a tier a new tenant may be put on.
"""

from collections.abc import Callable

from chalicelib import errors
from chalicelib.db.queries import load

Q = load("tenant_limits")
# What a tenant may have a limited number of, and how its limit reads in a message.
LIMITS = {"accounts": "accounts", "webhook_endpoints": "webhook endpoints", "api_clients": "API clients"}


def enforce(tx, limit: str, in_use: int | Callable[[int], int]) -> None:
    """Refuse (403, ``{limit}_limit_reached``) making one more of ``limit`` when the tenant's tier allows
    no more; call it in the transaction that then makes it, before the insert.

    ``in_use(cap)`` counts the ones the tenant has now, and may stop counting at ``cap``; it runs
    after the lock, so it sees every concurrent creation that committed before this one. A number
    instead must have been counted under the same lock, taken by the caller first (the key is
    ``'{limit}:{tenant id}'``, see ``tenant_limits.sql``'s ``lock``; taking it twice is harmless).
    """
    if limit not in LIMITS:
        raise ValueError(f"unknown tenant limit {limit!r}")
    row = tx.one(Q["cap"], column=f"max_{limit}")
    cap = row["cap"] if row else None
    if cap is None:
        return
    tx.run(Q["lock"], limit=limit)
    if (in_use(cap) if callable(in_use) else in_use) >= cap:
        raise errors.Forbidden(
            f"the {row['tier']} plan allows at most {cap} {LIMITS[limit]}", code=f"{limit}_limit_reached"
        )


def admit_usage(tx) -> None:
    """Count one usage-ingestion request against the tenant's rate, or refuse it (429), in ``tx``.

    One statement on the tenant's rate row, the last of ``tx``, which it commits (the COMMIT in the same
    flush: one round trip): call it in a short transaction before the request's work (never a lock held
    through a batch), and concurrent batches of one tenant queue on the row for that statement only. A
    refused request moves nothing, but what else ``tx`` held (the key's claim) is committed with it, so
    the caller undoes that on a refusal (``idempotency``: the claim is released).
    """
    rows = tx.all_then_commit(Q["admit_usage_request"])
    row = rows[0] if rows else None
    if row is not None and not row["admitted"]:
        raise errors.RateLimited(
            f"the {row['tier']} plan takes at most {row['rate']} usage requests a second; retry shortly",
            code="usage_rate_limit_exceeded",
        )


def require_tier(tx, tier: str) -> None:
    """Refuse (400 on ``plan``) a tier the platform does not sell."""
    tiers = [row[0] for row in tx.run(Q["tiers"])]
    if tier not in tiers:
        named = f"{', '.join(tiers[:-1])} or {tiers[-1]}" if len(tiers) > 1 else "".join(tiers)
        issue = f"must be a platform plan: {named}"
        raise errors.InvalidRequest("no such platform plan", details=[{"field": "plan", "issue": issue}])
