"""The one billing engine: final invoices when a subscription ends, and one settler per payment attempt."""

import time
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib import errors
from chalicelib.billing import collection, engine, payments, rebill
from chalicelib.db import transaction
from tests import billing

ANCHOR = datetime(2027, 1, 31, 9, tzinfo=UTC)
FEB_28 = datetime(2027, 2, 28, 9, tzinfo=UTC)


@pytest.fixture
def tenant(make_tenant):
    return make_tenant()


def _invoices(tenant, account):
    return [
        {**invoice, "lines": [line[:3] for line in invoice["lines"]]}
        for invoice in billing.invoices_of(tenant, account)
    ]


def test_cancel_at_period_end_bills_the_last_periods_usage_on_a_final_invoice_then_ends(tenant, gateway):
    account = billing.subscribed_account(tenant, billing.plan(tenant), ANCHOR)
    billing.usage(tenant, account, ANCHOR + timedelta(days=3), 500, "last-period")
    with transaction(tenant_id=tenant) as tx:
        tx.run("UPDATE subscriptions SET cancel_at_period_end = true")

    assert rebill.renew(tenant, account, FEB_28, FEB_28) == "canceled"

    [final] = _invoices(tenant, account)
    assert (final["billing_reason"], final["status"], final["total"]) == ("subscription_cancel", "paid", 1000)
    assert (final["period_start"], final["period_end"]) == (ANCHOR, FEB_28)
    assert final["lines"] == [("usage", 500, 1000)], "the usage, and no new flat fee"
    state = billing.state(tenant, account)
    assert state["entries"] == [("charge", 1000), ("payment", -1000)]
    assert (state["subscription"], state["next_billing_at"]) == ("canceled", None)
    assert rebill.renew(tenant, account, FEB_28, FEB_28) == "not_due"
    assert [c[2] for c in gateway.charges] == [1000]


def test_ending_a_subscription_now_bills_every_event_recorded_in_its_last_period(tenant, gateway):
    account = billing.subscribed_account(tenant, billing.plan(tenant), ANCHOR)
    cancel_at = ANCHOR + timedelta(days=10)
    billing.usage(tenant, account, ANCHOR + timedelta(days=1), 40, "before-the-cancel")
    # Accepted before the cancel, stamped just after it (the API takes events up to 300 s ahead).
    billing.usage(tenant, account, cancel_at + timedelta(minutes=2), 7, "stamped-ahead")
    billing.usage(tenant, account, ANCHOR - timedelta(days=1), 999, "an-invoiced-period")
    with transaction(tenant_id=tenant) as tx:
        subscription = tx.scalar("SELECT id FROM subscriptions WHERE account_id = :a", a=account)
        issued = engine.end_now(tx, tenant, str(subscription), cancel_at)

    assert issued.intent is not None and issued.total == 94
    [final] = _invoices(tenant, account)
    assert (final["billing_reason"], final["period_end"], final["lines"]) == (
        "subscription_cancel",
        cancel_at,
        [("usage", 47, 94)],
    )
    assert rebill.handle(_settle_message(tenant, account, cancel_at), now=cancel_at)
    state = billing.state(tenant, account)
    assert state["entries"] == [("charge", 94), ("payment", -94)]
    assert (state["subscription"], state["next_billing_at"]) == ("canceled", None)


def _settle_message(tenant, account, at):
    import json

    return json.dumps({"tenantId": tenant, "accountId": account, "kind": "settle", "dueAt": rebill._iso(at)})


class SlowGateway(payments.MockGateway):
    """Takes a while to answer, so concurrent settlers overlap with the call in flight."""

    def charge(self, **kwargs):
        time.sleep(0.3)
        return super().charge(**kwargs)


def test_concurrent_admin_rebills_call_the_gateway_once_and_the_rest_agree(tenant):
    gateway = SlowGateway()
    payments.set_gateway(gateway)
    try:
        account = billing.subscribed_account(tenant, billing.plan(tenant, usage_prices=[]), ANCHOR)
        answers: list = []

        def rebill_now():
            try:
                answers.append(rebill.rebill_now(tenant, account, "test:admin", now=FEB_28)["outcome"])
            except errors.BillingError as exc:
                answers.append((type(exc).__name__, exc.code))

        billing.in_threads(*[rebill_now] * 8)
    finally:
        payments.set_gateway(None)

    assert answers.count("succeeded") == 1, answers
    refusals = [a for a in answers if a != "succeeded"]
    assert {kind for kind, _code in refusals} == {"UnprocessableState"}, "one status code for every loser"
    assert {code for _kind, code in refusals} <= {"not_due", "rebill_in_progress"}
    assert len(gateway.calls) == 1, f"the gateway was called {len(gateway.calls)} times with one key"
    assert billing.state(tenant, account)["entries"] == [("charge", 4900), ("payment", -4900)]


def test_a_gateway_busy_with_the_same_key_is_retryable_and_never_a_failure(tenant, gateway):
    account = billing.subscribed_account(tenant, billing.plan(tenant, usage_prices=[]), ANCHOR)
    gateway.script(account, ["busy"])

    with pytest.raises(errors.ServiceUnavailable):
        rebill.rebill_now(tenant, account, "test:admin", now=FEB_28)
    assert billing.pending_attempts(tenant, account) == 1
    assert rebill.rebill_now(tenant, account, "test:admin", now=FEB_28)["outcome"] == "succeeded"
    assert len(gateway.charges) == 1
    assert len(set(gateway.calls)) == 1, "the retry used the same key"


def test_a_claim_left_by_a_crashed_settler_lapses_and_the_next_settler_takes_over(tenant, gateway, monkeypatch):
    from chalicelib.config import reset_settings

    monkeypatch.setenv("PAYMENT_CLAIM_LEASE_S", "1")
    reset_settings()
    account = billing.subscribed_account(tenant, billing.plan(tenant, usage_prices=[]), ANCHOR)
    gateway.script(account, ["timeout"])
    with pytest.raises(payments.GatewayTimeout):
        rebill.renew(tenant, account, FEB_28, FEB_28)
    with transaction(tenant_id=tenant) as tx:  # as a settler that died mid-call leaves it
        tx.run("UPDATE payment_attempts SET claimed_until = now() + interval '1 second'")

    with pytest.raises(collection.PaymentUnresolved):
        rebill.handle(_settle_message(tenant, account, FEB_28), now=FEB_28)
    time.sleep(1.2)
    assert rebill.handle(_settle_message(tenant, account, FEB_28), now=FEB_28)
    assert billing.state(tenant, account)["entries"] == [("charge", 4900), ("payment", -4900)]
    reset_settings()
