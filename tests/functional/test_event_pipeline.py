"""SNS fan-out to the three SQS consumers, with at-least-once delivery taken literally."""

import json
import random

import boto3
import pytest
from chalice.test import Client

import app as app_module
from app import app
from chalicelib import aws, outbox
from chalicelib.db import transaction
from devtools import local_aws
from devtools.pump import Pump, bindings_for, lambda_event, queue_depth

CONSUMERS = {
    "billing-generate-invoice": "generate_invoice",
    "billing-send-notification": "send_notification",
    "billing-audit-log": "audit_log",
}


def _receive_all(url: str) -> list[dict]:
    sqs = boto3.client("sqs")
    found = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]).get("Messages", [])
        if not batch:
            return found
        found += batch


def _emails_sent() -> int:
    return int(boto3.client("ses").get_send_quota()["SentLast24Hours"])


def _counts(tenant_id: str) -> dict:
    with transaction(tenant_id=tenant_id) as tx:
        return {
            "invoices": tx.scalar("SELECT count(*) FROM invoices"),
            "lines": tx.scalar("SELECT count(*) FROM invoice_lines"),
            "charges": tx.scalar("SELECT count(*) FROM ledger_entries WHERE entry_type = 'charge'"),
            "payments": tx.scalar("SELECT count(*) FROM ledger_entries WHERE entry_type = 'payment'"),
            "audit": tx.scalar(
                "SELECT count(*) FROM audit_logs WHERE action = 'subscription.created' AND entity_type = 'event'"
            ),
        }


def _subscribe(api, account, catalog):
    reply = api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user)
    assert reply.status == 201, reply.body
    return reply.body


def test_subscription_publishes_one_event_with_attributes_to_every_queue(api, account, catalog, messaging):
    sub = _subscribe(api, account, catalog)

    for name in CONSUMERS:
        messages = _receive_all(messaging.queues[name]["url"])
        messages = [m for m in messages if json.loads(m["Body"])["eventType"] != "account.created"]
        assert len(messages) == 1
        event = json.loads(messages[0]["Body"])
        assert event["eventType"] == "subscription.created"
        assert (event["tenantId"], event["subscriptionId"], event["accountId"]) == (
            catalog.id,
            sub["id"],
            account["id"],
        )
        assert (event["amount"], event["currency"], event["billingCycle"]) == (4900, "USD", "monthly")
        assert event["periodStart"] == sub["current_period_start"]
    with transaction(tenant_id=catalog.id) as tx:
        assert tx.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


def test_every_message_delivered_three_times_in_random_order_has_one_effect(api, account, catalog, messaging):
    _subscribe(api, account, catalog)
    deliveries = []
    for name, handler in CONSUMERS.items():
        queue = messaging.queues[name]
        for message in _receive_all(queue["url"]):
            deliveries += [(handler, queue["arn"], message)] * 3
    random.Random(7).shuffle(deliveries)

    with Client(app) as client:
        for handler, arn, message in deliveries:
            result = client.lambda_.invoke(handler, lambda_event([message], arn))
            assert result.payload == {"batchItemFailures": []}

    assert _counts(catalog.id) == {"invoices": 1, "lines": 1, "charges": 1, "payments": 1, "audit": 1}
    assert _emails_sent() == 1
    balance = api.get(f"/v1/accounts/{account['id']}", catalog.user).body["balance"]
    assert balance == 0  # charged 4900, paid 4900


def test_a_failing_record_in_a_batch_of_ten_is_the_only_one_reported(api, catalog, messaging):
    subs = []
    for i in range(10):
        acct = api.post(
            "/v1/accounts", {"email": f"c{i}@x.test", "name": f"C{i}", "currency": "USD"}, catalog.user
        ).body
        subs.append(_subscribe(api, acct, catalog))
    queue = messaging.queues["billing-audit-log"]
    messages = [m for m in _receive_all(queue["url"]) if "subscription.created" in m["Body"]]
    assert len(messages) == 10
    doomed = messages[4]
    body = json.loads(doomed["Body"])
    body["tenantId"] = "3f1c7a52-8a51-4f43-9a43-5b0b1d7a9e10"  # no such tenant: the consumer's write fails
    doomed["Body"] = json.dumps(body)

    with Client(app) as client:
        first = client.lambda_.invoke("audit_log", lambda_event(messages, queue["arn"]))
        again = client.lambda_.invoke("audit_log", lambda_event(messages, queue["arn"]))

    assert first.payload == {"batchItemFailures": [{"itemIdentifier": doomed["MessageId"]}]}
    assert again.payload == first.payload
    assert _counts(catalog.id)["audit"] == 9


def test_poison_messages_fail_with_a_reason_and_never_crash_the_batch(catalog, messaging, caplog):
    queue = messaging.queues["billing-audit-log"]
    poison = [
        {"MessageId": "m-json", "ReceiptHandle": "r", "Body": "{not json"},
        {"MessageId": "m-type", "ReceiptHandle": "r", "Body": json.dumps({"eventType": "bogus.thing"})},
        {"MessageId": "m-schema", "ReceiptHandle": "r", "Body": json.dumps({"eventType": "subscription.created"})},
    ]
    with Client(app) as client:
        result = client.lambda_.invoke("audit_log", lambda_event(poison, queue["arn"]))

    assert [f["itemIdentifier"] for f in result.payload["batchItemFailures"]] == ["m-json", "m-type", "m-schema"]
    assert "poison message m-type" in caplog.text and "unknown eventType" in caplog.text


def test_without_partial_batch_reporting_a_failure_fails_the_whole_batch(catalog, messaging, monkeypatch):
    from chalicelib import consumers
    from chalicelib.config import reset_settings

    monkeypatch.setenv("SQS_REPORT_BATCH_ITEM_FAILURES", "false")
    reset_settings()
    records = lambda_event([{"MessageId": "m", "ReceiptHandle": "r", "Body": "{"}], "arn")["Records"]
    with pytest.raises(consumers.BatchFailed):
        consumers.process_batch(records, "audit-log", {})


def test_a_message_that_keeps_failing_lands_in_the_dlq_and_replay_brings_it_back_once(
    api, account, catalog, monkeypatch, cognito
):
    from chalicelib import dlq
    from chalicelib.config import reset_settings

    aws.reset_clients()
    # The sender is not verified yet: SES refuses every send, as it would in a fresh account.
    messaging = local_aws.provision_messaging(visibility_timeout=0, max_receive_count=2, verify_sender=False)
    for name, value in messaging.env().items():
        monkeypatch.setenv(name, value)
    reset_settings()
    _subscribe(api, account, catalog)
    queue = messaging.queues["billing-send-notification"]
    pump = Pump([(app_module.send_notification, queue["url"], queue["arn"], 10)], wait_seconds=0)

    for _ in range(4):
        pump.poll_once(*pump.bindings[0])
    assert queue_depth(queue["dlq_url"]) == 1
    assert queue_depth(queue["url"]) == 0
    assert _emails_sent() == 0

    boto3.client("ses").verify_email_identity(EmailAddress=local_aws.SES_SENDER)
    dry = dlq.replay(queue["dlq_url"], queue["url"], dry_run=True)
    moved = dlq.replay(queue["dlq_url"], queue["url"])
    pump.drain(timeout=5)
    pump.drain(timeout=1)

    assert (dry, moved) == (1, 1)
    assert _emails_sent() == 1
    assert queue_depth(queue["dlq_url"]) == 0
    assert queue_depth(queue["url"]) == 0


def test_a_failed_publish_is_kept_and_published_exactly_once_by_the_sweep(
    api, account, catalog, messaging, monkeypatch
):
    from chalicelib.config import reset_settings

    monkeypatch.setenv("EVENTS_TOPIC_ARN", messaging.topic_arn + "-missing")
    reset_settings()
    sub = _subscribe(api, account, catalog)  # the request still succeeds: its event is safe in the outbox
    with transaction(tenant_id=catalog.id) as tx:
        pending = tx.one("SELECT attempts, last_error, published_at FROM outbox ORDER BY created_at LIMIT 1")
    assert pending["attempts"] == 1 and pending["last_error"] and pending["published_at"] is None

    monkeypatch.setenv("EVENTS_TOPIC_ARN", messaging.topic_arn)
    reset_settings()
    assert outbox.sweep() == 2  # and the account's account.created, made before the topic was there
    assert outbox.sweep() == 0

    for name in CONSUMERS:
        bodies = [json.loads(m["Body"]) for m in _receive_all(messaging.queues[name]["url"])]
        assert [b["subscriptionId"] for b in bodies if b["eventType"] == "subscription.created"] == [sub["id"]]


def test_the_local_event_pump_drives_the_pipeline_end_to_end(api, account, catalog, messaging):
    _subscribe(api, account, catalog)
    pump = Pump(bindings_for(app_module, messaging.queues), wait_seconds=0)

    handled = pump.drain(timeout=10)

    # Each queue gets the types it handles (its filter policy): subscription.created to all four
    # (generate-invoice, send-notification, audit-log, webhooks); account.created, invoice.created and
    # invoice.paid to audit-log and webhooks; invoice.finalized to those and send-notification (its email).
    assert handled == 4 + 2 + 2 + 2 + 3
    assert _counts(catalog.id) == {"invoices": 1, "lines": 1, "charges": 1, "payments": 1, "audit": 1}
    assert _emails_sent() == 2  # the subscription is active; the first invoice
    for name in CONSUMERS:
        assert _receive_all(messaging.queues[name]["url"]) == []


def test_ops_topic_alarms_are_logged(caplog):
    alarm = json.dumps({"AlarmName": "dlq-not-empty", "NewStateValue": "ALARM", "NewStateReason": "1 message"})
    with Client(app) as client:
        client.lambda_.invoke("ops_notice", client.events.generate_sns_event(alarm, subject="ALARM"))
    assert "dlq-not-empty" in caplog.text


def test_a_subscription_canceled_before_its_event_arrives_is_billed_the_same_and_charged_once(
    api, account, catalog, messaging, gateway
):
    sub = _subscribe(api, account, catalog)
    assert api.post(f"/v1/subscriptions/{sub['id']}/cancel", None, catalog.user).status == 200
    queue = messaging.queues["billing-generate-invoice"]

    with Client(app) as client:
        for _ in range(2):  # and every event delivered twice
            for message in _receive_all(queue["url"]):
                client.lambda_.invoke("generate_invoice", lambda_event([message, message], queue["arn"]))

    # The first period was owed when the subscription was made: what is billed does not
    # depend on when its event arrives. No usage, so no final invoice.
    assert _counts(catalog.id) == {"invoices": 1, "lines": 1, "charges": 1, "payments": 1, "audit": 0}
    assert [c[2] for c in gateway.charges] == [4900]


def test_canceling_now_issues_a_final_invoice_for_its_usage_and_the_pipeline_collects_it(
    api, catalog, messaging, gateway
):
    from datetime import UTC, datetime

    metered = {"metric": "api_calls", "aggregation": "sum", "unit_amount": 2}
    plan = {"code": "metered", "name": "M", "interval": "month", "amount": 1000, "currency": "USD"}
    assert api.post("/v1/plans", {**plan, "usage_prices": [metered]}, catalog.admin).status == 201
    account = api.post("/v1/accounts", {"email": "m@x.test", "name": "M", "currency": "USD"}, catalog.user).body
    sub = api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "metered"}, catalog.user).body
    now = datetime.now(UTC).isoformat()
    usage = {"event_id": "u1", "account_id": account["id"], "metric": "api_calls", "quantity": 7, "timestamp": now}
    assert api.post("/v1/events", usage, catalog.user).body["accepted"] == 1

    canceled = api.post(f"/v1/subscriptions/{sub['id']}/cancel", None, catalog.user)
    Pump(bindings_for(app_module, messaging.queues), wait_seconds=0).drain(timeout=10)

    assert canceled.status == 200 and canceled.body["ended_at"] is not None
    invoices = api.get(f"/v1/invoices?account_id={account['id']}", catalog.user).body["data"]
    by_reason = {i["billing_reason"]: (i["status"], i["total"]) for i in invoices}
    assert by_reason == {"subscription_create": ("paid", 1000), "subscription_cancel": ("paid", 14)}
    assert api.get(f"/v1/accounts/{account['id']}", catalog.user).body["balance"] == 0
    assert sorted(c[2] for c in gateway.charges) == [14, 1000]


def test_an_upgrade_invoiced_now_is_collected_by_the_pipeline_and_every_change_is_audited(
    api, account, catalog, messaging, gateway
):
    plan = {"code": "team", "name": "Team", "interval": "month", "amount": 9900, "currency": "USD"}
    assert api.post("/v1/plans", plan, catalog.admin).status == 201
    sub = _subscribe(api, account, catalog)
    change = {"plan": "team", "proration_behavior": "always_invoice"}
    assert api.post(f"/v1/subscriptions/{sub['id']}", change, catalog.user).status == 200
    assert api.post(f"/v1/subscriptions/{sub['id']}/pause", {}, catalog.user).status == 200
    assert api.post(f"/v1/subscriptions/{sub['id']}/resume", {}, catalog.user).status == 200

    Pump(bindings_for(app_module, messaging.queues), wait_seconds=0).drain(timeout=10)
    # A consumer's payments write invoice.paid events: the outbox sweep publishes them.
    outbox.sweep(older_than_s=0)
    Pump(bindings_for(app_module, messaging.queues), wait_seconds=0).drain(timeout=10)

    invoices = api.get(f"/v1/invoices?account_id={account['id']}", catalog.user).body["data"]
    assert {i["billing_reason"]: i["status"] for i in invoices} == {
        "subscription_create": "paid",
        "subscription_update": "paid",
    }
    assert api.get(f"/v1/accounts/{account['id']}", catalog.user).body["balance"] == 0
    assert len(gateway.charges) == 2
    with transaction(tenant_id=catalog.id) as tx:
        audited = [r[0] for r in tx.run("SELECT action FROM audit_logs WHERE actor = 'system:events' ORDER BY id")]
    # Both invoices were created, finalized and paid: their events come from their status changes.
    assert sorted(audited) == [
        "account.created",
        *["invoice.created"] * 2,
        *["invoice.finalized"] * 2,
        *["invoice.paid"] * 2,
        "subscription.created",
        "subscription.paused",
        "subscription.resumed",
        "subscription.updated",
    ]
