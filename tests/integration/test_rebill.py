"""The rebill processor against the real database: periods, usage, payments, dunning."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.billing import payments, rebill
from tests import billing

ANCHOR = datetime(2027, 1, 31, 9, tzinfo=UTC)
FEB_28 = datetime(2027, 2, 28, 9, tzinfo=UTC)
MAR_31 = datetime(2027, 3, 31, 9, tzinfo=UTC)


@pytest.fixture
def tenant(make_tenant):
    return make_tenant()


@pytest.fixture
def pro(tenant):
    return billing.plan(tenant)


def _message(tenant, account, due_at, kind="renewal"):
    return json.dumps({"tenantId": tenant, "accountId": account, "kind": kind, "dueAt": rebill._iso(due_at)})


def test_renewal_bills_the_plan_in_advance_and_last_periods_usage_then_advances(tenant, pro, gateway):
    account = billing.subscribed_account(tenant, pro, ANCHOR)
    billing.usage(tenant, account, ANCHOR + timedelta(days=3), 700, "u1")
    billing.usage(tenant, account, ANCHOR + timedelta(days=9), 300, "u2")
    billing.usage(tenant, account, FEB_28 + timedelta(hours=1), 999, "next-period")  # belongs to the next invoice

    assert rebill.handle(_message(tenant, account, FEB_28), now=FEB_28 + timedelta(hours=1))

    state = billing.state(tenant, account)
    assert state["invoices"] == [
        {"status": "paid", "total": 4900 + 1000 * 2, "period_start": FEB_28, "period_end": MAR_31}
    ]
    assert state["entries"] == [("charge", 6900), ("payment", -6900)]
    assert state["balance"] == 0
    assert state["next_billing_at"] == MAR_31
    assert gateway.charges == [(gateway.charges[0][0], account, 6900, "USD")]


def test_rebill_is_noop_when_period_already_billed(tenant, pro, gateway):
    account = billing.subscribed_account(tenant, pro, ANCHOR)
    message = _message(tenant, account, FEB_28)
    now = FEB_28 + timedelta(days=1)

    assert rebill.handle(message, now=now) is True
    assert rebill.handle(message, now=now) is False

    assert billing.state(tenant, account)["charges_by_period"] == [FEB_28]
    assert len(gateway.charges) == 1


def test_jan_31_anchor_renews_feb_28_then_mar_31_then_apr_30(tenant, pro, gateway):
    account = billing.subscribed_account(tenant, pro, ANCHOR)
    for due in (FEB_28, MAR_31, datetime(2027, 4, 30, 9, tzinfo=UTC)):
        assert rebill.handle(_message(tenant, account, due), now=due)
    assert billing.state(tenant, account)["charges_by_period"] == [FEB_28, MAR_31, datetime(2027, 4, 30, 9, tzinfo=UTC)]
    assert billing.state(tenant, account)["next_billing_at"] == datetime(2027, 5, 31, 9, tzinfo=UTC)


def test_an_account_overdue_for_several_periods_is_caught_up_once_each(tenant, pro, gateway):
    account = billing.subscribed_account(tenant, pro, ANCHOR)
    rebill.handle(_message(tenant, account, FEB_28), now=datetime(2027, 5, 1, tzinfo=UTC))
    state = billing.state(tenant, account)
    assert state["charges_by_period"] == [FEB_28, MAR_31, datetime(2027, 4, 30, 9, tzinfo=UTC)]
    assert state["next_billing_at"] == datetime(2027, 5, 31, 9, tzinfo=UTC)


def test_a_payment_timeout_keeps_the_invoice_and_the_retry_settles_the_same_charge(tenant, pro, gateway):
    account = billing.subscribed_account(tenant, pro, ANCHOR, usage_prices=[])
    gateway.script(account, ["timeout"])
    message = _message(tenant, account, FEB_28)

    with pytest.raises(payments.GatewayTimeout):
        rebill.handle(message, now=FEB_28)
    state = billing.state(tenant, account)
    assert state["entries"] == [("charge", 4900)]  # invoiced and charged; the payment is pending
    assert state["next_billing_at"] == MAR_31
    assert billing.pending_attempts(tenant, account) == 1

    assert rebill.handle(message, now=FEB_28)
    state = billing.state(tenant, account)
    assert state["entries"] == [("charge", 4900), ("payment", -4900)]
    assert billing.pending_attempts(tenant, account) == 0
    assert len(gateway.charges) == 1  # the timed-out call's charge, found again under its key


def test_what_changes_after_a_timeout_cannot_change_what_was_charged(tenant, gateway):
    plan = billing.plan(tenant)
    account = billing.subscribed_account(tenant, plan, ANCHOR)
    billing.usage(tenant, account, ANCHOR + timedelta(days=1), 1000, "u1")
    gateway.script(account, ["timeout"])
    with pytest.raises(payments.GatewayTimeout):
        rebill.handle(_message(tenant, account, FEB_28), now=FEB_28)
    # Meanwhile: a late usage event for the billed period, and the customer cancels.
    billing.usage(tenant, account, ANCHOR + timedelta(days=2), 500, "late")
    from chalicelib.db import transaction

    with transaction(tenant_id=tenant) as tx:
        tx.run("UPDATE subscriptions SET cancel_at_period_end = true")

    rebill.handle(_message(tenant, account, FEB_28), now=FEB_28)

    state = billing.state(tenant, account)
    assert state["entries"] == [("charge", 6900), ("payment", -6900)]
    assert [c[2] for c in gateway.charges] == [6900]


def test_dunning_walks_pending_retries_then_inactive(tenant, pro, gateway):
    account = billing.subscribed_account(tenant, pro, ANCHOR, usage_prices=[])
    gateway.script(account, ["decline"] * 4)
    now = FEB_28

    assert rebill.renew(tenant, account, FEB_28, now) == "declined"
    state = billing.state(tenant, account)
    assert (state["status"], state["failure_count"], state["subscription"]) == ("PENDING", 1, "past_due")
    # Retries fall at the start of a day, so the daily run that day picks them up.
    assert state["payment_retry_at"] == datetime(2027, 3, 1, tzinfo=UTC)
    expected_gaps = [3, 7]
    for gap in expected_gaps:
        now = billing.state(tenant, account)["payment_retry_at"] + timedelta(hours=6)
        due = billing.state(tenant, account)["payment_retry_at"]
        assert rebill.retry_payment(tenant, account, due, now) == "declined"
        assert billing.state(tenant, account)["payment_retry_at"] == due + timedelta(days=gap)
    due = billing.state(tenant, account)["payment_retry_at"]
    assert rebill.retry_payment(tenant, account, due, due + timedelta(hours=6)) == "inactive"

    state = billing.state(tenant, account)
    assert (state["status"], state["subscription"], state["next_billing_at"]) == ("INACTIVE", "unpaid", None)
    assert [i["status"] for i in state["invoices"]] == ["uncollectible"]
    assert [kind for kind, _ in state["entries"]] == ["charge"] + ["payment_failed"] * 4
    assert state["balance"] == 4900
    assert gateway.charges == []


def test_a_later_successful_payment_returns_the_account_to_active(tenant, pro, gateway):
    account = billing.subscribed_account(tenant, pro, ANCHOR)
    gateway.script(account, ["decline", "succeed"])
    rebill.renew(tenant, account, FEB_28, FEB_28)
    retry_at = billing.state(tenant, account)["payment_retry_at"]

    assert rebill.retry_payment(tenant, account, retry_at, retry_at) == "succeeded"
    assert rebill.retry_payment(tenant, account, retry_at, retry_at) == "not_due"  # a duplicate message

    state = billing.state(tenant, account)
    assert (state["status"], state["failure_count"], state["payment_retry_at"]) == ("ACTIVE", 0, None)
    assert state["subscription"] == "active"
    assert state["balance"] == 0
    assert [i["status"] for i in state["invoices"]] == ["paid"]


def test_cancel_at_period_end_ends_the_subscription_at_renewal_without_a_charge(tenant, pro, gateway):
    account = billing.subscribed_account(tenant, pro, ANCHOR)
    from chalicelib.db import transaction

    with transaction(tenant_id=tenant) as tx:
        tx.run("UPDATE subscriptions SET cancel_at_period_end = true")
    assert rebill.renew(tenant, account, FEB_28, FEB_28) == "canceled"
    state = billing.state(tenant, account)
    assert (state["subscription"], state["next_billing_at"], state["entries"]) == ("canceled", None, [])


def test_a_message_for_a_period_not_yet_due_does_nothing(tenant, pro, gateway):
    account = billing.subscribed_account(tenant, pro, ANCHOR)
    assert rebill.handle(_message(tenant, account, FEB_28), now=FEB_28 - timedelta(seconds=1)) is False
    assert billing.state(tenant, account)["entries"] == []


def test_selection_pages_due_and_retry_accounts_across_tenants_in_order(make_tenant, gateway):
    tenants = [make_tenant(f"T{i}") for i in range(3)]
    due_accounts = set()
    for tenant in tenants:
        plan = billing.plan(tenant)
        for _ in range(4):
            due_accounts.add(billing.subscribed_account(tenant, plan, ANCHOR))
        billing.subscribed_account(tenant, plan, MAR_31)  # not due yet
    pages = list(rebill.due(FEB_28, page_size=5))

    selected = [m["accountId"] for page in pages for m in page]
    assert [len(page) for page in pages] == [5, 5, 2]
    assert set(selected) == due_accounts and len(selected) == 12


def test_a_renewal_during_dunning_is_invoiced_and_the_retry_collects_every_open_invoice(make_tenant, gateway):
    tenant = make_tenant()
    weekly = billing.plan(tenant, amount=1000, interval="week", usage_prices=[])
    account = billing.subscribed_account(tenant, weekly, ANCHOR, interval="week")
    first_due = ANCHOR + timedelta(weeks=1)
    gateway.script(account, ["decline"])
    assert rebill.renew(tenant, account, first_due, first_due) == "declined"

    second_due = first_due + timedelta(weeks=1)
    assert rebill.renew(tenant, account, second_due, second_due) == "invoiced"  # PENDING: no attempt of its own
    assert billing.state(tenant, account)["failure_count"] == 1

    retry_at = billing.state(tenant, account)["payment_retry_at"]
    assert rebill.retry_payment(tenant, account, retry_at, second_due + timedelta(days=1)) == "succeeded"

    state = billing.state(tenant, account)
    assert [i["status"] for i in state["invoices"]] == ["paid", "paid"]
    assert (state["status"], state["failure_count"], state["balance"]) == ("ACTIVE", 0, 0)


def test_a_pending_payment_left_by_a_crash_is_found_by_the_daily_selection(tenant, pro, gateway):
    account = billing.subscribed_account(tenant, pro, ANCHOR, usage_prices=[])
    gateway.script(account, ["timeout"])
    with pytest.raises(payments.GatewayTimeout):
        rebill.renew(tenant, account, FEB_28, FEB_28)

    later = FEB_28 + timedelta(hours=1)
    selected = [m for page in rebill.due(later) for m in page if m["accountId"] == account]

    assert [m["kind"] for m in selected] == ["settle"]
    assert rebill.handle(json.dumps(selected[0]), now=later)
    assert billing.state(tenant, account)["entries"] == [("charge", 4900), ("payment", -4900)]
