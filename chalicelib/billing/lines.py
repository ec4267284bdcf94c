"""Invoice lines and the one rule for an invoice's total (integer minor units, no rounding)."""

from dataclasses import dataclass
from datetime import datetime

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


def total_of(lines) -> int:
    """The invoice's total, refused when beyond what can be billed: usage within bounds event by event
    can sum, times its price, past any sane amount (and past bigint, where the insert would fail)."""
    total = sum(line.amount for line in lines)
    if total > MAX_AMOUNT or any(line.quantity > _BIGINT for line in lines):
        raise errors.UnprocessableState(
            f"the period's invoice would be {total} minor units; the largest amount is {MAX_AMOUNT}",
            code="amount_too_large",
        )
    return total
