"""Accounts: a tenant's billable customers, their status and when they are next billed."""

import json
from dataclasses import dataclass, field

from chalicelib import audit, errors, outbox
from chalicelib.billing import currency_prices, plans, tax_rates, tenant_limits
from chalicelib.db import paging
from chalicelib.db.queries import load

Q = load("accounts")


@dataclass(frozen=True)
class NewAccount:
    email: str
    name: str
    currency: str
    plan: str | None = None
    metadata: dict = field(default_factory=dict)
    default_tax_rates: list = field(default_factory=list)  # tax rate ids (``tax_rates.check_ids``)


def create(tx, actor, command: NewAccount) -> dict:
    plan_id = None
    if command.plan:
        plan = plans.find(tx, command.plan)
        if plan is None:
            raise errors.InvalidRequest("no such plan", details=[{"field": "plan", "issue": "no such plan"}])
        if command.currency not in currency_prices.offered(plan):
            priced = ", ".join(currency_prices.offered(plan))
            raise errors.InvalidRequest(
                "the plan has no price in this currency",
                details=[{"field": "currency", "issue": f"plan {plan['code']!r} is priced in {priced}"}],
            )
        plan_id = plan["id"]
    rates = tax_rates.check_ids(tx, command.default_tax_rates, "default_tax_rates")
    tenant_limits.enforce(tx, "accounts", lambda cap: tx.scalar(Q["count_upto"], cap=cap))
    account_id = tx.scalar(
        Q["create"],
        email=command.email,
        name=command.name,
        currency=command.currency,
        plan_id=plan_id,
        metadata=json.dumps(command.metadata),
        default_tax_rates=rates,
    )
    audit.record(tx, actor, "account.created", "account", account_id)
    account = get(tx, account_id)
    outbox.add(tx, "account.created", {"accountId": str(account_id), "status": account["status"]}, account)
    return account


def get(tx, account_id: str) -> dict:
    account = tx.one(Q["get"], id=account_id)
    if account is None:
        raise errors.NotFound("no such account")
    return account


def set_default_tax_rates(tx, actor, account_id: str, rate_ids: list[str]) -> dict:
    """The tax rates the account's invoices take from now on (unless a plan price has its own)."""
    rates = tax_rates.check_ids(tx, rate_ids, "default_tax_rates")
    lock(tx, account_id)
    tx.run(Q["set_default_tax_rates"], id=account_id, rates=rates)
    audit.record(tx, actor, "account.updated", "account", account_id, {"default_tax_rates": rates})
    return get(tx, account_id)


def find_locked(tx, account_id: str) -> dict | None:
    """The account's billing state, locked for this transaction; None when absent (or another tenant's)."""
    return tx.one(Q["get_for_update"], id=account_id)


def lock(tx, account_id: str) -> dict:
    """The account row, locked for this transaction; 404 when absent (or another tenant's)."""
    account = find_locked(tx, account_id)
    if account is None:
        raise errors.NotFound("no such account")
    return account


def check_visible(tx, account_id: str | None, field_name: str = "account_id") -> None:
    """An account id (a list filter) naming no visible account is a 404, as the account's own URL is."""
    paging.check_exists(tx, Q["exists"], account_id, field_name, "account")


def start_billing(tx, account_id, plan_id, *, anchor, next_billing_at) -> None:
    """A new subscription bills the account from ``anchor``; its first renewal is ``next_billing_at``."""
    tx.run(Q["start_billing"], id=account_id, plan_id=plan_id, anchor=anchor, next_billing_at=next_billing_at)


def list_page(tx, page: paging.PageRequest) -> dict:
    paging.check_cursor(tx, Q["exists"], page, "account")
    rows = tx.all(Q["list"], after=page.starting_after, limit=page.limit + 1)
    return paging.page(rows, page, "/v1/accounts")
