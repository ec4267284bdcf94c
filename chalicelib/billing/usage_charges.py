"""Metered charges: a period's usage aggregated per metric and priced per the plan.

Pure functions, integer minor units throughout. A usage price is
``{"metric", "aggregation": "sum"|"count"|"max", "unit_amount"}`` (per unit) or
``{..., "tiers": [{"up_to": 1000, "unit_amount": 2}, {"up_to": null, "unit_amount": 1}]}``
(graduated: each unit at the rate of the tier it falls in).
"""

from chalicelib.billing.lines import Line


def aggregate(totals: dict, aggregation: str) -> int:
    """``totals`` holds sum, count and max of one metric's quantities for the period."""
    if aggregation not in ("sum", "count", "max"):
        raise ValueError(f"unknown aggregation {aggregation!r}")
    return int(totals.get(aggregation) or 0)


def price(quantity: int, usage_price: dict) -> int:
    if "tiers" not in usage_price:
        return quantity * usage_price["unit_amount"]
    amount, lower = 0, 0
    for tier in usage_price["tiers"]:
        upper = tier["up_to"]
        in_tier = max(0, (quantity if upper is None else min(quantity, upper)) - lower)
        amount += in_tier * tier["unit_amount"]
        if upper is None or quantity <= upper:
            break
        lower = upper
    return amount


def lines(
    usage_prices: list[dict], totals_by_metric: dict[str, dict], period_start=None, period_end=None
) -> list[Line]:
    """One invoice line per metered price (zero quantities included, as a statement).

    ``period_start``/``period_end`` is the period the usage happened in (the one
    just closed), which the lines carry instead of the invoice's new period.
    """
    result = []
    for usage_price in usage_prices:
        quantity = aggregate(totals_by_metric.get(usage_price["metric"], {}), usage_price["aggregation"])
        amount = price(quantity, usage_price)
        unit = usage_price.get("unit_amount", amount // quantity if quantity else 0)
        description = f"{usage_price['metric']} ({usage_price['aggregation']})"
        result.append(
            Line("usage", description, quantity, unit, amount, usage_price["metric"], period_start, period_end)
        )
    return result
