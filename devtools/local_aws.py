"""Local AWS for `make run`: a moto server on 127.0.0.1 and the resources the app expects.

Provisioning is the same code the tests run against in-process moto, so the
laptop, the tests and the Terraform name the same things. What was created is
written to .local/aws.json for the other local commands (token, replay).
"""

import json
import logging
import os
from dataclasses import dataclass, field

import boto3

from devtools.cognito import LocalPool
from devtools.postgres import LOCAL_DIR

STATE_FILE = LOCAL_DIR / "aws.json"
DEFAULT_PORT = 5100


def quiet_sdk_logs() -> None:
    """boto3 and botocore log at WARNING and above only, for the local commands and the tests.

    Their INFO lines say, for every new client, which endpoint and credentials it found ("Found
    endpoint for sqs via: environment_global", "Found credentials in environment variables"):
    locally always moto's and the dummy keys. Their warnings still show, and so do the app's own
    INFO lines (the root logger is untouched). The app sets the same levels when app.py is imported
    (observability.configure_logging), which a local process may do only after its first client.
    """
    for name in ("botocore", "boto3"):
        logging.getLogger(name).setLevel(logging.WARNING)


def isolate() -> None:
    """Dummy credentials and no metadata probing, for commands run outside make run/test."""
    for name, value in (
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)


def start_server(port: int = DEFAULT_PORT) -> str:
    """A moto server on the loopback interface; returns its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    return endpoint


def provision(endpoint: str | None = None) -> dict:
    """Create the Cognito pool and the messaging resources; return the env vars the app needs."""
    pool = LocalPool(None if endpoint else LOCAL_DIR / "cognito")
    messaging = provision_messaging()
    env = {**pool.env(endpoint), **messaging.env()}
    state = {
        "endpoint": endpoint,
        "cognito_user_pool_id": pool.pool_id,
        "env": env,
        "queues": messaging.queues,
        "database_url": os.environ.get("DATABASE_URL"),
    }
    LOCAL_DIR.mkdir(exist_ok=True)
    STATE_FILE.write_text(json.dumps(state, indent=2))
    return env


def queue_urls() -> list[tuple[str, str, str]]:
    """(name, url, arn) of the provisioned consumer queues."""
    return [(name, q["url"], q["arn"]) for name, q in load_state()["queues"].items()]


def attach() -> dict:
    """This process joins a running `make run`: its moto server, its settings, its database (the pre-token
    trigger, which local commands run as Cognito would, reads the tenant there). Returns the state."""
    isolate()
    quiet_sdk_logs()
    state = load_state()
    os.environ.update(state["env"])
    os.environ["AWS_ENDPOINT_URL"] = state["endpoint"]
    if state.get("database_url"):
        os.environ["DATABASE_URL"] = state["database_url"]
    return state


def load_state() -> dict:
    if not STATE_FILE.exists():
        raise SystemExit("no local AWS state: start `make run` first")
    return json.loads(STATE_FILE.read_text())


SES_SENDER = "billing@example.com"


@dataclass
class Messaging:
    topic_arn: str
    ops_topic_arn: str
    visibility_timeout: int = 10
    queues: dict = field(default_factory=dict)  # queue name -> {"url", "arn", "dlq_url", "dlq_arn"}

    def env(self) -> dict:
        return {
            "EVENTS_TOPIC_ARN": self.topic_arn,
            "SES_SENDER": SES_SENDER,
            "SQS_REPORT_BATCH_ITEM_FAILURES": "true",
            # A crashed consumer's claim must go stale within the visibility
            # timeout, or every redelivery finds it held and the message dead-letters.
            "CONSUMER_STALE_AFTER_S": str(self.visibility_timeout),
        }


def app_queues() -> list:
    """The SQS event sources app.py declares: (handler name, queue name, batch size)."""
    from app import app

    return [(s.name, s.queue, s.batch_size) for s in app.event_sources if getattr(s, "queue", None)]


def provision_messaging(
    region: str = "us-east-1", visibility_timeout: int = 10, max_receive_count: int = 3, verify_sender: bool = True
) -> Messaging:
    """The events topic, one queue + DLQ per consumer, the ops topic, SES.

    The queues in ``handlers.TOPIC_QUEUES`` subscribe to the topic with raw delivery, each with
    its filter policy on the ``eventType`` message attribute (none: every type), as Terraform
    subscribes them (infra/event_routing.json); the others (rebill, webhook-deliveries) are
    fed by the app itself and are not subscribed.
    """
    from app import PREFIX
    from chalicelib import handlers

    sns = boto3.client("sns", region_name=region)
    sqs = boto3.client("sqs", region_name=region)
    messaging = Messaging(
        topic_arn=sns.create_topic(Name=f"{PREFIX}-events")["TopicArn"],
        ops_topic_arn=sns.create_topic(Name=f"{PREFIX}-ops")["TopicArn"],
        visibility_timeout=visibility_timeout,
    )
    for _handler, name, _batch in app_queues():
        dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)})
        url = sqs.create_queue(
            QueueName=name,
            Attributes={"VisibilityTimeout": str(visibility_timeout), "RedrivePolicy": redrive},
        )["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue = name.removeprefix(f"{PREFIX}-")
        if queue in handlers.TOPIC_QUEUES:
            sns.subscribe(TopicArn=messaging.topic_arn, Protocol="sqs", Endpoint=arn, Attributes=_subscription(queue))
        messaging.queues[name] = {"url": url, "arn": arn, "dlq_url": dlq_url, "dlq_arn": dlq_arn}
    if verify_sender:
        boto3.client("ses", region_name=region).verify_email_identity(EmailAddress=SES_SENDER)
    return messaging


def _subscription(queue: str) -> dict:
    """A topic queue's subscription attributes: raw delivery, and its filter policy if it has one."""
    from chalicelib import handlers

    attributes = {"RawMessageDelivery": "true"}
    policy = handlers.filter_policy(queue)
    if policy is not None:
        attributes |= {"FilterPolicyScope": "MessageAttributes", "FilterPolicy": json.dumps(policy)}
    return attributes
