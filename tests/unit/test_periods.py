"""What a billing instant bills: pure functions, no database."""

from datetime import UTC, datetime

import pytest

from chalicelib import errors
from chalicelib.billing import periods
from tests import billing

ANCHOR = datetime(2027, 1, 31, 9, tzinfo=UTC)
FEB_28 = datetime(2027, 2, 28, 9, tzinfo=UTC)
MAR_31 = datetime(2027, 3, 31, 9, tzinfo=UTC)


def _sub(**changes) -> periods.Subscription:
    return billing.subscription_state(ANCHOR, **changes)


def test_a_renewal_bills_the_new_period_in_advance_and_the_closed_periods_usage_in_arrears():
    bill = periods.renewal(_sub(), "ACTIVE", FEB_28, [[{"group": None, "quantity": 300}]])

    assert (bill.period_start, bill.period_end, (bill.then.current_period_start, bill.then.current_period_end)) == (
        FEB_28,
        MAR_31,
        (FEB_28, MAR_31),
    )
    assert [(line.kind, line.amount, line.period_start) for line in bill.lines] == [
        ("subscription", 4900, None),
        ("usage", 600, ANCHOR),
    ]
    assert (bill.total, bill.collect, bill.charge_key) == (5500, True, f"charge:a:{FEB_28.isoformat()}")


def test_an_account_in_dunning_is_invoiced_without_an_attempt_of_its_own():
    assert periods.renewal(_sub(), "PENDING", FEB_28, {}).collect is False


def test_a_final_bill_has_no_flat_fee_and_no_invoice_without_usage():
    with_usage = periods.final(_sub(), "ACTIVE", FEB_28, [[{"group": None, "quantity": 5}]])
    without = periods.final(_sub(), "ACTIVE", FEB_28, {})

    assert [(line.kind, line.amount) for line in with_usage.lines] == [("usage", 10)]
    assert (with_usage.reason, with_usage.ends, with_usage.then) == ("subscription_cancel", True, None)
    assert (with_usage.period_start, with_usage.period_end) == (ANCHOR, FEB_28)
    assert without.lines == () and without.ends and not without.collect


def test_an_inactive_account_ends_without_a_final_invoice():
    bill = periods.final(_sub(), "INACTIVE", FEB_28, [[{"group": None, "quantity": 5}]])
    assert bill.lines == () and bill.ends and not bill.collect


def test_ending_now_prices_every_recorded_event_and_ending_at_a_boundary_only_the_period():
    assert periods.usage_window(_sub(), FEB_28) == (ANCHOR, FEB_28)
    start, end = periods.usage_window(_sub(), FEB_28, ending_now=True)
    assert start == ANCHOR and end.year == 9999


def test_the_first_bill_is_the_anchors_period_whenever_it_is_written():
    late = _sub(current_period_start=FEB_28, current_period_end=MAR_31)
    bill = periods.first(late, "ACTIVE")
    assert (bill.period_start, bill.period_end, bill.total) == (ANCHOR, FEB_28, 4900)


def test_payment_keys_keep_their_format_and_a_final_invoice_gets_its_own():
    sub_id = "11111111-2222-3333-4444-555555555555"
    renewal = periods.payment_key("inv", sub_id, "subscription_cycle", FEB_28, 0)
    final = periods.payment_key("inv", sub_id, "subscription_cancel", ANCHOR, 0)
    first = periods.payment_key("inv", sub_id, "subscription_create", ANCHOR, 1)

    assert renewal == f"pay:{sub_id}:2027-02-28T09:00:00.000000:0"
    assert first == f"pay:{sub_id}:2027-01-31T09:00:00.000000:1"
    assert final == f"pay:{sub_id}:subscription_cancel:2027-01-31T09:00:00.000000:0"
    assert periods.payment_key("inv", None, "manual", ANCHOR, 0) == "pay:invoice:inv:0"


def test_an_invoice_beyond_the_largest_amount_is_refused():
    with pytest.raises(errors.UnprocessableState) as refused:
        periods.renewal(_sub(), "ACTIVE", FEB_28, [[{"group": None, "quantity": 10**12}]])
    assert refused.value.code == "amount_too_large"
