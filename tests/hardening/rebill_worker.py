"""One rebill Lambda process, for test_process_killed: `schedule` runs the daily schedule once,
`drain` delivers the rebill queue to rebill_processor until it is empty, then sweeps the outbox.

``--die AT`` sends this process SIGKILL at one point of the run, as Lambda's sandbox dies on a
timeout or an out-of-memory: no exception, no ``finally``, no queue delete, the database
connection cut wherever it was. Every payment gateway call is appended to ``--gateway-log`` so
the test can see the idempotency key each process sent.

    python -m tests.hardening.rebill_worker drain --die after-commit --gateway-log calls.jsonl
"""

import argparse
import json
import os
import signal
import sys

DEATHS = ("mid-ledger-write", "after-gateway-charge", "after-commit")


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _record_gateway_calls(path: str):
    from chalicelib.billing import payments

    gateway = payments.MockGateway()
    payments.set_gateway(gateway)
    real_charge = gateway.charge

    def charge(**kwargs):
        result = real_charge(**kwargs)
        with open(path, "a") as log:
            log.write(json.dumps({k: str(v) for k, v in kwargs.items()}) + "\n")
        return result

    gateway.charge = charge
    return gateway


def _arm(death: str, gateway) -> None:
    from chalicelib.billing import rebill_batch
    from chalicelib.db import connection

    if death == "mid-ledger-write":
        # Every statement goes through Transaction._execute, the one a transaction's last statement takes
        # with its COMMIT (all_then_commit) included.
        real_execute = connection.Transaction._execute

        def execute(tx, sql, params, after):
            if "INSERT INTO ledger_entries" in sql and after is not None:
                _die()  # the write and its COMMIT about to go in one flush: the transaction dies before it
            rows = real_execute(tx, sql, params, after)
            if "INSERT INTO ledger_entries" in sql:
                _die()  # the rows are written, the transaction not committed
            return rows

        connection.Transaction._execute = execute
    elif death == "after-gateway-charge":
        recorded_charge = gateway.charge

        def charge(**kwargs):
            result = recorded_charge(**kwargs)
            _die()  # the card is charged, nothing of it recorded
            return result

        gateway.charge = charge
    elif death == "after-commit":
        real_process = rebill_batch.process

        def process(records, **kwargs):
            result = real_process(records, **kwargs)
            _die()  # every transaction committed; the queue never hears back
            return result

        rebill_batch.process = process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("schedule", "drain"))
    parser.add_argument("--die", choices=DEATHS)
    parser.add_argument("--gateway-log", required=True)
    parser.add_argument("--queue-url", help="the rebill queue (drain)")
    parser.add_argument("--queue-arn", help="the rebill queue's ARN (drain)")
    args = parser.parse_args(argv)

    import app as app_module
    from chalicelib import outbox
    from devtools.local_aws import app_queues
    from devtools.pump import LambdaContext, Pump, scheduled_event

    if args.step == "schedule":
        from chalicelib.billing import rebill

        # One renewal chain: its first step sends the six accounts as one page, so the drain's first batch
        # is the steps and its second the six accounts together, which each death then meets whole.
        rebill.PARTITIONS = 1
        print(app_module.rebill_schedule(scheduled_event(), LambdaContext("rebill_schedule")))
        return 0
    gateway = _record_gateway_calls(args.gateway_log)
    if args.die:
        _arm(args.die, gateway)
    batch_size = next(size for name, _queue, size in app_queues() if name == "rebill_processor")
    pump = Pump([(app_module.rebill_processor, args.queue_url, args.queue_arn, batch_size)], wait_seconds=0)
    delivered = pump.drain(timeout=60)
    print(f"delivered {delivered} rebill messages; swept {outbox.sweep()} events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
