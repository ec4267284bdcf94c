"""The local event pump: what Lambda's SQS event-source mappings do, for `make run`.

`chalice local` serves HTTP only. The pump long-polls each queue app.py consumes,
hands the handler a real SQS event (the same record shape Lambda delivers), and
deletes only the records the handler did not report in ``batchItemFailures``; a
handler that raises has its whole batch left to reappear after the visibility
timeout. Redelivery counts and dead-lettering are the queue's own (moto's
maxReceiveCount redrive). It also runs the outbox sweep once a minute, as the
schedule would.
"""

import logging
import threading
import time

import boto3

log = logging.getLogger("billing.pump")


class LambdaContext:
    """The attributes handlers and Chalice read from a Lambda context."""

    def __init__(self, name: str):
        self.function_name = name
        self.aws_request_id = f"local-{time.time_ns()}"
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:000000000000:function:{name}"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def scheduled_event(region: str = "us-east-1") -> dict:
    """The EventBridge event a ``@app.schedule`` handler receives."""
    return {
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "detail": {},
        "id": f"local-{time.time_ns()}",
        "account": "000000000000",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": region,
        "resources": [],
        "version": "0",
    }


def lambda_event(messages: list[dict], queue_arn: str, region: str = "us-east-1") -> dict:
    """ReceiveMessage results as the SQS event Lambda would deliver."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


def queue_depth(url: str, sqs=None) -> int:
    """Messages in a queue, visible or in flight, without receiving them (a receive would hide them)."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = (sqs or boto3.client("sqs")).get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes[name]) for name in names)


class Pump:
    def __init__(self, bindings: list[tuple], wait_seconds: int = 1):
        """``bindings``: (handler callable, queue url, queue arn, batch size) per consumer."""
        self.bindings = bindings
        self.wait_seconds = wait_seconds
        self.sqs = boto3.client("sqs")
        self.stop = threading.Event()
        self.delivered = 0

    def poll_once(self, handler, url: str, arn: str, batch_size: int) -> int:
        """One receive and dispatch; returns how many records were handed to the handler."""
        messages = self.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(batch_size, 10),
            WaitTimeSeconds=self.wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        event = lambda_event(messages, arn)
        try:
            result = handler(event, LambdaContext(getattr(handler, "__name__", "handler"))) or {}
        except Exception:  # noqa: BLE001 - like Lambda: the whole batch comes back after the visibility timeout
            log.exception("handler for %s raised; batch left for redelivery", arn)
            return len(messages)
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start : start + 10])
            ]
            self.sqs.delete_message_batch(QueueUrl=url, Entries=entries)
        self.delivered += len(messages)
        return len(messages)

    def drain(self, timeout: float = 10.0) -> int:
        """Poll every queue until all are empty (or ``timeout``); for tests and one-off runs."""
        deadline = time.monotonic() + timeout
        total = 0
        while time.monotonic() < deadline:
            handled = sum(self.poll_once(*binding) for binding in self.bindings)
            total += handled
            if not handled:
                return total
        return total

    def run_forever(self, sweep=None, sweep_every_s: float = 60.0) -> list[threading.Thread]:
        """Start one polling thread per queue (and a sweeper); they stop when ``self.stop`` is set."""
        threads = [threading.Thread(target=self._loop, args=binding, daemon=True) for binding in self.bindings]
        if sweep is not None:
            threads.append(threading.Thread(target=self._sweeper, args=(sweep, sweep_every_s), daemon=True))
        for thread in threads:
            thread.start()
        return threads

    def _loop(self, handler, url, arn, batch_size):
        while not self.stop.is_set():
            try:
                self.poll_once(handler, url, arn, batch_size)
            except Exception:  # noqa: BLE001 - keep pumping; the error is logged
                log.exception("polling %s failed", url)
                self.stop.wait(1)

    def _sweeper(self, sweep, every):
        while not self.stop.wait(every):
            try:
                sweep()
            except Exception:  # noqa: BLE001
                log.exception("outbox sweep failed")


def bindings_for(app_module, queues: dict) -> list[tuple]:
    """Pair each SQS handler in app.py with its queue from local provisioning."""
    from devtools.local_aws import app_queues

    return [
        (getattr(app_module, handler_name), queues[queue]["url"], queues[queue]["arn"], batch)
        for handler_name, queue, batch in app_queues()
    ]
