"""Properties of what a subscription's life bills: every recorded usage event is priced by exactly
one bill, every bill has its own ledger charge key and gateway key, and each total is its lines' sum."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.billing import periods
from chalicelib.billing.lines import MAX_AMOUNT
from tests import billing

METERED = [{"metric": "api_calls", "aggregation": "sum", "unit_amount": 3}]
FUTURE_S = 300  # USAGE_MAX_FUTURE_S: how far ahead an accepted event may be stamped


def _subscription(anchor: datetime, interval: str, count: int) -> periods.Subscription:
    return billing.subscription_state(anchor, interval, count, usage_prices=METERED)


def _life(sub: periods.Subscription, renewals: int, cancel_fraction: float | None):
    """Every bill of one subscription's life with the usage window each prices: the first period,
    ``renewals`` renewals, then a final bill at period end (``cancel_fraction`` None) or part-way
    through the last period (ending now)."""
    bills = [(periods.first(sub, "ACTIVE"), None)]
    for _ in range(renewals):
        boundary = sub.current_period_end
        bill = periods.renewal(sub, "ACTIVE", boundary, {})
        bills.append((bill, periods.usage_window(sub, boundary)))
        sub = bill.then
    if cancel_fraction is None:
        ends_at, ending_now = sub.current_period_end, False
    else:
        length = sub.current_period_end - sub.current_period_start
        ends_at, ending_now = sub.current_period_start + length * cancel_fraction, True
    window = periods.usage_window(sub, ends_at, ending_now=ending_now)
    bills.append((periods.final(sub, "ACTIVE", ends_at, {}), window))
    return bills, ends_at, ending_now


anchors = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC)
)
intervals = st.sampled_from([("day", 1), ("week", 1), ("week", 2), ("month", 1), ("month", 3), ("year", 1)])
# One subscription's life: when it started, its interval, how many renewals, and how it ended
# (None: at the end of its last period; a fraction: cancelled that far into it).
LIFE = dict(
    anchor=anchors,
    interval=intervals,
    renewals=st.integers(0, 14),
    cancel_fraction=st.one_of(st.none(), st.floats(0.0001, 0.9999)),
)


@settings(max_examples=300, deadline=None)
@given(
    **LIFE,
    offsets=st.lists(st.floats(0, 1), min_size=1, max_size=20),
    ahead_s=st.lists(st.floats(0, FUTURE_S), max_size=5),
)
def test_every_accepted_usage_event_is_priced_by_exactly_one_bill(
    anchor, interval, renewals, cancel_fraction, offsets, ahead_s
):
    bills, ends_at, ending_now = _life(_subscription(anchor, *interval), renewals, cancel_fraction)
    # Events the API could have accepted: from the start until the end, and when ending
    # now also those stamped up to FUTURE_S ahead of the cancel, recorded before it.
    last = ends_at + timedelta(seconds=FUTURE_S) if ending_now else ends_at
    tick = timedelta(microseconds=1)
    edges = [at for bill, _window in bills for at in (bill.boundary - tick, bill.boundary)]
    ahead = [ends_at + timedelta(seconds=s) for s in ahead_s] if ending_now else []
    events = [anchor + (last - anchor) * offset for offset in offsets] + edges + ahead
    for at in (at for at in events if anchor <= at < last):
        pricing = [bill for bill, window in bills if window and window[0] <= at < window[1]]
        assert len(pricing) == 1, f"event at {at} priced by {len(pricing)} bills"


@settings(max_examples=300, deadline=None)
@given(**LIFE)
def test_every_bill_of_a_life_has_its_own_charge_key_and_gateway_key(anchor, interval, renewals, cancel_fraction):
    bills, _ends_at, _now = _life(_subscription(anchor, *interval), renewals, cancel_fraction)
    bills = [bill for bill, _window in bills]

    charge_keys = [bill.charge_key for bill in bills]
    payment_keys = [
        periods.payment_key(f"inv-{i}", bill.subscription.id, bill.reason, bill.period_start, attempt)
        for i, bill in enumerate(bills)
        for attempt in range(3)
    ]
    assert len(set(charge_keys)) == len(charge_keys), "two bills of one life share a ledger charge"
    assert len(set(payment_keys)) == len(payment_keys), "two attempts share a gateway key"
    boundaries = [bill.boundary for bill in bills]
    assert boundaries == sorted(boundaries) and len(set(boundaries)) == len(boundaries)


@settings(max_examples=300, deadline=None)
@given(
    quantity=st.integers(0, 10**9),
    unit_amount=st.integers(0, 10**4),
    flat=st.integers(0, 10**9),
)
def test_a_total_is_the_exact_integer_sum_of_its_lines_and_never_past_the_largest_amount(quantity, unit_amount, flat):
    sub = replace(
        _subscription(datetime(2027, 1, 31, tzinfo=UTC), "month", 1),
        amount=flat,
        usage_prices=[{"metric": "api_calls", "aggregation": "sum", "unit_amount": unit_amount}],
    )
    try:
        bill = periods.renewal(sub, "ACTIVE", sub.current_period_end, [[{"group": None, "quantity": quantity}]])
    except Exception as refused:  # noqa: BLE001 - only the documented refusal is allowed
        assert getattr(refused, "code", None) == "amount_too_large"
        assert flat + quantity * unit_amount > MAX_AMOUNT
        return
    assert all(isinstance(line.amount, int) for line in bill.lines)
    assert bill.total == flat + quantity * unit_amount == sum(line.amount for line in bill.lines)
    assert 0 <= bill.total <= MAX_AMOUNT
