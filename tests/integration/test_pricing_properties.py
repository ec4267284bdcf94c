"""A price list's invoices, for random usage, price models, aggregations, coupons and tax rates:

(a) an invoice's total is the sum of its lines, and its sums add up: total = subtotal - discount +
    exclusive tax;
(b) nothing goes below zero but what may: no charge line nets below zero after its discount, no
    discount line is positive or larger than the charges, and the invoice is never negative;
(c) the upcoming-invoice preview (``upcoming.of_account``) equals the invoice the rebill then issues
    for the same usage, line by line and sum by sum.

(d), the SQL aggregation against a plain-Python reference, is tests/integration/test_usage_aggregation_properties.py.
Each example is a new plan, account and subscription in one tenant, renewed on 28 Feb through
``rebill.renew`` (the daily round's engine, the mock gateway).
"""

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chalicelib.billing import coupons, plans, rebill, tax_rates, upcoming
from chalicelib.db import transaction
from tests import billing

ANCHOR = datetime(2027, 1, 31, 9, tzinfo=UTC)
FEB_28 = datetime(2027, 2, 28, 9, tzinfo=UTC)
SHOWN = ("kind", "description", "quantity", "unit_amount", "amount", "discount_amounts", "tax_amounts")
SUMS = ("subtotal", "total_discount", "tax", "total")
TIERS = [
    {"up_to": 10, "unit_amount": 7},
    {"up_to": 100, "unit_amount": 3, "flat_amount": 50},
    {"up_to": None, "unit_amount": 1},
]

prices = st.sampled_from(
    [
        {"metric": "calls", "aggregation": "sum", "unit_amount": 3},
        {"metric": "calls", "aggregation": "sum", "model": "graduated", "tiers": TIERS},
        {"metric": "calls", "aggregation": "max", "model": "volume", "tiers": TIERS},
        {
            "metric": "calls",
            "aggregation": "count",
            "model": "package",
            "package_size": 3,
            "free_units": 2,
            "unit_amount": 250,
        },
        {"metric": "calls", "aggregation": "unique_count", "field": "user", "unit_amount": 120},
        {"metric": "calls", "aggregation": "latest", "field": "gb", "unit_amount": 45},
        {"metric": "calls", "aggregation": "weighted_sum", "field": "gb", "unit_amount": 99, "group_by": "region"},
        {
            "metric": "pay",
            "aggregation": "sum",
            "model": "percentage",
            "field": "amount",
            "rate": "2.9",
            "fixed_amount": 30,
            "min_amount": 50,
            "max_amount": 2000,
        },
        {"metric": "calls", "aggregation": "sum", "unit_amount": 11, "filters": {"region": "eu"}, "group_by": "user"},
    ]
)
events = st.lists(
    st.tuples(
        st.integers(0, 27 * 86400),  # seconds into the period
        st.sampled_from(["calls", "calls", "pay"]),
        st.integers(0, 400),
        st.fixed_dictionaries(
            {},
            optional={
                "user": st.sampled_from(["ada", "bo", "cy", 7]),
                "gb": st.integers(0, 60),
                "region": st.sampled_from(["eu", "us"]),
                "amount": st.integers(0, 90_000),
            },
        ),
    ),
    max_size=14,
)
coupon_terms = st.one_of(
    st.none(),
    st.builds(
        dict,
        percent_off=st.sampled_from(["20", "12.5", "33.33", "100"]),
        duration=st.sampled_from(["once", "forever"]),
    ),
    st.builds(dict, amount_off=st.integers(1, 20_000), currency=st.just("USD"), duration=st.just("forever")),
)
RATES = (("VAT", "19", False), ("VAT incl.", "19", True), ("Sales tax", "7.25", False), ("GST incl.", "10", True))
rate_choice = st.lists(st.sampled_from(range(len(RATES))), max_size=2, unique=True)


@pytest.fixture
def tenant(make_tenant):
    tenant_id = make_tenant()
    with transaction(tenant_id=tenant_id) as tx:
        rates = [
            str(tax_rates.create(tx, billing.actor(tenant_id), tax_rates.NewTaxRate(*rate))["id"]) for rate in RATES
        ]
    return tenant_id, rates, itertools.count()


def _valid(chosen: list[int]) -> list[int]:
    """At most one inclusive rate on a line (two inclusive rates split one gross amount: fine, but the
    property is stated for the common case; exclusive ones stack)."""
    inclusive = [i for i in chosen if RATES[i][2]]
    return [i for i in chosen if not RATES[i][2]] + inclusive[:1]


def _priced(tenant, rates, n, flat, usage_prices, plan_rates, account_rates, coupon, on_subscription) -> str:
    """A plan, an account subscribed to it since ANCHOR with its default rates, and the coupon applied."""
    actor = billing.actor(tenant)
    with transaction(tenant_id=tenant) as tx:
        plan = plans.create(
            tx,
            actor,
            plans.NewPlan(
                code=f"p{n}",
                name="P",
                interval="month",
                amount=flat,
                currency="USD",
                usage_prices=usage_prices,
                tax_rates=[rates[i] for i in _valid(plan_rates)],
            ),
        )
    account = billing.subscribed_account(tenant, str(plan["id"]), ANCHOR)
    with transaction(tenant_id=tenant) as tx:
        defaults = [rates[i] for i in _valid(account_rates)]
        tx.run("UPDATE accounts SET default_tax_rates = CAST(:r AS uuid[]) WHERE id = :a", r=defaults, a=account)
        if coupon is not None:
            found = coupons.create(tx, actor, coupons.NewCoupon(**coupon))
            subscription = tx.scalar("SELECT id FROM subscriptions WHERE account_id = :a", a=account)
            if on_subscription:
                coupons.apply_to_subscription(tx, actor, str(subscription), str(found["id"]))
            else:
                coupons.apply_to_account(tx, actor, account, str(found["id"]))
    return account


def _issued(tenant, account) -> dict:
    with transaction(tenant_id=tenant) as tx:
        invoice = tx.one(
            "SELECT id, subtotal, total_discount, tax, total FROM invoices"
            " WHERE account_id = :a AND billing_reason = 'subscription_cycle'",
            a=account,
        )
        lines = tx.all("SELECT * FROM invoice_lines WHERE invoice_id = :i ORDER BY position", i=invoice["id"])
    return {**invoice, "lines": lines}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    flat=st.integers(0, 9_900),
    usage_prices=st.lists(prices, max_size=3),
    usage=events,
    coupon=coupon_terms,
    on_subscription=st.booleans(),
    plan_rates=rate_choice,
    account_rates=rate_choice,
)
def test_invoices_add_up_never_go_negative_and_are_what_the_preview_showed(
    tenant, gateway, flat, usage_prices, usage, coupon, on_subscription, plan_rates, account_rates
):
    tenant_id, rates, counter = tenant
    n = next(counter)
    account = _priced(tenant_id, rates, n, flat, usage_prices, plan_rates, account_rates, coupon, on_subscription)
    for k, (second, metric, quantity, properties) in enumerate(usage):
        at = ANCHOR + timedelta(seconds=second)
        billing.usage(tenant_id, account, at, quantity, f"e-{n}-{k}", metric, properties)

    with transaction(tenant_id=tenant_id) as tx:
        preview = upcoming.of_account(tx, account)
    assert rebill.renew(tenant_id, account, FEB_28, FEB_28) in ("succeeded", "invoiced")
    issued = _issued(tenant_id, account)

    # (a) the total is the sum of the lines, and the sums add up
    lines = issued["lines"]
    exclusive_tax = sum(line["amount"] for line in lines if line["kind"] == "tax")
    assert issued["total"] == sum(line["amount"] for line in lines)
    assert issued["total"] == issued["subtotal"] - issued["total_discount"] + exclusive_tax
    # (b) no charge line nets below zero, no discount is positive or exceeds the charges, no negative invoice
    charges = [line for line in lines if line["kind"] not in ("discount", "tax")]
    for line in charges:
        assert line["amount"] >= 0
        assert line["amount"] - sum(d["amount"] for d in line["discount_amounts"]) >= 0
    discounts = [line["amount"] for line in lines if line["kind"] == "discount"]
    assert all(amount <= 0 for amount in discounts)
    assert -sum(discounts) == issued["total_discount"] <= issued["subtotal"]
    assert issued["total"] >= 0 and issued["tax"] >= 0
    event(f"discounted: {bool(issued['total_discount'])}, taxed: {bool(issued['tax'])}")
    event(f"usage lines: {sum(line['kind'] == 'usage' for line in lines)}")
    # (c) the preview was this invoice
    assert [tuple(line[k] for k in SHOWN) for line in preview["lines"]["data"]] == [
        tuple(line[k] for k in SHOWN) for line in lines
    ]
    assert {k: preview[k] for k in SUMS} == {k: issued[k] for k in SUMS}
