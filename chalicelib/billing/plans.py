"""Plans: a tenant's price list. A code may have one price per interval (pro monthly, pro yearly), and
each price a flat amount (and usage prices) per currency (``currency_prices``)."""

import json
from dataclasses import dataclass, field

from chalicelib import audit, errors
from chalicelib.billing import currency_prices, tax_rates, usage_charges
from chalicelib.db import errors as db_errors
from chalicelib.db import paging
from chalicelib.db.queries import load

Q = load("plans")


@dataclass(frozen=True)
class NewPlan:
    """One price of a plan code: a flat ``amount`` per interval plus metered ``usage_prices`` (minor units
    of ``currency``), and the same in each currency of ``amounts`` (``currency_prices``)."""

    code: str
    name: str
    interval: str
    currency: str
    amount: int | None = None  # None: ``amounts[currency]``
    amounts: dict = field(default_factory=dict)  # currency -> flat amount (minor units of each)
    interval_count: int = 1
    features: dict = field(default_factory=dict)
    limits: dict = field(default_factory=dict)
    usage_prices: list = field(default_factory=list)
    trial_days: int = 0  # a subscription's default trial
    trial_usage: str = "free"  # usage during a trial: free | billed
    tax_rates: list = field(default_factory=list)  # tax rate ids its lines take (else the account's defaults)


def create(tx, actor, command: NewPlan) -> dict:
    usage_charges.check(command.usage_prices)
    amounts = currency_prices.plan_amounts(command.amount, command.currency, command.amounts, command.usage_prices)
    rates = tax_rates.check_ids(tx, command.tax_rates, "tax_rates")
    try:
        plan = tx.one(
            Q["create"],
            code=command.code,
            name=command.name,
            interval=command.interval,
            interval_count=command.interval_count,
            amount=amounts[command.currency],
            currency=command.currency,
            amounts=json.dumps(amounts),
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
