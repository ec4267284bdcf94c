"""An account's entitlements: what its current plan grants, and how much of each metered limit the
current billing period has used.

``features`` are the plan's own (``plans.features``), as a list. Each metered price of the plan is a
``limits`` entry: its ``limit`` is the price's ``hard_cap`` (enforced: events past it are rejected,
``hard_cap: true``), else the plan's ``limits[metric]`` when that is a whole number (informational:
usage past it is billed), else null (unlimited); ``used`` is the period's quantity as its invoice
will count it (``invoicing.usage_totals``, the invoice's own statement, priced by ``usage_charges.lines``:
the quantities of the price's lines, summed over its ``group_by`` groups),
and ``remaining`` what is left of the limit (never below 0). An account with no live subscription
is entitled to nothing: no plan, no period, empty lists.
"""

from chalicelib import errors
from chalicelib.billing import invoicing, usage_charges
from chalicelib.db.queries import load

Q = load("entitlements")


def of_account(tx, account_id: str) -> dict:
    """The account's entitlements now; 404 for an account the tenant cannot see."""
    current = tx.one(Q["current_plan"], id=account_id)
    if current is None:
        raise errors.NotFound("no such account")
    entitlements = {"object": "account_entitlements", "account": str(current["account_id"])}
    if current["subscription_id"] is None:
        return {**entitlements, "plan": None, "subscription": None, "period": None, "features": [], "limits": []}
    start, end = current["current_period_start"], current["current_period_end"]
    window = (entitlements["account"], start, end, current["usage_prices"])
    totals = invoicing.usage_totals(tx, [window])[entitlements["account"]]
    return {
        **entitlements,
        "plan": current["plan"],
        "subscription": str(current["subscription_id"]),
        "period": {"start": start, "end": end},
        "features": [{"feature": name, "value": value} for name, value in sorted(current["features"].items())],
        "limits": [
            _limit(price, current["limits"], totals[i] if i < len(totals) else [])
            for i, price in enumerate(current["usage_prices"])
        ],
    }


def _limit(price: dict, plan_limits: dict, groups: list) -> dict:
    metric, aggregation = price["metric"], price["aggregation"]
    used = sum(line.quantity for line in usage_charges.lines([price], [groups]))
    soft = plan_limits.get(metric)
    limit = price.get("hard_cap", soft if isinstance(soft, int) and not isinstance(soft, bool) else None)
    return {
        "metric": metric,
        "aggregation": aggregation,
        "limit": limit,
        "used": used,
        "remaining": None if limit is None else max(limit - used, 0),
        "hard_cap": "hard_cap" in price,
    }
