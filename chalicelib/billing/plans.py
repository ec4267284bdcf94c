"""Plans: a tenant's price list. A code may have one price per interval (pro monthly, pro yearly)."""

import json
from dataclasses import dataclass, field

from chalicelib import audit, errors
from chalicelib.billing import tax_rates
from chalicelib.db import errors as db_errors
from chalicelib.db import paging
from chalicelib.db.queries import load

Q = load("plans")


def _check_tiers(usage_prices: list[dict]) -> None:
    """Graduated tiers must rise strictly and end with an open tier, or units go unpriced."""
    details = []
    for i, usage_price in enumerate(usage_prices):
        tiers = usage_price.get("tiers")
        if not tiers:
            continue
        bounds = [t["up_to"] for t in tiers]
        if bounds[-1] is not None or None in bounds[:-1] or bounds[:-1] != sorted(set(bounds[:-1])):
            details.append(
                {"field": f"usage_prices.{i}.tiers", "issue": "up_to must rise strictly and only the last may be null"}
            )
    if details:
        raise errors.InvalidRequest("invalid tiers", details=details)


@dataclass(frozen=True)
class NewPlan:
    """One price of a plan code: a flat ``amount`` per interval plus metered ``usage_prices`` (minor units)."""

    code: str
    name: str
    interval: str
    amount: int
    currency: str
    interval_count: int = 1
    features: dict = field(default_factory=dict)
    limits: dict = field(default_factory=dict)
    usage_prices: list = field(default_factory=list)
    trial_days: int = 0  # a subscription's default trial
    trial_usage: str = "free"  # usage during a trial: free | billed
    tax_rates: list = field(default_factory=list)  # tax rate ids its lines take (else the account's defaults)


def create(tx, actor, command: NewPlan) -> dict:
    _check_tiers(command.usage_prices)
    rates = tax_rates.check_ids(tx, command.tax_rates, "tax_rates")
    try:
        plan = tx.one(
            Q["create"],
            code=command.code,
            name=command.name,
            interval=command.interval,
            interval_count=command.interval_count,
            amount=command.amount,
            currency=command.currency,
            features=json.dumps(command.features),
            limits=json.dumps(command.limits),
            usage_prices=json.dumps(command.usage_prices),
            trial_days=command.trial_days,
            trial_usage=command.trial_usage,
            tax_rates=rates,
        )
    except db_errors.UniqueViolation as exc:
        raise errors.Conflict(
            f"plan {command.code!r} already has a {command.interval} price", code="plan_exists"
        ) from exc
    audit.record(tx, actor, "plan.created", "plan", plan["id"], {"code": plan["code"]})
    return plan


def list_page(tx, page: paging.PageRequest) -> dict:
    paging.check_cursor(tx, Q["exists"], page, "plan")
    rows = tx.all(Q["list"], after=page.starting_after, limit=page.limit + 1)
    return paging.page(rows, page, "/v1/plans")


def find(tx, code: str, interval: str | None = None) -> dict | None:
    return tx.one(Q["find_for_cycle"], code=code, interval=interval)
