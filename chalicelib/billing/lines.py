"""Invoice lines, the one rule for an invoice's total, and the one rounding rule (``round_half_even``).

Money is integer minor units. Whatever is not a whole number of minor units (a prorated fee,
a percentage of an amount, a tax, a time-weighted quantity) is computed exactly as a fraction
and rounded here, once per line: half to even (0.5 rounds to 0, 1.5 to 2, 2.5 to 2), signed
amounts symmetrically (a credit is exactly the negative of the same charge).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction

from chalicelib import errors

# The largest amount the API accepts anywhere (chalicelib/schemas): no invoice may exceed it either.
MAX_AMOUNT = 999_999_999_999
_BIGINT = 2**63 - 1


@dataclass(frozen=True)
class Line:
    kind: str
    description: str
    quantity: int
    unit_amount: int
    amount: int
    metric: str | None = None
    period_start: datetime | None = None  # defaults to the invoice's period
    period_end: datetime | None = None
    invoice_item_id: str | None = None  # a one-off charge (kind ``invoice_item``) this line bills
    # What ``adjustments.apply`` adds: a charge line's discounts [{discount, amount}] and taxes
    # [{tax_rate, amount, inclusive, taxable_amount}]; the discount (kind ``discount``) or the rate
    # (kind ``tax``) a line of its own shows.
    discount_amounts: tuple = ()
    tax_amounts: tuple = ()
    discount_id: str | None = None
    tax_rate_id: str | None = None


def prorate(amount: int, part: timedelta, whole: timedelta) -> int:
    """``amount`` for ``part`` of a ``whole`` period: the time in force over the period's real length,
    both in whole seconds (calendar-correct: a real February is 28 or 29 days), rounded half to
    even to the minor unit (so 0.5 rounds to 0, 1.5 to 2, 2.5 to 2). Signed amounts round
    symmetrically: a credit is exactly the negative of the same charge."""
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise TypeError("amounts are integer minor units")
    used, length = part // timedelta(seconds=1), whole // timedelta(seconds=1)
    if length <= 0 or not 0 <= used:
        raise ValueError(f"cannot prorate {part} of {whole}")
    return round_half_even(Fraction(amount * used, length))


def round_half_even(value: Fraction | int) -> int:
    """The one rounding rule: an exact amount to the nearest whole minor unit, ties to even, signed
    values symmetrically (``round_half_even(-x) == -round_half_even(x)``). Never a float."""
    if isinstance(value, bool) or not isinstance(value, (Fraction, int)):
        raise TypeError("round exact values only (int or Fraction), never a float")
    value = Fraction(value)
    quotient, remainder = divmod(abs(value.numerator), value.denominator)
    if 2 * remainder > value.denominator or (2 * remainder == value.denominator and quotient % 2 == 1):
        quotient += 1
    return quotient if value >= 0 else -quotient


def percentage(text: str) -> Fraction:
    """A percentage given as an exact decimal string (``"19"``, ``"7.5"``, ``"0.125"``) as an exact
    fraction of one (19 -> 19/100). Never parsed through a float."""
    return Fraction(text) / 100


def total_of(lines) -> int:
    """The invoice's total, refused when beyond what can be billed: usage within bounds event by event
    can sum, times its price, past any sane amount (and past bigint, where the insert would fail)."""
    total = sum(line.amount for line in lines)
    if abs(total) > MAX_AMOUNT or any(line.quantity > _BIGINT for line in lines):
        raise errors.UnprocessableState(
            f"the period's invoice would be {total} minor units; the largest amount is {MAX_AMOUNT}",
            code="amount_too_large",
        )
    return total
