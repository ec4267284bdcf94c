"""Subscriptions as the API shows them: one shape for GET, lists and the objects events carry.

Kept apart from ``subscriptions`` (which changes them) so that the billing engine, which
``subscriptions`` calls, can describe a subscription in its events without an import cycle.
"""

from chalicelib import encoding, errors
from chalicelib.billing import accounts, calendar, currency_prices
from chalicelib.db import paging
from chalicelib.db.queries import load

Q = load("subscription_views")


def get(tx, subscription_id: str) -> dict:
    subscription = tx.one(Q["list"], id=subscription_id, ids=None, account_id=None, status=None, after=None, limit=1)
    if subscription is None:
        raise errors.NotFound("no such subscription")
    return view(subscription)


def get_many(tx, subscription_ids: list[str]) -> dict[str, dict]:
    """Several subscriptions as ``get`` shows each, by id, in one statement (a billing round's events)."""
    if not subscription_ids:
        return {}
    ids = sorted(set(subscription_ids))
    rows = tx.all(Q["list"], id=None, ids=encoding.dumps(ids), account_id=None, status=None, after=None, limit=len(ids))
    return {str(row["id"]): view(row) for row in rows}


def view(row: dict) -> dict:
    """The API's subscription: its price in the account's currency, a scheduled change and a pause as
    objects of their own."""
    plan = {"amount": row["amount"], "currency": row["currency"], "amounts": row.pop("amounts")}
    price = currency_prices.in_currency(plan, row.pop("account_currency"))
    row["amount"], row["currency"] = price["amount"], price["currency"]
    change, behavior = row.pop("pending_change"), row.pop("pause_behavior")
    paused_at, resumes_at = row.pop("paused_at"), row.pop("resumes_at")
    row["pending_change"] = None
    if change is not None:
        row["pending_change"] = {**public_terms(change), "effective_at": row["current_period_end"]}
    row["pause"] = (
        None if behavior is None else {"behavior": behavior, "paused_at": paused_at, "resumes_at": resumes_at}
    )
    row["pending_prorations"] = [{"object": "proration", **line} for line in row["pending_prorations"]]
    return row


def public_terms(terms: dict) -> dict:
    """Price terms as the API shows them (a scheduled change, a change's event)."""
    cycle = calendar.CYCLE_OF[terms["interval"]]
    return {
        "plan": terms["plan_code"],
        "billing_cycle": cycle,
        "quantity": terms["quantity"],
        "amount": terms["amount"],
    }


def list_page(tx, page: paging.PageRequest, *, account_id: str | None = None, status: str | None = None) -> dict:
    accounts.check_visible(tx, account_id)
    paging.check_cursor(tx, Q["exists"], page, "subscription")
    after, limit = page.starting_after, page.limit + 1
    rows = tx.all(Q["list"], id=None, ids=None, account_id=account_id, status=status, after=after, limit=limit)
    return paging.page([view(row) for row in rows], page, "/v1/subscriptions")
