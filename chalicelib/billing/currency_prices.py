"""A plan's prices per currency: which ones a plan may carry (``plan_amounts``, at plan creation) and
which one an account pays (``in_currency``, wherever a subscription's terms are read). Pure: no I/O.

One plan code carries a price per currency, as a Stripe Price carries ``currency`` and
``currency_options``: the default currency's flat ``amount`` and usage prices' own money fields,
plus ``amounts`` (the flat amount in each other currency, ``{"EUR": 4500}``) and each usage
price's ``currency_options`` (its money fields in each of those currencies,
``{"EUR": {"unit_amount": 2}}``). A plan with usage prices gives every usage price a price in
every currency of ``amounts``, so a plan either has a whole price in a currency or none.

The account's currency picks the price (``in_currency``): the plan price's amount, currency
and usage prices in that currency, which is what ``periods.Subscription`` bills from, so the
daily round, a first bill, a change, a final bill and a preview all bill the same figures. A
currency the plan has no price in is a 422 ``currency_not_offered``. Amounts are integer minor
units of their own currency (its ISO 4217 exponent); nothing is converted between currencies.
"""

from collections.abc import Mapping

from chalicelib import errors
from chalicelib.billing import usage_charges

# A usage price's fields that are money, so differ per currency: a ``currency_options`` entry
# gives these (and only these) in its currency, and replaces them there. Extend it with each
# price model's money field (plan_create.json's ``currency_options`` lists the same fields; a
# unit test compares the two).
MONEY_FIELDS = ("unit_amount", "tiers", "fixed_amount", "min_amount", "max_amount")


def in_currency(plan: Mapping, currency: str) -> dict:
    """The price ``plan`` (a plan row or a subscription's terms: ``amount``, ``currency``, ``amounts``,
    ``usage_prices``) charges in ``currency``: ``{"amount", "currency", "usage_prices"}``, its usage
    prices with their money fields in that currency (no ``currency_options`` left on them).
    UnprocessableState ``currency_not_offered`` when the plan has no price in ``currency``."""
    usage_prices = list(plan.get("usage_prices") or ())
    if currency == plan["currency"]:
        return {"amount": plan["amount"], "currency": currency, "usage_prices": [_own(p) for p in usage_prices]}
    amounts = plan.get("amounts") or {}
    priced = [_option(p, currency) for p in usage_prices]
    if currency not in amounts or None in priced:
        offered = ", ".join(sorted({plan["currency"], *amounts}))
        raise errors.UnprocessableState(
            f"the plan has no price in {currency} (it is priced in {offered})", code="currency_not_offered"
        )
    return {"amount": amounts[currency], "currency": currency, "usage_prices": priced}


def offered(plan: Mapping) -> list[str]:
    """The currencies ``plan`` has a price in, its default first."""
    return [plan["currency"], *sorted(set(plan.get("amounts") or {}) - {plan["currency"]})]


def _own(price: Mapping) -> dict:
    return {k: v for k, v in price.items() if k != "currency_options"}


def _option(price: Mapping, currency: str) -> dict | None:
    option = (price.get("currency_options") or {}).get(currency)
    if option is None:
        return None
    kept = {k: v for k, v in _own(price).items() if k not in MONEY_FIELDS}
    return {**kept, **{k: option[k] for k in MONEY_FIELDS if k in option}}


def plan_amounts(amount: int | None, currency: str, amounts: Mapping, usage_prices: list) -> dict[str, int]:
    """A new plan price's flat amount per currency, its default currency's included: ``amount`` in
    ``currency`` and ``amounts`` (which may give the default's instead of ``amount``, but not another
    figure). Every usage price must carry its money fields in each other currency, and only those.
    InvalidRequest naming each field otherwise."""
    details = []
    if amount is None and currency not in amounts:
        details.append({"field": "amount", "issue": f"is required, unless amounts gives the {currency} price"})
    elif amount is not None and amounts.get(currency, amount) != amount:
        details.append({"field": f"amounts.{currency}", "issue": "must equal amount, the price in currency"})
    extra = sorted(set(amounts) - {currency})
    for i, price in enumerate(usage_prices):
        details += _option_issues(f"usage_prices.{i}.currency_options", price, currency, extra)
    if details:
        raise errors.InvalidRequest("invalid prices per currency", details=details)
    return {currency: amounts.get(currency, amount), **{code: amounts[code] for code in extra}}


def _option_issues(path: str, price: Mapping, currency: str, extra: list[str]) -> list[dict]:
    """What is wrong with one usage price's ``currency_options`` for a plan priced in ``extra`` currencies."""
    options = price.get("currency_options") or {}
    issues = [
        {"field": f"{path}.{code}", "issue": f"is required: the plan has a {code} price (amounts)"}
        for code in extra
        if code not in options
    ]
    for code in sorted(options):
        if code == currency:
            issues.append({"field": f"{path}.{code}", "issue": "is the price's own currency: set its fields directly"})
        elif code not in extra:
            issues.append({"field": f"{path}.{code}", "issue": f"the plan has no {code} price: add it to amounts"})
        else:
            issues += _money_issues(f"{path}.{code}", price, options[code])
    return issues


def _money_issues(path: str, price: Mapping, option: Mapping) -> list[dict]:
    """A currency option gives exactly the price's money fields; its tiers have the price's bounds and fields."""
    issues = [
        {"field": f"{path}.{name}", "issue": f"is required: the price has {name}"}
        for name in MONEY_FIELDS
        if name in price and name not in option
    ]
    issues += [
        {"field": f"{path}.{name}", "issue": f"is not allowed: the price has no {name}"}
        for name in MONEY_FIELDS
        if name in option and name not in price
    ]
    tiers, own = option.get("tiers"), price.get("tiers")
    if tiers is not None and own is not None:
        same = [t.get("up_to") for t in tiers] == [t.get("up_to") for t in own]
        if not same or any(set(t) != set(o) for t, o in zip(tiers, own, strict=True)):
            issues.append({"field": f"{path}.tiers", "issue": "must have the price's tiers: the same up_to and fields"})
    if issues:
        return issues
    # The price in this currency follows the price's own rules too (rising tiers, min <= max, ...).
    priced = {**{k: v for k, v in _own(price).items() if k not in MONEY_FIELDS}, **option}
    return [
        {"field": f"{path}.{name}", "issue": issue}
        for name, issue in usage_charges.problems(priced)
        if name.split(".")[0] in MONEY_FIELDS
    ]
