"""The one rounding rule: a prorated amount, half to even, once per line."""

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.billing import changes
from chalicelib.billing.lines import prorate
from tests import billing

DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("amount", "part", "whole", "expected"),
    [
        (1, DAY, 2 * DAY, 0),  # 0.5 -> 0 (even)
        (3, DAY, 2 * DAY, 2),  # 1.5 -> 2 (even)
        (5, DAY, 2 * DAY, 2),  # 2.5 -> 2 (even)
        (7, DAY, 2 * DAY, 4),  # 3.5 -> 4 (even)
        (-5, DAY, 2 * DAY, -2),  # a credit is the negative of the same charge
        (900, 15 * DAY, 30 * DAY, 450),
        (3000, 22 * DAY, 31 * DAY, 2129),  # 2129.03
        (4900, 14 * DAY, 29 * DAY, 2366),  # 2365.52: a leap February
        (4900, 6 * DAY, 30 * DAY, 980),
        (100, timedelta(seconds=1), 30 * DAY, 0),
        (1000, 40 * DAY, 30 * DAY, 1333),  # paused for longer than a period: more than one price
    ],
)
def test_a_prorated_amount_is_rounded_half_to_even_to_the_minor_unit(amount, part, whole, expected):
    assert prorate(amount, part, whole) == expected


def test_prorating_counts_whole_seconds_and_refuses_floats_and_empty_periods():
    assert prorate(86_400, timedelta(seconds=1, microseconds=999_999), DAY) == 1
    with pytest.raises(TypeError):
        prorate(9.5, DAY, DAY)
    with pytest.raises(ValueError):
        prorate(100, DAY, timedelta(0))


def test_an_upgrade_compares_price_per_unit_of_time_and_quantity():
    monthly = billing.subscription_state(datetime(2027, 1, 1, tzinfo=UTC))  # 4900 a month
    terms = monthly.terms()
    assert changes.is_upgrade(monthly, {**terms, "quantity": 2})
    assert not changes.is_upgrade(monthly, {**terms, "amount": 900})
    assert not changes.is_upgrade(monthly, {**terms, "interval": "year", "amount": 49000})  # 10 months' price
    assert changes.is_upgrade(monthly, {**terms, "interval": "year", "amount": 58800})  # the same per day
