"""The rebill end to end: schedule handler -> SQS -> processor handler, the admin route, the CLI."""

import json
from datetime import UTC, datetime, timedelta

import boto3
from chalice.test import Client

from app import app
from chalicelib.billing import rebill, rebill_cli
from devtools.pump import lambda_event
from tests import billing

PAST = datetime.now(UTC) - timedelta(days=40)


def _due_accounts(tenant_id, count):
    plan = billing.plan(tenant_id, usage_prices=[])
    return [billing.subscribed_account(tenant_id, plan, PAST) for _ in range(count)]


def _receive(url):
    """Every visible message, acknowledged (the processor reports no failures for them)."""
    sqs = boto3.client("sqs")
    found = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        found += batch
    return found


def test_two_scheduler_runs_and_redelivery_bill_each_account_once(make_tenant, messaging, gateway):
    tenant = make_tenant()
    accounts = _due_accounts(tenant, 23)
    queue = messaging.queues["billing-rebill"]

    with Client(app) as client:
        for _ in range(2):  # the schedule fires twice: two runs, each of 16 renewal chains, retries, settles
            result = client.lambda_.invoke(
                "rebill_schedule", client.events.generate_cw_event("aws.events", "x", {}, [])
            )
            assert {k: result.payload[k] for k in ("chains", "stalled", "trials_ending")} == {
                "chains": 18,
                "stalled": 0,
                "trials_ending": 0,
            }
        enqueued = 0
        while messages := _receive(queue["url"]):  # the processor runs the steps, which send the accounts
            enqueued += sum(json.loads(m["Body"])["kind"] != "select" for m in messages)
            for start in range(0, len(messages), 10):
                batch = lambda_event(messages[start : start + 10], queue["arn"])
                assert client.lambda_.invoke("rebill_processor", batch).payload == {"batchItemFailures": []}
                assert client.lambda_.invoke("rebill_processor", batch).payload == {"batchItemFailures": []}
        assert enqueued == 46

    for account in accounts:
        state = billing.state(tenant, account)
        assert len(state["charges_by_period"]) == 1
        assert state["next_billing_at"] > datetime.now(UTC) - timedelta(days=31)
    assert len(gateway.charges) == 23


def test_a_garbled_rebill_message_is_reported_alone(make_tenant, messaging, gateway):
    tenant = make_tenant()
    account = _due_accounts(tenant, 1)[0]
    good = {
        "tenantId": tenant,
        "accountId": account,
        "kind": "renewal",
        "dueAt": rebill._iso(PAST + timedelta(days=31)),
    }
    records = [
        {"MessageId": "good", "ReceiptHandle": "r", "Body": json.dumps(good)},
        {"MessageId": "bad", "ReceiptHandle": "r", "Body": json.dumps({"kind": "renewal"})},
    ]
    with Client(app) as client:
        result = client.lambda_.invoke("rebill_processor", lambda_event(records, "arn"))
    assert result.payload == {"batchItemFailures": [{"itemIdentifier": "bad"}]}


def test_admin_rebills_one_account_now(api, tenant, other_tenant, gateway):
    account = _due_accounts(tenant.id, 1)[0]

    forbidden = api.post(f"/v1/accounts/{account}/rebill", None, tenant.user)
    elsewhere = api.post(f"/v1/accounts/{account}/rebill", None, other_tenant.admin)
    first = api.post(f"/v1/accounts/{account}/rebill", None, tenant.admin)
    second = api.post(f"/v1/accounts/{account}/rebill", None, tenant.admin)

    assert (forbidden.status, elsewhere.status) == (403, 404)
    assert first.status == 200, first.body
    assert first.body["outcome"] == "succeeded"
    assert first.body["account"]["balance"] == 0
    assert second.status == 422 and second.body["error"]["code"] == "not_due"
    assert len(billing.state(tenant.id, account)["charges_by_period"]) == 1


def test_admin_rebill_with_a_gateway_timeout_is_a_retryable_503_that_writes_nothing(api, tenant, gateway):
    account = _due_accounts(tenant.id, 1)[0]
    gateway.script(account, ["timeout"])

    reply = api.post(f"/v1/accounts/{account}/rebill", None, tenant.admin, headers={"Idempotency-Key": "r1"})
    retry = api.post(f"/v1/accounts/{account}/rebill", None, tenant.admin, headers={"Idempotency-Key": "r1"})

    assert reply.status == 503
    assert retry.status == 200 and retry.body["outcome"] == "succeeded"
    assert len(gateway.charges) == 1


def test_dry_run_prints_what_would_be_billed_and_writes_nothing(make_tenant, gateway, capsys):
    tenant = make_tenant()
    accounts = _due_accounts(tenant, 3)

    assert rebill_cli.main(["--date", datetime.now(UTC).date().isoformat(), "--dry-run"]) == 0

    out = capsys.readouterr().out
    assert "would bill 3 renewal(s)" in out
    assert "USD: 14700" in out
    assert all(billing.state(tenant, a)["entries"] == [] for a in accounts)
    assert gateway.charges == []


def test_inline_run_bills_and_a_second_run_finds_nothing_due(make_tenant, gateway, capsys):
    tenant = make_tenant()
    accounts = _due_accounts(tenant, 3)
    today = datetime.now(UTC).date().isoformat()

    rebill_cli.main(["--date", today, "--inline"])
    rebill_cli.main(["--date", today, "--inline"])

    assert "billed: 3" in capsys.readouterr().out
    assert all(len(billing.state(tenant, a)["charges_by_period"]) == 1 for a in accounts)


def test_admin_rebill_of_a_period_over_the_largest_amount_is_422_and_writes_nothing(api, tenant, gateway):
    plan = billing.plan(tenant.id, usage_prices=[{"metric": "api_calls", "aggregation": "sum", "unit_amount": 10**6}])
    account = billing.subscribed_account(tenant.id, plan, PAST)
    billing.usage(tenant.id, account, PAST + timedelta(days=3), 10**12 - 1, "huge")

    reply = api.post(f"/v1/accounts/{account}/rebill", None, tenant.admin)

    assert reply.status == 422, reply.body
    assert reply.body["error"]["code"] == "amount_too_large"
    assert billing.state(tenant.id, account)["entries"] == []
    assert gateway.charges == []
