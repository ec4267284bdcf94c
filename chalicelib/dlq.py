"""Dead-letter replay: move messages from a DLQ back to its source queue.

    python -m chalicelib.dlq --queue billing-send-notification --dry-run
    python -m chalicelib.dlq --queue billing-send-notification [--max 100]

Replay is safe because every consumer is idempotent: a message that had in fact
been processed is acknowledged and skipped. Each message is sent to the source
before it is deleted from the DLQ, so a crash duplicates rather than loses.
"""

import argparse
import sys


def replay(dlq_url: str, source_url: str, *, max_messages: int | None = None, dry_run: bool = False) -> int:
    """Returns how many messages were (or, with ``dry_run``, would be) moved."""
    from chalicelib import aws

    sqs = aws.client("sqs")
    if dry_run:
        attributes = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
        available = int(attributes["Attributes"]["ApproximateNumberOfMessages"])
        return min(available, max_messages) if max_messages is not None else available
    moved = 0
    while max_messages is None or moved < max_messages:
        want = 10 if max_messages is None else min(10, max_messages - moved)
        messages = sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=want, MessageAttributeNames=["All"], WaitTimeSeconds=0
        ).get("Messages", [])
        if not messages:
            break
        for message in messages:
            send = {"QueueUrl": source_url, "MessageBody": message["Body"]}
            if message.get("MessageAttributes"):
                send["MessageAttributes"] = message["MessageAttributes"]
            sqs.send_message(**send)
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
    return moved


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="move messages from a queue's DLQ back to it")
    parser.add_argument("--queue", required=True, help="source queue name; its DLQ is <name>-dlq")
    parser.add_argument("--max", type=int, default=None, help="move at most this many")
    parser.add_argument("--dry-run", action="store_true", help="only count what would move")
    args = parser.parse_args(argv)
    from chalicelib import aws

    sqs = aws.client("sqs")
    source = sqs.get_queue_url(QueueName=args.queue)["QueueUrl"]
    dlq = sqs.get_queue_url(QueueName=f"{args.queue}-dlq")["QueueUrl"]
    count = replay(dlq, source, max_messages=args.max, dry_run=args.dry_run)
    print(f"{'would move' if args.dry_run else 'moved'} {count} message(s) from {args.queue}-dlq to {args.queue}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
