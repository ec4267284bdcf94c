"""Which queue each domain event reaches: the topic's subscription filter policies, in moto.

The policies come from ``chalicelib.handlers`` (``TOPIC_QUEUES``, ``filter_policy``) and match
the ``eventType`` message attribute the outbox publishes; Terraform reads the same routing from
infra/event_routing.json.
"""

import json

import boto3

from chalicelib import events, handlers, outbox
from chalicelib.db import transaction
from devtools import event_routing

TOPIC_QUEUES = ("generate-invoice", "send-notification", "audit-log", "webhooks")
OTHER_QUEUES = ("rebill", "webhook-deliveries")


def _event_types_received(url: str) -> list[str]:
    sqs = boto3.client("sqs")
    found = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        found += [json.loads(m["Body"])["eventType"] for m in batch]
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
        )
    return sorted(found)


def _received(messaging) -> dict[str, list[str]]:
    return {
        queue: _event_types_received(messaging.queues[f"billing-{queue}"]["url"])
        for queue in (*TOPIC_QUEUES, *OTHER_QUEUES)
    }


def _publish(tenant_id: str, event_types) -> None:
    """Stored in the outbox and published by it, as every change's events are."""
    with transaction(tenant_id=tenant_id) as tx:
        for event_type in event_types:
            outbox.add(tx, event_type, {}, {})
    assert outbox.flush(tenant_id, limit=len(events.KNOWN_TYPES)) == len(event_types)


def test_subscription_created_reaches_every_topic_queue_and_account_created_only_audit_and_webhooks(
    make_tenant, messaging
):
    _publish(make_tenant(), ["account.created", "subscription.created"])

    assert _received(messaging) == {
        "generate-invoice": ["subscription.created"],
        "send-notification": ["subscription.created"],
        "audit-log": ["account.created", "subscription.created"],
        "webhooks": ["account.created", "subscription.created"],
        "rebill": [],
        "webhook-deliveries": [],
    }


def test_every_event_type_reaches_exactly_the_topic_queues_whose_handlers_take_it(make_tenant, messaging):
    _publish(make_tenant(), events.KNOWN_TYPES)

    received = _received(messaging)

    for queue, table in handlers.TOPIC_QUEUES.items():
        assert received[queue] == sorted(table), queue
    assert received["audit-log"] == received["webhooks"] == sorted(events.KNOWN_TYPES)
    assert received["rebill"] == received["webhook-deliveries"] == []


def test_the_apis_own_events_are_routed_by_their_type(messaging, api, catalog, account):
    reply = api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user)
    assert reply.status == 201, reply.body

    received = _received(messaging)

    assert received["generate-invoice"] == ["subscription.created"]
    assert "account.created" not in received["send-notification"]
    assert {"account.created", "subscription.created"} <= set(received["audit-log"])
    assert received["webhooks"] == received["audit-log"]


def test_moto_subscribes_the_queues_terraform_subscribes_with_the_same_policies(messaging):
    sns = boto3.client("sns")
    subscribed = {}
    for subscription in sns.list_subscriptions_by_topic(TopicArn=messaging.topic_arn)["Subscriptions"]:
        attributes = sns.get_subscription_attributes(SubscriptionArn=subscription["SubscriptionArn"])["Attributes"]
        assert attributes["RawMessageDelivery"] == "true"
        policy = attributes.get("FilterPolicy")
        assert attributes.get("FilterPolicyScope") == ("MessageAttributes" if policy else None)
        subscribed[subscription["Endpoint"].split(":")[-1].removeprefix("billing-")] = json.loads(policy or "null")

    routing = json.loads(event_routing.DOCUMENT.read_text())
    assert subscribed == {
        queue: None if types is None else {"eventType": types} for queue, types in routing["topic_queues"].items()
    }
    assert sorted(subscribed) == sorted(TOPIC_QUEUES)


def test_the_queues_the_app_feeds_itself_exist_with_dead_letter_queues_and_no_subscription(messaging):
    sqs = boto3.client("sqs")
    for queue in OTHER_QUEUES:
        created = messaging.queues[f"billing-{queue}"]
        redrive = sqs.get_queue_attributes(QueueUrl=created["url"], AttributeNames=["RedrivePolicy"])["Attributes"]
        assert json.loads(redrive["RedrivePolicy"])["deadLetterTargetArn"] == created["dlq_arn"]
    assert sorted(OTHER_QUEUES) == json.loads(event_routing.DOCUMENT.read_text())["other_queues"]
