"""Accounts: a tenant's billable customers, their status and when they are next billed."""

import json

from chalicelib import audit, errors, pagination
from chalicelib.billing import plans
from chalicelib.db.queries import load

Q = load("accounts")


def create(tx, request) -> tuple[int, dict]:
    body = request.body
    plan_id = None
    if body.get("plan"):
        plan = plans.find(tx, body["plan"])
        if plan is None:
            raise errors.InvalidRequest("no such plan", details=[{"field": "plan", "issue": "no such plan"}])
        if plan["currency"] != body["currency"]:
            raise errors.InvalidRequest(
                "the plan is priced in another currency",
                details=[{"field": "currency", "issue": f"plan {plan['code']!r} is priced in {plan['currency']}"}],
            )
        plan_id = plan["id"]
    account_id = tx.scalar(
        Q["create"],
        email=body["email"],
        name=body["name"],
        currency=body["currency"],
        plan_id=plan_id,
        metadata=json.dumps(body.get("metadata", {})),
    )
    audit.record(tx, request.principal, "account.created", "account", account_id)
    return 201, get(tx, account_id)


def get(tx, account_id: str) -> dict:
    account = tx.one(Q["get"], id=pagination.parse_id(account_id, "id"))
    if account is None:
        raise errors.NotFound("no such account")
    return account


def lock(tx, account_id: str) -> dict:
    """The account row, locked for this transaction; 404 when absent (or another tenant's)."""
    account = tx.one(Q["get_for_update"], id=account_id)
    if account is None:
        raise errors.NotFound("no such account")
    return account


def start_billing(tx, account_id, plan_id, *, anchor, next_billing_at) -> None:
    """A new subscription bills the account from ``anchor``; its first renewal is ``next_billing_at``."""
    tx.run(Q["start_billing"], id=account_id, plan_id=plan_id, anchor=anchor, next_billing_at=next_billing_at)


def list_page(tx, page: pagination.PageRequest) -> dict:
    pagination.check_cursor(tx, Q["exists"], page, "account")
    rows = tx.all(Q["list"], after=page.starting_after, limit=page.limit + 1)
    return pagination.page(rows, page, "/v1/accounts")
