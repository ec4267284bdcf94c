from datetime import UTC, datetime

import pytest

from chalicelib.billing.calendar import add_months, period_boundary, period_containing


def at(y, m, d, h=0):
    return datetime(y, m, d, h, tzinfo=UTC)


def test_jan_31_anchor_bills_feb_28_then_mar_31():
    anchor = at(2027, 1, 31, 9)
    assert [period_boundary(anchor, "month", 1, n) for n in range(4)] == [
        at(2027, 1, 31, 9),
        at(2027, 2, 28, 9),
        at(2027, 3, 31, 9),
        at(2027, 4, 30, 9),
    ]


def test_jan_31_anchor_bills_feb_29_in_a_leap_year():
    assert period_boundary(at(2028, 1, 31), "month", 1, 1) == at(2028, 2, 29)


def test_feb_29_yearly_anchor_falls_back_to_feb_28_and_returns_to_29():
    anchor = at(2028, 2, 29)
    assert [period_boundary(anchor, "year", 1, n) for n in (1, 4)] == [at(2029, 2, 28), at(2032, 2, 29)]


def test_month_arithmetic_crosses_year_ends_both_ways():
    assert add_months(at(2026, 11, 30), 3) == at(2027, 2, 28)
    assert add_months(at(2027, 3, 31), -1) == at(2027, 2, 28)


@pytest.mark.parametrize("interval,count", [("day", 1), ("week", 2), ("month", 1), ("month", 3), ("year", 1)])
def test_period_containing_returns_adjacent_boundaries_around_the_instant(interval, count):
    anchor = at(2026, 1, 31, 12)
    for probe in (at(2026, 1, 31, 12), at(2026, 3, 1), at(2027, 7, 15), at(2030, 2, 28, 13)):
        start, end = period_containing(anchor, interval, count, probe)
        assert start <= probe < end
        n = next(i for i in range(10_000) if period_boundary(anchor, interval, count, i) == start)
        assert end == period_boundary(anchor, interval, count, n + 1)


def test_unknown_interval_is_an_error():
    with pytest.raises(ValueError):
        period_boundary(at(2026, 1, 1), "fortnight", 1, 1)
