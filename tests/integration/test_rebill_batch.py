"""The batch path bills exactly what the single-account path bills, and reports failures per record."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.billing import rebill, rebill_batch
from tests import billing

ANCHOR = datetime(2027, 1, 31, 9, tzinfo=UTC)
FEB_28 = datetime(2027, 2, 28, 9, tzinfo=UTC)
MAR_31 = datetime(2027, 3, 31, 9, tzinfo=UTC)


def _records(tenant, accounts, due=FEB_28, copies=1):
    body = {"tenantId": tenant, "kind": "renewal", "dueAt": rebill._iso(due)}
    return [
        {"messageId": f"{a}-{n}", "body": json.dumps({**body, "accountId": a})} for a in accounts for n in range(copies)
    ]


@pytest.fixture
def reporting(monkeypatch):
    from chalicelib.config import reset_settings

    monkeypatch.setenv("SQS_REPORT_BATCH_ITEM_FAILURES", "true")
    reset_settings()
    yield
    reset_settings()


def test_a_batch_bills_like_one_by_one(make_tenant, gateway, reporting):
    tenant = make_tenant()
    plan = billing.plan(tenant)
    batch = [billing.subscribed_account(tenant, plan, ANCHOR) for _ in range(5)]
    single = [billing.subscribed_account(tenant, plan, ANCHOR) for _ in range(5)]
    for account in batch + single:
        billing.usage(tenant, account, ANCHOR + timedelta(days=2), 300, f"u-{account}")

    assert rebill_batch.process(_records(tenant, batch, copies=2), now=FEB_28) == {"batchItemFailures": []}
    for account in single:
        rebill.handle(_records(tenant, [account])[0]["body"], now=FEB_28)

    def shape(account):
        state = billing.state(tenant, account)
        return state["entries"], state["next_billing_at"], [(i["status"], i["total"]) for i in state["invoices"]]

    assert {str(shape(a)) for a in batch} == {str(shape(a)) for a in single}
    assert shape(batch[0]) == ([("charge", 5500), ("payment", -5500)], MAR_31, [("paid", 5500)])
    keys = sorted(c[0].split(":", 2)[2] for c in gateway.charges)
    assert len(keys) == 10 and len(set(keys)) == 1  # same key shape, one charge per account


def test_declines_timeouts_and_odd_accounts_in_a_batch_are_handled_per_account(make_tenant, gateway, reporting):
    tenant = make_tenant()
    plan = billing.plan(tenant, usage_prices=[])
    ok, declined, timed_out, canceling = (billing.subscribed_account(tenant, plan, ANCHOR) for _ in range(4))
    gateway.script(declined, ["decline"])
    gateway.script(timed_out, ["timeout"])
    from chalicelib.db import transaction

    with transaction(tenant_id=tenant) as tx:
        tx.run("UPDATE subscriptions SET cancel_at_period_end = true WHERE account_id = :a", a=canceling)
    records = _records(tenant, [ok, declined, timed_out, canceling]) + [{"messageId": "junk", "body": "{"}]

    result = rebill_batch.process(records, now=FEB_28)

    assert sorted(f["itemIdentifier"] for f in result["batchItemFailures"]) == sorted([f"{timed_out}-0", "junk"])
    assert billing.state(tenant, ok)["status"] == "ACTIVE"
    assert billing.state(tenant, declined)["status"] == "PENDING"
    assert billing.state(tenant, canceling)["subscription"] == "canceled"
    assert billing.pending_attempts(tenant, timed_out) == 1

    redelivered = rebill_batch.process(_records(tenant, [timed_out]), now=FEB_28)
    assert redelivered == {"batchItemFailures": []}
    assert billing.state(tenant, timed_out)["entries"] == [("charge", 4900), ("payment", -4900)]
    assert len([c for c in gateway.charges if c[1] == timed_out]) == 1


def test_an_account_several_periods_behind_catches_up_in_the_batch(make_tenant, gateway, reporting):
    tenant = make_tenant()
    account = billing.subscribed_account(tenant, billing.plan(tenant, usage_prices=[]), ANCHOR)
    rebill_batch.process(_records(tenant, [account]), now=datetime(2027, 5, 1, tzinfo=UTC))
    assert billing.state(tenant, account)["next_billing_at"] == datetime(2027, 5, 31, 9, tzinfo=UTC)
    assert len(billing.state(tenant, account)["charges_by_period"]) == 3


def test_usage_billing_more_than_the_largest_amount_fails_only_its_own_record_and_bills_nothing(
    make_tenant, gateway, reporting
):
    tenant = make_tenant()
    metered = [{"metric": "api_calls", "aggregation": "sum", "unit_amount": 1000}]
    dearest = [{"metric": "api_calls", "aggregation": "sum", "unit_amount": 10**12 - 1}]
    plan, dear_plan = billing.plan(tenant, usage_prices=metered), billing.plan(tenant, "dear", usage_prices=dearest)
    over_max, over_bigint, ordinary = (billing.subscribed_account(tenant, p, ANCHOR) for p in (plan, dear_plan, plan))
    for n in range(3):  # every event within bounds; their sum times the price is not
        billing.usage(tenant, over_max, ANCHOR + timedelta(days=2), 10**12 - 1, f"max-{n}")
        billing.usage(tenant, over_bigint, ANCHOR + timedelta(days=2), 10**12 - 1, f"bigint-{n}")
    billing.usage(tenant, ordinary, ANCHOR + timedelta(days=2), 5, "ordinary")

    result = rebill_batch.process(_records(tenant, [over_max, over_bigint, ordinary]), now=FEB_28)

    failed = {f"{a}-0" for a in (over_max, over_bigint)}
    assert {f["itemIdentifier"] for f in result["batchItemFailures"]} == failed
    for account in (over_max, over_bigint):
        assert billing.state(tenant, account)["entries"] == []
        assert billing.state(tenant, account)["next_billing_at"] == FEB_28, "left due, for an operator to resolve"
    assert billing.state(tenant, ordinary)["entries"] == [("charge", 4900 + 5000), ("payment", -(4900 + 5000))]


@pytest.mark.parametrize(("concurrency", "in_flight"), [(4, 4), (1, 1)])
def test_a_batch_is_charged_at_stripe_several_at_a_time_and_each_account_once(
    make_tenant, stripe, reporting, monkeypatch, concurrency, in_flight
):
    from chalicelib.billing import payments
    from chalicelib.config import reset_settings
    from tests import gateway

    monkeypatch.setenv("PAYMENT_CONCURRENCY", str(concurrency))
    reset_settings()
    tenant = make_tenant()
    plan = billing.plan(tenant, usage_prices=[])
    accounts = [billing.subscribed_account(tenant, plan, ANCHOR) for _ in range(8)]
    payments.set_gateway(None)
    at_stripe = gateway.OnStandin(stripe, tenant, accounts)
    stripe.latency_seconds, stripe.most_in_flight = 0.2, 0  # each PaymentIntent takes Stripe 0.2 s

    assert rebill_batch.process(_records(tenant, accounts), now=FEB_28) == {"batchItemFailures": []}

    assert stripe.most_in_flight == in_flight  # PAYMENT_CONCURRENCY at once, never more
    assert sorted(account for _pi, account, _amount, _currency in at_stripe.charges) == sorted(accounts)
    for account in accounts:
        state = billing.state(tenant, account)
        assert state["entries"] == [("charge", 4900), ("payment", -4900)]
        assert [i["status"] for i in state["invoices"]] == ["paid"]


def test_a_charge_whose_answer_is_lost_in_a_concurrent_batch_fails_only_its_record_and_is_never_made_twice(
    make_tenant, stripe, reporting
):
    import time

    from chalicelib.billing import payments
    from tests import gateway

    tenant = make_tenant()
    plan = billing.plan(tenant, usage_prices=[])
    accounts = [billing.subscribed_account(tenant, plan, ANCHOR) for _ in range(6)]
    payments.set_gateway(None)
    at_stripe = gateway.OnStandin(stripe, tenant, accounts)
    at_stripe.script(accounts[2], ["timeout"])  # Stripe charges it, and answers after our timeout
    records = _records(tenant, accounts)

    first = rebill_batch.process(records, now=FEB_28)
    pending = billing.pending_attempts(tenant, accounts[2])
    time.sleep(stripe.slow_seconds)  # Stripe's answer is done: the key replays it from now on
    again = rebill_batch.process([records[2]], now=FEB_28)  # SQS redelivers the failed record

    assert first == {"batchItemFailures": [{"itemIdentifier": records[2]["messageId"]}]}
    assert pending == 1
    assert again == {"batchItemFailures": []}
    assert sorted(account for _pi, account, _amount, _currency in at_stripe.charges) == sorted(accounts)
    for account in accounts:
        assert billing.state(tenant, account)["entries"] == [("charge", 4900), ("payment", -4900)]
