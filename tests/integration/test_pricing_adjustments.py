"""Coupons and tax rates through the real billing paths: the worked examples of docs/pricing_adjustments.md.

Every figure can be checked by hand: percentages of whole minor units, rounded half to even per line
(``lines.round_half_even``); April has 30 days, so half of it is 15 days.
"""

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.billing import (
    accounts,
    collection,
    coupons,
    engine,
    invoices,
    invoicing,
    lifecycle,
    rebill,
    subscriptions,
    tax_rates,
    tenants,
)
from chalicelib.db import transaction
from tests import billing

APR_1 = datetime(2027, 4, 1, tzinfo=UTC)
APR_16 = datetime(2027, 4, 16, tzinfo=UTC)
MAY_1 = datetime(2027, 5, 1, tzinfo=UTC)
JUN_1 = datetime(2027, 6, 1, tzinfo=UTC)
JUL_1 = datetime(2027, 7, 1, tzinfo=UTC)
AUG_1 = datetime(2027, 8, 1, tzinfo=UTC)
NAMED = {"display_name": "Sales tax", "percentage": "7.25"}
METERED = [{"metric": "api_calls", "aggregation": "sum", "unit_amount": 3}]


@pytest.fixture
def tenant(make_tenant):
    tenant_id = make_tenant()
    billing.priced_plan(tenant_id, "pro", 4900, usage_prices=METERED)
    billing.priced_plan(tenant_id, "team", 9900)
    return tenant_id


def _rate(tenant, percentage: str, inclusive: bool, name="Sales tax") -> str:
    command = tax_rates.NewTaxRate(name, percentage, inclusive)
    with transaction(tenant_id=tenant) as tx:
        return str(tax_rates.create(tx, billing.actor(tenant), command)["id"])


def _coupon(tenant, **terms) -> str:
    with transaction(tenant_id=tenant) as tx:
        return str(coupons.create(tx, billing.actor(tenant), coupons.NewCoupon(**terms))["id"])


def _subscribe(tenant, plan, at, *, coupon=None, default_tax_rates=()) -> tuple[str, str]:
    """A new account (with its default rates) subscribed at ``at``, the coupon on its subscription before
    the first invoice, which is then issued and collected as the generate-invoice consumer does it."""
    actor = billing.actor(tenant)
    with transaction(tenant_id=tenant) as tx:
        new = accounts.NewAccount(email="c@x.test", name="C", currency="USD", default_tax_rates=list(default_tax_rates))
        account = str(accounts.create(tx, actor, new)["id"])
        command = subscriptions.NewSubscription(account_id=account, plan=plan)
        subscription = str(subscriptions.create(tx, actor, command, now=at)["id"])
        if coupon:
            coupons.apply_to_subscription(tx, actor, subscription, coupon)
    with transaction(tenant_id=tenant) as tx:
        engine.bill_first_period(tx, tenant, subscription)
    collection.settle_pending(tenant, account, at)
    return account, subscription


def _invoices(tenant, account) -> list[dict]:
    """Every invoice, oldest first, with its sums and its lines as (kind, amount)."""
    with transaction(tenant_id=tenant) as tx:
        rows = tx.all(
            "SELECT id, billing_reason, status, subtotal, total_discount, tax, total, total_tax_amounts"
            " FROM invoices WHERE account_id = :a ORDER BY created_at, period_start",
            a=account,
        )
        for row in rows:
            lines = tx.all(
                "SELECT kind, amount FROM invoice_lines WHERE invoice_id = :i ORDER BY position", i=row["id"]
            )
            row["lines"] = [(line["kind"], line["amount"]) for line in lines]
    return rows


def _discount(tenant, subscription) -> dict:
    with transaction(tenant_id=tenant) as tx:
        discount_id = tx.scalar("SELECT id FROM discounts WHERE subscription_id = :s", s=subscription)
        return coupons.get_discount(tx, str(discount_id))


def test_a_20_percent_coupon_repeating_3_months_discounts_exactly_3_periods_across_a_plan_change(tenant, gateway):
    # docs/pricing_adjustments.md, example 1
    coupon = _coupon(tenant, name="Launch", percent_off="20", duration="repeating", duration_in_periods=3)
    account, subscription = _subscribe(tenant, "pro", APR_1, coupon=coupon)
    with transaction(tenant_id=tenant) as tx:  # an upgrade halfway through April, invoiced now
        change = lifecycle.Update(subscription, plan="team", proration_behavior="always_invoice")
        lifecycle.update(tx, billing.actor(tenant), change, now=APR_16)
    collection.settle_pending(tenant, account, APR_16)
    for boundary in (MAY_1, JUN_1, JUL_1):
        assert rebill.renew(tenant, account, boundary, boundary) == "succeeded"

    april, change, may, june, july = _invoices(tenant, account)
    assert april["lines"] == [("subscription", 4900), ("discount", -980)] and april["total"] == 3920
    # not a new period: discounted while periods remain, but consumes none; the credit is not discounted
    assert change["lines"] == [("proration", -2450), ("proration", 4950), ("discount", -990)]
    assert change["total"] == 1510
    assert may["lines"] == [("subscription", 9900), ("discount", -1980)] and may["total"] == 7920
    assert june["total"] == 7920
    assert july["lines"] == [("subscription", 9900)] and july["total_discount"] == 0
    discount = _discount(tenant, subscription)
    assert (discount["periods_remaining"], discount["status"], discount["coupon"]["times_redeemed"]) == (0, "ended", 1)
    assert billing.state(tenant, account)["balance"] == 0


def test_a_renewal_takes_the_accounts_default_rate_through_a_real_rebill_round_and_its_preview_is_the_invoice(
    tenant, gateway
):
    rate = _rate(tenant, "7.25", inclusive=False)
    account, _subscription = _subscribe(tenant, "pro", APR_1, default_tax_rates=[rate])
    billing.usage(tenant, account, APR_16, 150, "calls")

    preview = engine.preview(tenant, {account: MAY_1}, MAY_1)
    assert rebill.renew(tenant, account, MAY_1, MAY_1) == "succeeded"

    april, may = _invoices(tenant, account)
    assert april["lines"] == [("subscription", 4900), ("tax", 355)]  # 7.25% of 4900 = 355.25
    # per line: 355.25 -> 355 on the fee; 7.25% of 450 = 32.625 -> 33 on the usage
    assert may["lines"] == [("subscription", 4900), ("usage", 450), ("tax", 388)]
    assert (may["subtotal"], may["tax"], may["total"]) == (5350, 388, 5738)
    assert may["total_tax_amounts"] == [
        {"tax_rate": rate, "amount": 388, "inclusive": False, "taxable_amount": 5350, **NAMED}
    ]
    [bill] = preview
    assert [(line.kind, line.amount) for line in bill.lines] == may["lines"] and bill.total == may["total"]
    assert billing.state(tenant, account)["entries"][-2:] == [("charge", 5738), ("payment", -5738)]


def test_an_inclusive_19_percent_vat_on_a_plan_price_of_1000_is_840_net_and_160_tax(make_tenant, gateway):
    # docs/pricing_adjustments.md, example 2
    tenant = make_tenant()
    vat = _rate(tenant, "19", inclusive=True, name="VAT")
    billing.priced_plan(tenant, "eu", 1000, tax_rates=[vat])

    account, _subscription = _subscribe(tenant, "eu", APR_1)

    [first] = _invoices(tenant, account)
    assert first["lines"] == [("subscription", 1000)]  # the tax is in the price: no line of its own
    assert (first["subtotal"], first["tax"], first["total"]) == (1000, 160, 1000)
    assert first["total_tax_amounts"] == [
        {
            "tax_rate": vat,
            "amount": 160,
            "inclusive": True,
            "taxable_amount": 840,
            "display_name": "VAT",
            "percentage": "19",
        }
    ]


def test_a_held_draft_is_finalized_with_its_discount_and_tax_and_late_usage(tenant, gateway):
    rate = _rate(tenant, "10", inclusive=False)
    coupon = _coupon(tenant, name="Friends", percent_off="50", duration="forever")
    account, _subscription = _subscribe(tenant, "pro", APR_1, coupon=coupon, default_tax_rates=[rate])
    with transaction(tenant_id=tenant) as tx:
        tenants.update_invoice_settings(tx, billing.actor(tenant), {"grace_hours": 24})
    billing.usage(tenant, account, APR_16, 100, "on-time")
    assert rebill.renew(tenant, account, MAY_1, MAY_1) == "succeeded"
    held = _invoices(tenant, account)[-1]
    # 4900 + 300, half off: 2450 + 150; 10% on 2450 and on 150
    assert held["status"] == "draft" and held["lines"] == [
        ("subscription", 4900),
        ("usage", 300),
        ("discount", -2600),
        ("tax", 260),
    ]
    billing.usage(tenant, account, APR_16 + timedelta(hours=1), 50, "late")  # priced when it is finalized

    invoices.finalize(tenant, billing.actor(tenant), str(held["id"]), MAY_1 + timedelta(hours=1))

    final = _invoices(tenant, account)[-1]
    # 150 calls now: 450, half off 225; 10% of 225 = 22.5 -> 22 (half to even), of 2450 = 245
    assert final["lines"] == [("subscription", 4900), ("usage", 450), ("discount", -2675), ("tax", 267)]
    assert (final["status"], final["subtotal"], final["total_discount"], final["total"]) == ("paid", 5350, 2675, 2942)
    assert billing.state(tenant, account)["entries"][-2:] == [("charge", final["total"]), ("payment", -final["total"])]


def test_a_retried_write_consumes_a_repeating_discount_once(tenant, gateway):
    coupon = _coupon(tenant, percent_off="20", duration="repeating", duration_in_periods=3)
    account, subscription = _subscribe(tenant, "team", APR_1, coupon=coupon)
    bills = engine.preview(tenant, {account: MAY_1}, MAY_1)

    for _attempt in range(2):  # the renewal's write, and a redelivery that finds it done
        with transaction(tenant_id=tenant) as tx:
            issued = invoicing.issue(tx, tenant, bills, pending=invoicing.Pending(0, {}))
    assert issued[account].invoice_id is None  # the retry wrote nothing
    assert [row["total"] for row in _invoices(tenant, account)] == [7920, 7920]
    assert _discount(tenant, subscription)["periods_remaining"] == 1
