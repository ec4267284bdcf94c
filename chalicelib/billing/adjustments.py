"""Discounts and taxes on an invoice's lines: one pure function, ``apply``, and the invoice's sums.

Every invoice's lines pass through ``apply`` before they are written (``invoicing``: a round's
bills, a change's, a first or final bill, a one-off invoice, a held draft being finalized) and
``engine.preview`` calls it the same way, so an upcoming invoice equals the one issued. What it
applies comes from migration 0020's ``billing_adjustments`` hook (read with the billing state)::

    {"tax_rates": {"account": [rate], "plans": {plan id: [rate]}},
     "discounts": [{id, scope, coupon, name, percent_off, amount_off, currency, duration,
                    periods_left, plans}]}

The rules, all in integer minor units, every non-whole amount rounded once per line by
``lines.round_half_even`` (exact fractions, ties to even):

- **Which discount**: a charge line takes the first eligible discount in the list (the
  subscription's, then the account's). Eligible: a line with a positive amount; the coupon's
  ``plans`` (null: any) include the plan the invoice bills; an invoice item only for an
  account's discount without ``plans``. Discounts come before tax.
- **Percent**: per line ``round_half_even(amount x percent_off / 100)``.
- **Fixed** (``amount_off``, in the invoice's currency only): taken from the eligible lines in
  line order, each line at most its amount, until the amount is used up.
- Never negative: a discount is at most its line's amount, and all the discounts together at
  most the charge lines' sum (an invoice whose credits exceed its charges gets none; trimmed
  from the last line discounted).
- **Tax per line**, on the line's amount after its discount (``taxable``), for each of its
  rates (its plan price's if it has any, else the account's defaults; invoice items the
  account's). Exclusive: ``tax = round_half_even(taxable x p)``, added on top. Inclusive: the
  price contains the tax: ``net = round_half_even(taxable / (1 + sum of inclusive p))``, the
  inclusive tax is ``taxable - net`` (split over several inclusive rates by
  ``round_half_even(net x p)``, the last taking the remainder), and exclusive rates on the same
  line are charged on ``net``. So 1000 at 19% inclusive is 840 + 160 exactly. A credit's tax is
  negative (symmetric rounding).
- **Lines**: the charge lines carry ``discount_amounts`` and ``tax_amounts``; then one
  ``discount`` line per discount applied (negative) and one ``tax`` line per exclusive rate,
  so the invoice's total is the sum of its lines: subtotal - discounts + exclusive tax.
- **Consumed**: a repeating discount by each invoice that opens a billing period (whether or
  not it discounted anything: periods pass), a once discount by the invoice it discounted.
"""

from dataclasses import dataclass, replace
from fractions import Fraction

from chalicelib.billing.lines import Line, percentage, round_half_even

ADDED = ("discount", "tax")  # the lines ``apply`` adds: dropped and made again when it runs again


@dataclass(frozen=True)
class Adjusted:
    lines: tuple[Line, ...]
    consumed: tuple[str, ...]  # the discounts this invoice consumes (discount ids)


def apply(
    lines, adjustments: dict | None, currency: str, *, plan_id=None, plan_code=None, opens_period=False
) -> Adjusted:
    """``lines`` with their discounts and taxes, and the lines that show them (see the module's rules).
    ``plan_id``/``plan_code``: the plan the invoice bills (None: a one-off invoice); ``opens_period``:
    the invoice bills a new billing period (a first or renewal invoice)."""
    charges = [line for line in lines if line.kind not in ADDED]
    adjustments = adjustments or {}
    if _nothing_to_apply(lines, charges, adjustments):
        return Adjusted(tuple(lines), ())  # most invoices: no discount, no rate (the round's hot path)
    discounts = [d for d in adjustments.get("discounts") or () if _usable(d, currency)]
    off = _discounts(charges, discounts, plan_code)
    rates = adjustments.get("tax_rates") or {}
    plan_rates = (rates.get("plans") or {}).get(str(plan_id)) if plan_id else None
    account_rates = rates.get("account") or []
    taxed = []
    for line, taken in zip(charges, off, strict=True):
        own = account_rates if line.kind == "invoice_item" or not plan_rates else plan_rates
        taxed.append(_taxed(line, taken, own))
    added = (*_discount_lines(taxed, discounts), *_tax_lines(taxed, _all_rates(rates)))
    consumed = tuple(
        d["id"]
        for d in discounts
        if (d["duration"] == "repeating" and opens_period)
        or (d["duration"] == "once" and any(_sum_of(line.discount_amounts, "discount", d["id"]) for line in taxed))
    )
    return Adjusted((*taxed, *added), consumed)


def summary(lines) -> dict:
    """The invoice's sums of its lines: ``subtotal`` (the charge lines), ``total_discount``, ``tax``
    (inclusive and exclusive), ``total_discount_amounts`` [{discount, amount}] and
    ``total_tax_amounts`` [{tax_rate, amount, inclusive, taxable_amount, display_name, percentage}], in
    first-seen order."""
    charges = [line for line in lines if line.kind not in ADDED]
    discounts: dict[str, int] = {}
    taxes: dict[str, dict] = {}
    for line in charges:
        for item in line.discount_amounts:
            discounts[item["discount"]] = discounts.get(item["discount"], 0) + item["amount"]
        for item in line.tax_amounts:
            into = taxes.setdefault(item["tax_rate"], {**item, "amount": 0, "taxable_amount": 0})
            into["amount"] += item["amount"]
            into["taxable_amount"] += item["taxable_amount"]
    return {
        "subtotal": sum(line.amount for line in charges),
        "total_discount": sum(discounts.values()),
        "tax": sum(item["amount"] for item in taxes.values()),
        "total_discount_amounts": [{"discount": k, "amount": v} for k, v in discounts.items()],
        "total_tax_amounts": list(taxes.values()),
    }


def _nothing_to_apply(lines, charges: list[Line], adjustments: dict) -> bool:
    """No discount, no rate, and no line carrying earlier ones: ``apply`` would return the lines as they are."""
    rates = adjustments.get("tax_rates") or {}
    return (
        not adjustments.get("discounts")
        and not rates.get("account")
        and not any(rates.get("plans") or {})
        and len(charges) == len(lines)
        and not any(line.discount_amounts or line.tax_amounts for line in charges)
    )


def _usable(discount: dict, currency: str) -> bool:
    left = discount.get("periods_left")
    return (left is None or left > 0) and (discount.get("amount_off") is None or discount["currency"] == currency)


def _eligible(line: Line, discount: dict, plan_code) -> bool:
    if line.amount <= 0:
        return False
    if line.kind == "invoice_item":
        return discount["scope"] == "account" and not discount.get("plans")
    return not discount.get("plans") or (plan_code is not None and plan_code in discount["plans"])


def _discounts(charges: list[Line], discounts: list[dict], plan_code) -> list[tuple[str, int] | None]:
    """Each charge line's discount (id, amount) or None, by the module's rules."""
    chosen = [next((d for d in discounts if _eligible(line, d, plan_code)), None) for line in charges]
    off: list[tuple[str, int] | None] = [None] * len(charges)
    for discount in discounts:
        left = discount.get("amount_off")
        pct = percentage(discount["percent_off"]) if discount.get("percent_off") is not None else None
        for i, line in enumerate(charges):
            if chosen[i] is not discount:
                continue
            if pct is not None:
                amount = min(line.amount, round_half_even(line.amount * pct))
            else:
                amount = min(line.amount, left)
                left -= amount
            off[i] = (discount["id"], amount) if amount else None
    return _capped(charges, off)


def _capped(charges: list[Line], off: list) -> list:
    """All the discounts at most the charge lines' sum (never a negative invoice), trimmed from the end."""
    excess = sum(taken[1] for taken in off if taken) - max(0, sum(line.amount for line in charges))
    for i in reversed(range(len(off))):
        if excess <= 0:
            break
        if off[i]:
            cut = min(excess, off[i][1])
            excess -= cut
            off[i] = (off[i][0], off[i][1] - cut) if off[i][1] > cut else None
    return off


def _taxed(line: Line, taken: tuple[str, int] | None, rates: list[dict]) -> Line:
    """The line with its discount and its taxes (inclusive taken out of the price, exclusive on top)."""
    taxable = line.amount - (taken[1] if taken else 0)
    inclusive = [r for r in rates if r["inclusive"]]
    exclusive = [r for r in rates if not r["inclusive"]]
    amounts = []
    net = taxable
    if inclusive:
        net_exact = Fraction(taxable) / (1 + sum(percentage(r["percentage"]) for r in inclusive))
        net = round_half_even(net_exact)
        left = taxable - net
        for n, rate in enumerate(inclusive):
            part = left if n == len(inclusive) - 1 else round_half_even(net_exact * percentage(rate["percentage"]))
            left -= part
            amounts.append(_tax(rate, part, net))
    for rate in exclusive:
        amounts.append(_tax(rate, round_half_even(net * percentage(rate["percentage"])), net))
    discount_amounts = ({"discount": taken[0], "amount": taken[1]},) if taken else ()
    return replace(line, discount_amounts=discount_amounts, tax_amounts=tuple(amounts))


def _tax(rate: dict, amount: int, taxable: int) -> dict:
    """One rate's tax on a line, with what documents show of the rate (its name and percentage)."""
    return {
        "tax_rate": str(rate["id"]),
        "amount": amount,
        "inclusive": rate["inclusive"],
        "taxable_amount": taxable,
        "display_name": rate["display_name"],
        "percentage": rate["percentage"],
    }


def _sum_of(items, key: str, value: str) -> int:
    return sum(item["amount"] for item in items if item[key] == value)


def _discount_lines(taxed: list[Line], discounts: list[dict]) -> list[Line]:
    """One line per discount applied: its negative amount, in the discounts' order."""
    added = []
    for discount in discounts:
        amount = sum(_sum_of(line.discount_amounts, "discount", discount["id"]) for line in taxed)
        if amount:
            added.append(Line("discount", _discount_name(discount), 1, -amount, -amount, discount_id=discount["id"]))
    return added


def _discount_name(discount: dict) -> str:
    what = f"{discount['percent_off']}% off" if discount.get("percent_off") is not None else "amount off"
    return f"{discount.get('name') or 'Discount'} ({what})"


def _all_rates(rates: dict) -> list[dict]:
    """Every rate the invoice may use, each once, in order (the plans' first, then the account's)."""
    seen: dict[str, dict] = {}
    for rate in [*(r for plan in (rates.get("plans") or {}).values() for r in plan), *(rates.get("account") or ())]:
        seen.setdefault(str(rate["id"]), rate)
    return list(seen.values())


def _tax_lines(taxed: list[Line], rates: list[dict]) -> list[Line]:
    """One line per exclusive rate charged: the sum of its per-line taxes (inclusive tax is in the price)."""
    added = []
    for rate in rates:
        if rate["inclusive"]:
            continue
        amount = sum(_sum_of(line.tax_amounts, "tax_rate", str(rate["id"])) for line in taxed)
        if amount:
            name = f"{rate['display_name']} ({rate['percentage']}%)"
            added.append(Line("tax", name, 1, amount, amount, tax_rate_id=str(rate["id"])))
    return added
