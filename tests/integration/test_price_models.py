"""Price models and aggregations through a real renewal: the worked examples of docs/pricing.md.

Every test here is one example of the doc ("Price models and aggregations"): a plan, the period's events
(31 Jan 09:00 to 28 Feb 09:00 UTC, 28 days), and the usage lines the renewal writes, figures a reader
can check by hand.
"""

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.billing import rebill
from chalicelib.db import transaction
from tests import billing

ANCHOR = datetime(2027, 1, 31, 9, tzinfo=UTC)
FEB_28 = datetime(2027, 2, 28, 9, tzinfo=UTC)
TIERS = [
    {"up_to": 1000, "unit_amount": 5},
    {"up_to": 5000, "unit_amount": 3},
    {"up_to": None, "unit_amount": 1},
]


@pytest.fixture
def tenant(make_tenant):
    return make_tenant()


def _renewed(tenant, usage_prices: list[dict], events: list[tuple]) -> list[tuple]:
    """Bill ``events`` (days after the anchor, quantity, metric, properties) at the renewal on 28 Feb:
    the usage lines written, as (description, quantity, unit_amount, amount)."""
    account = billing.subscribed_account(tenant, billing.plan(tenant, amount=0, usage_prices=usage_prices), ANCHOR)
    for n, (days, quantity, metric, properties) in enumerate(events):
        billing.usage(tenant, account, ANCHOR + timedelta(days=days), quantity, f"e-{n:02}", metric, properties)
    assert rebill.renew(tenant, account, FEB_28, FEB_28) == "succeeded"  # billed and paid
    with transaction(tenant_id=tenant) as tx:
        rows = tx.all(
            "SELECT description, quantity, unit_amount, amount FROM invoice_lines"
            " WHERE kind = 'usage' ORDER BY position"
        )
    return [(r["description"], r["quantity"], r["unit_amount"], r["amount"]) for r in rows]


def test_graduated_and_volume_tiers_price_the_same_6000_calls_18000_and_6000(tenant, gateway):
    prices = [
        {"metric": "api_calls", "aggregation": "sum", "model": "graduated", "tiers": TIERS},
        {"metric": "api_calls", "aggregation": "sum", "model": "volume", "tiers": TIERS},
    ]
    events = [(1, 2500, "api_calls", {}), (10, 3500, "api_calls", {})]
    assert _renewed(tenant, prices, events) == [
        ("api_calls (sum)", 6000, 3, 18000),  # 1000 x 5 + 4000 x 3 + 1000 x 1
        ("api_calls (sum)", 6000, 1, 6000),  # all 6000 at the tier 6000 reaches
    ]


def test_a_package_price_with_250_free_units_bills_351_exports_as_two_packages(tenant, gateway):
    prices = [
        {
            "metric": "exports",
            "aggregation": "sum",
            "model": "package",
            "package_size": 100,
            "unit_amount": 500,
            "free_units": 250,
        }
    ]
    events = [(1, 200, "exports", {}), (2, 151, "exports", {})]
    assert _renewed(tenant, prices, events) == [
        ("exports (sum)", 351, 3, 1000)
    ]  # 101 past free: 2 packages; 3 the average


def test_a_percentage_price_clamps_each_payments_fee_then_rounds_the_line_once(tenant, gateway):
    prices = [
        {
            "metric": "payments",
            "aggregation": "sum",
            "model": "percentage",
            "field": "amount",
            "rate": "2.5",
            "fixed_amount": 30,
            "min_amount": 50,
            "max_amount": 1000,
        }
    ]
    events = [
        (1, 1, "payments", {"amount": 1000}),  # 25 + 30 = 55
        (2, 1, "payments", {"amount": 100}),  # 2.5 + 30 = 32.5, raised to the minimum 50
        (3, 1, "payments", {"amount": 100000}),  # 2500 + 30 = 2530, cut to the maximum 1000
        (4, 1, "payments", {"amount": 1234}),  # 30.85 + 30 = 60.85
        (5, 1, "payments", {"amount": "9.99"}),  # not a whole number of minor units: not a payment of this price
    ]
    # 55 + 50 + 1000 + 60.85 = 1165.85, rounded half to even once: 1166
    assert _renewed(tenant, prices, events) == [("payments (sum)", 102334, 0, 1166)]


def test_unique_count_bills_distinct_users_counting_7_and_the_text_7_as_one(tenant, gateway):
    prices = [{"metric": "logins", "aggregation": "unique_count", "field": "user", "unit_amount": 400}]
    users = ["ann", "bob", "ann", 7, "7", None]
    events = [(day, 1, "logins", {"user": user}) for day, user in enumerate(users, start=1)]
    assert _renewed(tenant, prices, events) == [("logins (unique_count)", 3, 400, 1200)]  # ann, bob, 7


def test_latest_bills_the_last_reading_of_the_period_the_greater_event_id_winning_a_tie(tenant, gateway):
    prices = [{"metric": "storage", "aggregation": "latest", "field": "gb", "unit_amount": 100}]
    events = [
        (1, 1, "storage", {"gb": 10}),
        (5, 1, "storage", {"gb": 30}),
        (9, 1, "storage", {"gb": 25}),  # e-02 and e-03 share an instant: e-03 is the later
        (9, 1, "storage", {"gb": 20}),
        (12, 1, "storage", {"gb": 2.5}),  # not a JSON integer: not a reading
    ]
    assert _renewed(tenant, prices, events) == [("storage (latest)", 20, 100, 2000)]


def test_weighted_sum_bills_seats_by_the_time_each_level_held_from_the_level_before_the_period(tenant, gateway):
    prices = [{"metric": "seats", "aggregation": "weighted_sum", "field": "seats", "unit_amount": 1000}]
    events = [
        (-11, 1, "seats", {"seats": 2}),  # before the period: its level on 31 Jan
        (14, 1, "seats", {"seats": 4}),
        (21, 1, "seats", {"seats": 1}),
    ]
    # (2 x 14 days + 4 x 7 + 1 x 7) / 28 = 63/28 = 2.25 seats: 2250; the quantity shown rounds to 2
    assert _renewed(tenant, prices, events) == [("seats (weighted_sum)", 2, 1000, 2250)]


def test_a_filter_bills_only_the_events_of_matching_regions(tenant, gateway):
    prices = [
        {"metric": "api_calls", "aggregation": "sum", "unit_amount": 2, "filters": {"region": "eu"}},
        {"metric": "api_calls", "aggregation": "sum", "unit_amount": 1, "filters": {"region": ["eu", "us"]}},
    ]
    events = [
        (1, 100, "api_calls", {"region": "eu"}),
        (2, 50, "api_calls", {"region": "us"}),
        (3, 20, "api_calls", {"region": "eu", "plan": "x"}),
        (4, 7, "api_calls", {}),
        (5, 3, "api_calls", {"region": "ap"}),
    ]
    assert _renewed(tenant, prices, events) == [("api_calls (sum)", 120, 2, 240), ("api_calls (sum)", 170, 1, 170)]


def test_a_group_by_bills_one_line_per_region_and_one_for_events_without_one(tenant, gateway):
    prices = [{"metric": "api_calls", "aggregation": "sum", "unit_amount": 2, "group_by": "region"}]
    events = [
        (1, 100, "api_calls", {"region": "eu"}),
        (2, 50, "api_calls", {"region": "us"}),
        (3, 20, "api_calls", {"region": "eu"}),
        (4, 7, "api_calls", {}),
    ]
    assert _renewed(tenant, prices, events) == [
        ("api_calls (sum, region: eu)", 120, 2, 240),
        ("api_calls (sum, region: us)", 50, 2, 100),
        ("api_calls (sum, no region)", 7, 2, 14),
    ]
