"""Metered charges: a plan's usage prices, what makes one valid, and a period's usage priced as lines.

Pure functions, integer minor units out. A usage price is ``{"metric", "aggregation", "model", ...}``:

* aggregation (how the period's events of ``metric`` become a quantity; SQL ``billing_usage``, migration
  0018, computes it exactly): ``sum``, ``count``, ``max``, ``unique_count`` (distinct values of
  ``field``), ``latest`` (the last value by ``occurred_at``), ``weighted_sum`` (a gauge's time-weighted
  average). Each over ``field`` (a key of the event's ``properties``; without it the event's
  ``quantity``), only the events whose properties match ``filters``, one line per value of ``group_by``.
* model (how a quantity becomes an amount): ``per_unit`` (``unit_amount`` each), ``graduated`` (each
  unit at the rate of the tier it falls in, plus the ``flat_amount`` of every tier it enters),
  ``volume`` (every unit at the rate of the tier the whole quantity reaches, plus that tier's
  ``flat_amount``), ``package`` (``unit_amount`` per started block of ``package_size`` units after
  ``free_units``), ``percentage`` (``rate`` percent of the summed ``field``, plus ``fixed_amount`` per
  event, each event's fee clamped to ``min_amount``..``max_amount``). A price without ``model`` is
  ``per_unit`` with ``unit_amount``, ``graduated`` with ``tiers``, as plans made before models were.

Rounding: the amount is computed exactly (a time-weighted quantity is a fraction, a percentage of an
amount too) and rounded once per line by ``lines.round_half_even``; the line's quantity is the exact
quantity rounded the same way, its ``unit_amount`` the price's own for ``per_unit`` and the line's
amount over its quantity, rounded, for the other models. No usage, no charge: a zero quantity is 0
(a percentage price's fees are per event: events of amount 0 still owe a fixed or minimum fee).
"""

from fractions import Fraction
from math import ceil

from chalicelib import errors
from chalicelib.billing.lines import Line, round_half_even

MODELS = ("per_unit", "graduated", "volume", "package", "percentage")
AGGREGATIONS = ("sum", "count", "max", "unique_count", "latest", "weighted_sum")
# The fields each model takes besides metric, aggregation, field, filters, group_by and hard_cap.
_REQUIRED = {
    "per_unit": ("unit_amount",),
    "graduated": ("tiers",),
    "volume": ("tiers",),
    "package": ("unit_amount", "package_size"),
    "percentage": ("rate", "field"),
}
_OPTIONAL = {"package": ("free_units",), "percentage": ("fixed_amount", "min_amount", "max_amount")}
_MODEL_FIELDS = {"unit_amount", "tiers", "package_size", "free_units", "rate", "fixed_amount", "min_amount"}
_MODEL_FIELDS |= {"max_amount"}


def model_of(usage_price: dict) -> str:
    """The price's model: its own, else what its fields said before models had names."""
    return usage_price.get("model") or ("graduated" if "tiers" in usage_price else "per_unit")


def aggregate(totals: dict, aggregation: str) -> int:
    """``totals`` holds sum, count and max of one metric's quantities (a hard cap's running counter)."""
    if aggregation not in ("sum", "count", "max"):
        raise ValueError(f"unknown aggregation {aggregation!r}")
    return int(totals.get(aggregation) or 0)


def quantity(group: dict) -> Fraction:
    """A group's exact quantity as ``billing_usage`` gives it (a time-weighted one as a fraction)."""
    if "numerator" in group:
        return Fraction(int(group["numerator"]), int(group["denominator"]))
    return Fraction(group.get("quantity") or 0)


def price(units: Fraction | int, usage_price: dict, group: dict | None = None) -> Fraction:
    """The exact amount of ``units`` of usage (``group``: the fees a percentage price was given)."""
    model = model_of(usage_price)
    if model == "percentage":  # events of amount 0 may still owe their fixed or minimum fee
        return Fraction((group or {}).get("fees_numerator", "0")) / int((group or {}).get("fees_denominator", 100))
    if units <= 0:
        return Fraction(0)
    if model == "per_unit":
        return units * usage_price["unit_amount"]
    if model == "package":
        billable = max(units - usage_price.get("free_units", 0), 0)
        return ceil(Fraction(billable) / usage_price["package_size"]) * Fraction(usage_price["unit_amount"])
    if model == "volume":
        tier = next(t for t in usage_price["tiers"] if t["up_to"] is None or units <= t["up_to"])
        return units * tier["unit_amount"] + tier.get("flat_amount", 0)
    return _graduated(units, usage_price["tiers"])


def _graduated(units: Fraction | int, tiers: list[dict]) -> Fraction:
    amount, lower = Fraction(0), 0
    for tier in tiers:
        upper = tier["up_to"]
        in_tier = (units if upper is None else min(units, upper)) - lower
        if in_tier <= 0:
            break
        amount += in_tier * tier["unit_amount"] + tier.get("flat_amount", 0)
        if upper is None or units <= upper:
            break
        lower = upper
    return amount


def lines(usage_prices: list[dict], usage, period_start=None, period_end=None) -> list[Line]:
    """One invoice line per usage price and group (a price without usage: one zero line, as a statement).

    ``usage`` is ``billing_usage``'s answer (a list of groups per price, by index; None: no usage).
    ``period_start``/``period_end`` is the period the usage happened in (the one just closed), which
    the lines carry instead of the invoice's new period.
    """
    usage = usage if isinstance(usage, list) else []
    result = []
    for index, usage_price in enumerate(usage_prices):
        groups = usage[index] if index < len(usage) and usage[index] else [{"group": None}]
        ordered = sorted(groups, key=lambda g: (g.get("group") is None, g.get("group") or ""))
        result += [_line(usage_price, group, period_start, period_end) for group in ordered]
    return result


def _line(usage_price: dict, group: dict, period_start, period_end) -> Line:
    exact = quantity(group)
    amount = round_half_even(price(exact, usage_price, group))
    units = round_half_even(exact)
    if model_of(usage_price) == "per_unit":
        unit = usage_price["unit_amount"]
    else:
        unit = round_half_even(Fraction(amount, units)) if units else 0
    description = f"{usage_price['metric']} ({usage_price['aggregation']}{_group_name(usage_price, group)})"
    return Line("usage", description, units, unit, amount, usage_price["metric"], period_start, period_end)


def _group_name(usage_price: dict, group: dict) -> str:
    if "group_by" not in usage_price:
        return ""
    value = group.get("group")
    return f", no {usage_price['group_by']}" if value is None else f", {usage_price['group_by']}: {value}"


def check(usage_prices: list[dict]) -> None:
    """What the schema cannot say about a plan's usage prices: each model's fields, rising tiers, a
    rate of at most 100 percent, min <= max, and hard caps only where the running counter is the invoice's
    own aggregate. InvalidRequest (``invalid_usage_price``) naming every field at fault."""
    details = [
        {"field": f"usage_prices.{i}{'.' + name if name else ''}", "issue": issue}
        for i, usage_price in enumerate(usage_prices)
        for name, issue in problems(usage_price)
    ]
    if details:
        raise errors.InvalidRequest("invalid usage prices", details=details, code="invalid_usage_price")


def problems(usage_price: dict) -> list[tuple[str, str]]:
    """What is wrong with one usage price, as (field within the price, issue): ``check``'s, and a price's
    money in another currency's (``currency_prices``)."""
    if "model" not in usage_price and ("unit_amount" in usage_price) == ("tiers" in usage_price):
        return [("", "must have exactly one of unit_amount or tiers")]
    model = model_of(usage_price)
    allowed = set(_REQUIRED[model]) | set(_OPTIONAL.get(model, ()))
    problems = [(name, f"is required by the {model} model") for name in _REQUIRED[model] if name not in usage_price]
    problems += [
        (name, f"is not a field of the {model} model")
        for name in sorted(_MODEL_FIELDS - allowed)
        if name in usage_price
    ]
    return problems + _tier_problems(usage_price) + _rule_problems(usage_price, model)


def _tier_problems(usage_price: dict) -> list[tuple[str, str]]:
    tiers = usage_price.get("tiers")
    if not tiers:
        return []
    bounds = [t["up_to"] for t in tiers]
    if bounds[-1] is not None or None in bounds[:-1] or bounds[:-1] != sorted(set(bounds[:-1])):
        return [("tiers", "up_to must rise strictly and only the last may be null")]
    return []


def _rule_problems(usage_price: dict, model: str) -> list[tuple[str, str]]:
    aggregation, problems = usage_price["aggregation"], []
    if aggregation == "unique_count" and "field" not in usage_price:
        problems.append(("field", "is required by the unique_count aggregation"))
    if model == "percentage" and aggregation != "sum":
        problems.append(("aggregation", "must be sum for the percentage model (a rate of the summed field)"))
    if "rate" in usage_price and Fraction(usage_price["rate"]) > 100:
        problems.append(("rate", "must be at most 100 (percent)"))
    if usage_price.get("min_amount", 0) > usage_price.get("max_amount", usage_price.get("min_amount", 0)):
        problems.append(("min_amount", "must not exceed max_amount"))
    plain = aggregation in ("sum", "count", "max") and not {"field", "filters", "group_by"} & set(usage_price)
    if "hard_cap" in usage_price and (not plain or model == "percentage"):
        problems.append(
            ("hard_cap", "applies only to sum, count or max of the quantity without field, filters or group_by")
        )
    return problems
