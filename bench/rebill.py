"""Rebill benchmark: selection + enqueue, processing, end to end, against the set-based limit.

    .venv/bin/python -m bench.rebill                 # 100,000 due accounts
    .venv/bin/python -m bench.rebill --accounts 20000 --workers 2

Builds N due accounts (spread over tenants, each with a metered plan and two usage
events in the period being closed; --lifecycle-share of them, 10% by default, half
with a downgrade scheduled for this boundary and half at the end of a trial) in a
fresh database on the embedded PostgreSQL (or DATABASE_URL's server), then
measures, on this machine:

1. the same rows a rebill writes (invoice, two lines, charge, payment, payment
   attempt, advanced account and subscription) written by one set-based SQL
   statement per table in a transaction that is rolled back: the physical limit;
2. selection: rebill.due() keyset pages over every due account;
3. the SQS path for a sample (--sqs-sample): SendMessageBatch to moto and the
   local pump draining it into rebill_processor. moto's SQS costs O(queue depth)
   per message (25 ms per 10 messages at a depth of 1,000, measured), so all N
   accounts through it would time the emulator, not the app;
4. processing: the rebill_processor handler over SQS-shaped batches of ten for the
   rest, with the mock gateway, on --workers threads (Lambda's concurrency, capped
   here by the machine's 2 cores);
and prints accounts/second for each and the ratios. A benchmark, not a test: it
asserts only that every account was billed exactly once.
"""

import argparse
import json
import os
import threading
import time
from contextlib import contextmanager

from devtools import local_aws, postgres

local_aws.isolate()
os.environ.setdefault("SQS_REPORT_BATCH_ITEM_FAILURES", "true")

SETUP = [
    "INSERT INTO tenants (id, name, email) SELECT gen_random_uuid(), 'Bench ' || g, 'ops@bench.test'"
    " FROM generate_series(1, :tenants) g",
    "INSERT INTO plans (tenant_id, code, name, interval, amount, currency, usage_prices)"
    " SELECT id, 'pro', 'Pro', 'month', 4900, 'USD',"
    ' \'[{"metric": "api_calls", "aggregation": "sum", "unit_amount": 2}]\' FROM tenants',
    "CREATE TEMP TABLE bench_plans AS SELECT row_number() OVER (ORDER BY id) - 1 AS n, id, tenant_id FROM plans",
    "INSERT INTO plans (tenant_id, code, name, interval, amount, currency) SELECT id, 'basic', 'Basic', 'month', 900,"
    " 'USD' FROM tenants",
    "INSERT INTO accounts (tenant_id, email, name, currency, plan_id, billing_anchor, next_billing_at)"
    " SELECT p.tenant_id, 'c' || g || '@bench.test', 'Customer ' || g, 'USD', p.id, :anchor,"
    " CAST(:anchor AS timestamptz) + interval '1 month'"
    " FROM generate_series(1, :accounts) g JOIN bench_plans p ON p.n = g % :tenants",
    "INSERT INTO subscriptions (tenant_id, account_id, plan_id, billing_anchor, current_period_start,"
    " current_period_end) SELECT tenant_id, id, plan_id, billing_anchor, billing_anchor, next_billing_at FROM accounts",
    "INSERT INTO usage_events (tenant_id, event_id, account_id, metric, quantity, occurred_at)"
    " SELECT a.tenant_id, a.id || '-' || k, a.id, 'api_calls', 100 * k, a.billing_anchor + k * interval '1 day'"
    " FROM accounts a CROSS JOIN generate_series(1, 2) k",
    # Every :every-th account has a downgrade to "basic" scheduled for this boundary, and the one after
    # it a trial ending there (its first paid period starts at the boundary).
    "CREATE TEMP TABLE bench_lifecycle AS SELECT id, row_number() OVER (ORDER BY id) AS n FROM subscriptions",
    "UPDATE subscriptions s SET pending_change = jsonb_build_object('plan_id', b.id, 'plan_code', b.code,"
    " 'plan_name', b.name, 'interval', b.interval, 'interval_count', b.interval_count, 'amount', b.amount,"
    " 'currency', b.currency, 'usage_prices', b.usage_prices, 'trial_usage', b.trial_usage, 'quantity', 1)"
    " FROM bench_lifecycle l, plans b WHERE l.id = s.id AND l.n % :every = 1 AND b.tenant_id = s.tenant_id"
    " AND b.code = 'basic'",
    "UPDATE subscriptions s SET status = 'trialing', trial_start = s.current_period_start,"
    " trial_end = s.current_period_end, billing_anchor = s.current_period_end"
    " FROM bench_lifecycle l WHERE l.id = s.id AND l.n % :every = 2",
    "ANALYZE",
]

SET_BASED = [
    """CREATE TEMP TABLE due ON COMMIT DROP AS
       SELECT a.id, a.tenant_id, a.next_billing_at, s.id AS sid, s.current_period_start, p.amount, p.currency,
              a.next_billing_at + interval '1 month' AS period_end,
              COALESCE((SELECT sum(u.quantity) FROM usage_events u WHERE u.tenant_id = a.tenant_id
                         AND u.account_id = a.id AND u.metric = 'api_calls'
                         AND u.occurred_at >= s.current_period_start AND u.occurred_at < a.next_billing_at), 0)
                AS quantity
         FROM accounts a JOIN subscriptions s ON s.account_id = a.id JOIN plans p ON p.id = s.plan_id
        WHERE a.status IN ('ACTIVE', 'PENDING') AND a.next_billing_at <= now()""",
    """CREATE TEMP TABLE inv ON COMMIT DROP AS
       WITH ins AS (
         INSERT INTO invoices (tenant_id, account_id, subscription_id, number, status, currency, subtotal, total,
                               amount_due, amount_paid, period_start, period_end, finalized_at, paid_at)
         SELECT tenant_id, id, sid, 'INV-' || id, 'paid', currency, amount + 2 * quantity, amount + 2 * quantity,
                0, amount + 2 * quantity, next_billing_at, period_end, now(), now() FROM due
         RETURNING id, tenant_id, account_id, subscription_id, total, currency, period_start, period_end)
       SELECT * FROM ins""",
    """INSERT INTO invoice_lines (tenant_id, invoice_id, kind, description, metric, quantity, unit_amount, amount,
                                 currency, period_start, period_end, position)
       SELECT i.tenant_id, i.id, 'subscription', 'Pro (pro)', NULL, 1, d.amount, d.amount, i.currency,
              i.period_start, i.period_end, 0 FROM inv i JOIN due d ON d.id = i.account_id
       UNION ALL
       SELECT i.tenant_id, i.id, 'usage', 'api_calls (sum)', 'api_calls', d.quantity, 2, 2 * d.quantity, i.currency,
              i.period_start, i.period_end, 1 FROM inv i JOIN due d ON d.id = i.account_id""",
    """INSERT INTO ledger_entries (tenant_id, account_id, entry_type, amount, currency, invoice_id, period_start,
                                  idempotency_key, description)
       SELECT tenant_id, account_id, 'charge', total, currency, id, period_start,
              'charge:' || account_id || ':' || period_start, 'Invoice' FROM inv
       UNION ALL
       SELECT tenant_id, account_id, 'payment', -total, currency, id, NULL, 'payment:' || id || ':0', 'Payment'
         FROM inv""",
    """INSERT INTO payment_attempts (tenant_id, account_id, invoice_id, attempt, idempotency_key, amount, currency,
                                    outcome, gateway_reference)
       SELECT tenant_id, account_id, id, 0, 'pay:' || subscription_id || ':' || period_start || ':0', total,
              currency, 'succeeded', 'mock_pay:' || id FROM inv""",
    "UPDATE subscriptions s SET current_period_start = d.next_billing_at, current_period_end = d.period_end"
    " FROM due d WHERE s.id = d.sid",
    "UPDATE accounts a SET next_billing_at = d.period_end FROM due d WHERE a.id = d.id",
]


@contextmanager
def timed(results: dict, name: str):
    started = time.perf_counter()
    yield
    results[name] = time.perf_counter() - started


def build(admin_url: str, accounts: int, tenants: int, every: int) -> str:
    from chalicelib.config import reset_settings
    from chalicelib.db import migrate, reset_connection

    conn = postgres.admin_connection(admin_url)
    conn.run("DROP DATABASE IF EXISTS billing_bench WITH (FORCE)")
    conn.run("CREATE DATABASE billing_bench")
    conn.close()
    url = postgres.with_database(admin_url, "billing_bench")
    os.environ["DATABASE_URL"] = url
    reset_settings()
    reset_connection()
    migrate.migrate(log=lambda _: None)
    from datetime import UTC, datetime, timedelta

    anchor = (datetime.now(UTC) - timedelta(days=45)).replace(day=10, hour=8, minute=0, second=0, microsecond=0)
    conn = postgres.admin_connection(url)
    for statement in SETUP:
        conn.run(statement, **_params(statement, accounts=accounts, tenants=tenants, anchor=anchor, every=every))
    conn.close()
    return url


def _params(statement: str, **values) -> dict:
    return {k: v for k, v in values.items() if f":{k}" in statement}


def set_based(url: str) -> float:
    conn = postgres.admin_connection(url)
    try:
        conn.run("BEGIN")
        started = time.perf_counter()
        for statement in SET_BASED:
            conn.run(statement)
        elapsed = time.perf_counter() - started
        billed = conn.run("SELECT count(*) FROM inv")[0][0]
        conn.run("ROLLBACK")
    finally:
        conn.close()
    return elapsed, billed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="concurrent processors (Lambda concurrency)")
    parser.add_argument("--sqs-sample", type=int, default=1000, help="accounts sent through moto's SQS")
    parser.add_argument("--batch-size", type=int, default=100, help="SQS batch size (app.py maps 100)")
    parser.add_argument(
        "--lifecycle-share", type=float, default=0.10, help="share of accounts with a scheduled change or a trial"
    )
    args = parser.parse_args(argv)
    every = max(2, round(2 / args.lifecycle_share)) if args.lifecycle_share else 10**12

    admin_url = postgres.ensure_server(postgres.LOCAL_DIR / "pg-bench")
    results: dict[str, float] = {}
    with timed(results, "setup"):
        url = build(admin_url, args.accounts, args.tenants, every)
    print(f"setup: {args.accounts:,} due accounts over {args.tenants} tenants in {results['setup']:.1f} s")
    print(f"of them, 1 in {every} with a downgrade scheduled and 1 in {every} at a trial's end")

    limit_s, limit_n = set_based(url)
    rate("set-based SQL, same rows (physical limit)", limit_n, limit_s)

    from chalicelib.billing import calendar, payments, rebill

    payments.set_gateway(payments.MockGateway())
    now = calendar.utcnow()
    with timed(results, "select"):
        messages = [message for page in rebill.due(now) for message in page]
    rate("selection (database, keyset pages)", len(messages), results["select"])

    sample = messages[: args.sqs_sample]
    enqueued, enqueue_s, drained, drain_s = _through_moto(now, sample)
    rate(f"enqueue to moto SQS ({len(sample):,}-account sample, SendMessageBatch x10)", enqueued, enqueue_s)
    rate("moto SQS receive + handler + delete (same sample)", drained, drain_s)

    with timed(results, "process"):
        processed, handler_s = _process(messages[len(sample) :], args.workers, args.batch_size)
    rate(
        f"processing: rebill handler, {args.workers} worker(s), SQS batches of {args.batch_size}", processed, handler_s
    )
    select_rate = len(messages) / results["select"]
    process_rate = processed / handler_s
    end_to_end = 1 / (1 / select_rate + 1 / process_rate)
    print(f"end to end (selection + processing, without the SQS emulator): {end_to_end:,.0f} accounts/s")
    limit = limit_n / limit_s
    print(f"ratio set-based limit / processing: {limit / process_rate:.1f}x")
    print(f"ratio set-based limit / selection: {limit / select_rate:.2f}x")
    _check(url, args.accounts, every)
    return 0


def _through_moto(now, sample: list[dict]) -> tuple[int, float, int, float]:
    """The real SQS path for a sample: moto's SQS costs O(queue depth) per message, so not for all N."""
    from moto import mock_aws

    import app as app_module
    from chalicelib import aws
    from devtools.pump import Pump

    with mock_aws():
        aws.reset_clients()
        sqs = aws.client("sqs")
        url = sqs.create_queue(QueueName="bench-rebill", Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
        started = time.perf_counter()
        for start in range(0, len(sample), 10):
            entries = [{"Id": str(i), "MessageBody": json.dumps(m)} for i, m in enumerate(sample[start : start + 10])]
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
        enqueue_s = time.perf_counter() - started
        pump = Pump([(app_module.rebill_processor, url, "arn:aws:sqs:us-east-1:000000000000:bench-rebill", 10)], 0)
        started = time.perf_counter()
        drained = pump.drain(timeout=3600)
        drain_s = time.perf_counter() - started
    aws.reset_clients()
    return len(sample), enqueue_s, drained, drain_s


def _process(messages: list[dict], workers: int, batch_size: int) -> tuple[int, float]:
    """Run the SQS handler over SQS-shaped batches (the mapping's batch size), on ``workers`` threads."""
    import app as app_module
    from chalicelib.db import reset_connection
    from devtools.pump import LambdaContext, lambda_event

    batches = [
        [{"MessageId": f"m{i + j}", "ReceiptHandle": "r", "Body": json.dumps(m)} for j, m in enumerate(chunk)]
        for i in range(0, len(messages), batch_size)
        for chunk in [messages[i : i + batch_size]]
    ]
    lock = threading.Lock()
    failures = []

    def work():
        while True:
            with lock:
                if not batches:
                    break
                batch = batches.pop()
            result = app_module.rebill_processor(lambda_event(batch, "arn:bench"), LambdaContext("rebill"))
            failures.extend(result["batchItemFailures"])
        reset_connection()

    started = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    return len(messages), time.perf_counter() - started


def rate(label: str, count: int, seconds: float) -> None:
    print(f"{label}: {count:,} in {seconds:.2f} s = {count / seconds:,.0f} accounts/s")


def _check(url: str, accounts: int, every: int) -> None:
    conn = postgres.admin_connection(url)
    charges = conn.run("SELECT count(*), count(DISTINCT account_id) FROM ledger_entries WHERE entry_type = 'charge'")
    [[changed, trialing, pending]] = conn.run(
        "SELECT count(*) FILTER (WHERE p.code = 'basic'), count(*) FILTER (WHERE s.status = 'trialing'),"
        " count(*) FILTER (WHERE s.pending_change IS NOT NULL) FROM subscriptions s JOIN plans p ON p.id = s.plan_id"
    )
    [[first_paid]] = conn.run(
        "SELECT count(*) FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id JOIN subscriptions s"
        " ON s.id = i.subscription_id WHERE s.trial_end IS NOT NULL AND l.kind = 'subscription' AND l.amount = 4900"
    )
    conn.close()
    assert charges == [[accounts, accounts]], f"expected one charge per account, got {charges}"
    expected = (accounts + every - 1) // every, (accounts + every - 2) // every
    assert (changed, first_paid) == expected and (trialing, pending) == (0, 0), (changed, first_paid, trialing)
    print(f"check: {accounts:,} accounts, each charged exactly once; {changed:,} downgrades applied at the boundary,")
    print(f"       {first_paid:,} trials ended with their first paid period, none left trialing or pending")


if __name__ == "__main__":
    raise SystemExit(main())
