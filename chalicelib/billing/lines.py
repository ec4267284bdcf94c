"""Invoice lines, the one rule for an invoice's total, and the one rounding rule (``prorate``).

Money is integer minor units. Nothing is ever rounded except a prorated amount, and that
only here: ``amount * part / whole`` rounded half to even, once per line.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

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
    quotient, remainder = divmod(abs(amount) * used, length)
    if 2 * remainder > length or (2 * remainder == length and quotient % 2 == 1):
        quotient += 1
    return quotient if amount >= 0 else -quotient


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
