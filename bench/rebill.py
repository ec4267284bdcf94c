"""Rebill benchmark: selection + enqueue, processing, end to end, against the set-based limit.

    .venv/bin/python -m bench.rebill                 # 100,000 due accounts
    .venv/bin/python -m bench.rebill --accounts 20000 --workers 2

Builds N due accounts (spread over tenants, each with a metered plan and two usage
events in the period being closed; --lifecycle-share of them, 10% by default, half
with a downgrade scheduled for this boundary and half at the end of a trial) in a
fresh database on the embedded PostgreSQL (or DATABASE_URL's server), then
measures, on this machine:

1. after the SQS sample (3.) has put rows in the output tables and they are analyzed:
   the same rows a rebill leaves (invoice, two lines, charge, payment, payment attempt,
   the invoice events, advanced account and subscription) written by one set-based
   statement per tenant, as billing_app under RLS, rolled back: the physical limit;
   also with the schema before migration 0013 (undone, then redone) and for the
   handler's own writes (billed, then paid); medians of --reps after a warm-up, WAL per
   account;
2. selection + enqueue as deployed (bench/rebill_fanout.py): the schedule opens the run's
   chains and every step message goes through rebill_processor, with SendMessageBatch
   captured in memory by the app's own boto3 client; each due account sent once;
3. the SQS path for a sample (--sqs-sample): SendMessageBatch to moto and the
   local pump draining it into rebill_processor. moto's SQS costs O(queue depth)
   per message (25 ms per 10 messages at a depth of 1,000, measured), so all N
   accounts through it would time the emulator, not the app;
4. processing: the rebill_processor handler over SQS-shaped batches (--batch-size) for
   the rest, with the mock gateway, on --workers threads (Lambda's concurrency, capped
   here by the machine's 2 cores), each repetition in a process of its own
   (bench/rebill_handler.py) that runs two batches untimed first and counts database
   round trips; in turns with today's handler (--baseline, a commit: its code on its own
   database with today's schema, and on this one), medians of --reps;
and prints accounts/second for each and the ratios, the whole run's wall time with N
workers (--lambda-workers, by default rebill_processor's prod reservation) and the main
tables' sizes after the run. --process-sample processes only that many (after the SQS
sample) and extrapolates, saying so. A benchmark, not a test: it asserts only that every
account was sent once and billed exactly once (or, sampled, each processed one).

    .venv/bin/python -m bench.rebill --accounts 1000000 --process-sample 100000
"""

import argparse
import json
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path

from bench import rebill_fanout
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
# --price-list (#18): "pro" also bills distinct users of the period (unique_count of a property, four
# logins by three users each: 30 more) and carries a 19% exclusive tax rate on its price (a tax line).
PRICE_LIST = [
    "INSERT INTO tax_rates (tenant_id, display_name, percentage, inclusive) SELECT id, 'VAT', 19, false FROM tenants",
    "UPDATE plans p SET usage_prices = p.usage_prices || CAST(:unique AS jsonb),"
    " tax_rates = ARRAY(SELECT t.id FROM tax_rates t WHERE t.tenant_id = p.tenant_id) WHERE p.code = 'pro'",
    "INSERT INTO usage_events (tenant_id, event_id, account_id, metric, quantity, occurred_at, properties)"
    " SELECT a.tenant_id, a.id || '-l' || k, a.id, 'logins', 1, a.billing_anchor + k * interval '1 hour',"
    " jsonb_build_object('user', 'u' || (k % 3)) FROM accounts a CROSS JOIN generate_series(1, 4) k",
]
UNIQUE_USERS = [{"metric": "logins", "aggregation": "unique_count", "field": "user", "unit_amount": 10}]

# One statement per tenant, a data-modifying CTE per table (no temporary tables: their catalog rows
# would count in the WAL per account).
SET_BASED = [
    """WITH due AS MATERIALIZED (
         SELECT a.id, a.next_billing_at, s.id AS sid, s.current_period_start, p.amount, p.currency,
                a.next_billing_at + interval '1 month' AS period_end,
                COALESCE((SELECT sum(u.quantity) FROM usage_events u
                           WHERE u.account_id = a.id AND u.metric = 'api_calls'
                             AND u.occurred_at >= s.current_period_start AND u.occurred_at < a.next_billing_at), 0)
                  AS quantity
           FROM accounts a JOIN subscriptions s ON s.account_id = a.id JOIN plans p ON p.id = s.plan_id
          WHERE a.status IN ('ACTIVE', 'PENDING') AND a.next_billing_at <= now()
          ORDER BY a.next_billing_at, a.id
          LIMIT :cap),
       inv AS (
         INSERT INTO invoices (account_id, subscription_id, number, status, currency, subtotal, total, amount_due,
                               amount_paid, period_start, period_end, finalized_at, paid_at)
         SELECT id, sid, 'INV-' || id, 'paid', currency, amount + 2 * quantity, amount + 2 * quantity, 0,
                amount + 2 * quantity, next_billing_at, period_end, now(), now() FROM due
         RETURNING id, account_id, subscription_id, total, currency, period_start, period_end),
       lines AS (
         INSERT INTO invoice_lines (invoice_id, kind, description, metric, quantity, unit_amount, amount, currency,
                                    period_start, period_end, position)
         SELECT i.id, 'subscription', 'Pro (pro)', NULL, 1, d.amount, d.amount, i.currency, i.period_start,
                i.period_end, 0 FROM inv i JOIN due d ON d.id = i.account_id
         UNION ALL
         SELECT i.id, 'usage', 'api_calls (sum)', 'api_calls', d.quantity, 2, 2 * d.quantity, i.currency,
                i.period_start, i.period_end, 1 FROM inv i JOIN due d ON d.id = i.account_id),
       ledger AS (
         INSERT INTO ledger_entries (account_id, entry_type, amount, currency, invoice_id, period_start,
                                     idempotency_key, description)
         SELECT account_id, 'charge', total, currency, id, period_start, 'charge:' || account_id || ':' || period_start,
                'Invoice' FROM inv
         UNION ALL
         SELECT account_id, 'payment', -total, currency, id, NULL, 'payment:' || id || ':0', 'Payment' FROM inv),
       attempts AS (
         INSERT INTO payment_attempts (account_id, invoice_id, attempt, idempotency_key, amount, currency, outcome,
                                       gateway_reference)
         SELECT account_id, id, 0, 'pay:' || subscription_id || ':' || period_start || ':0', total, currency,
                'succeeded', 'mock_pay:' || id FROM inv),
       subs AS (
         UPDATE subscriptions s SET current_period_start = d.next_billing_at, current_period_end = d.period_end
           FROM due d WHERE s.id = d.sid),
       accts AS (UPDATE accounts a SET next_billing_at = d.period_end FROM due d WHERE a.id = d.id)
     SELECT count(*) FROM inv""",
]


@contextmanager
def timed(results: dict, name: str):
    started = time.perf_counter()
    yield
    results[name] = time.perf_counter() - started


def build(admin_url: str, accounts: int, tenants: int, every: int, price_list: bool = False) -> str:
    from chalicelib.config import reset_settings
    from chalicelib.db import migrate, reset_connection

    name = os.environ.get("BENCH_DATABASE", "billing_bench")  # two benches on one server: a database each
    conn = postgres.admin_connection(admin_url)
    conn.run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.run(f"CREATE DATABASE {name}")
    conn.close()
    url = postgres.with_database(admin_url, name)
    os.environ["DATABASE_URL"] = url
    reset_settings()
    reset_connection()
    migrate.migrate(log=lambda _: None)
    from datetime import UTC, datetime, timedelta

    anchor = (datetime.now(UTC) - timedelta(days=45)).replace(day=10, hour=8, minute=0, second=0, microsecond=0)
    conn = postgres.admin_connection(url)
    values = {"accounts": accounts, "tenants": tenants, "anchor": anchor, "every": every}
    for statement in SETUP[:-1] + (PRICE_LIST if price_list else []) + SETUP[-1:]:
        conn.run(statement, **_params(statement, **values, unique=json.dumps(UNIQUE_USERS)))
    conn.close()
    return url


def _params(statement: str, **values) -> dict:
    return {k: v for k, v in values.items() if f":{k}" in statement}


# The handler's own writes, set-based: the renewal billed (the invoice open, the charge, a pending
# attempt, the subscription and account advanced), then its payment recorded (the attempt resolved,
# the invoice paid with its invoice.paid event, the payment entry): what a rebill writes on its way,
# two versions of the invoice and of the attempt, not only the rows it leaves.
TWO_PHASE = [
    SET_BASED[0]
    .replace("'INV-' || id, 'paid'", "'INV-' || id, 'open'")
    .replace(
        "amount + 2 * quantity, amount + 2 * quantity, 0,\n                amount + 2 * quantity, next_billing_at,"
        " period_end, now(), now() FROM due",
        "amount + 2 * quantity, amount + 2 * quantity,\n                amount + 2 * quantity, 0, next_billing_at,"
        " period_end, now(), NULL FROM due",
    )
    .replace(
        "\n         UNION ALL\n         SELECT account_id, 'payment', -total, currency, id, NULL, 'payment:' || id ||"
        " ':0', 'Payment' FROM inv",
        "",
    )
    .replace("'succeeded', 'mock_pay:' || id FROM inv", "'pending', NULL FROM inv"),
    """WITH paid AS (
         UPDATE payment_attempts SET outcome = 'succeeded', gateway_reference = 'mock_pay:' || id, resolved_at = now()
          WHERE outcome = 'pending' RETURNING account_id, invoice_id, amount, currency),
       invoiced AS (
         UPDATE invoices i SET status = 'paid', amount_paid = i.amount_due, amount_due = 0, paid_at = now()
           FROM paid p WHERE i.id = p.invoice_id),
       posted AS (
         INSERT INTO ledger_entries (account_id, entry_type, amount, currency, invoice_id, idempotency_key, description)
         SELECT account_id, 'payment', -amount, currency, invoice_id, 'payment:' || invoice_id || ':0', 'Payment'
           FROM paid)
     SELECT count(*) FROM paid""",
]
# What migration 0013 changed, undone and redone around the runs that measure the schema before it (the
# foreign keys NOT VALID: checked for the rows written, no scan of the old ones), so one run measures both.
SCHEMA_BEFORE_0013 = [
    *(
        f"ALTER TABLE {table} ADD CONSTRAINT {table}_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id)"
        " NOT VALID"
        for table in ("subscriptions", "invoices", "invoice_lines", "ledger_entries", "payment_attempts")
    ),
    "CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL",
    "CREATE INDEX payment_attempts_pending ON payment_attempts (created_at) WHERE outcome = 'pending'",
    "ALTER FUNCTION api_ts(timestamptz) IMMUTABLE",
    *(
        f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT gen_random_uuid()"
        for table in ("invoices", "invoice_lines", "ledger_entries", "payment_attempts", "outbox", "audit_logs")
    ),
]
SCHEMA_WITH_0013 = [
    *(
        f"ALTER TABLE {table} DROP CONSTRAINT {table}_tenant_id_fkey"
        for table in ("subscriptions", "invoices", "invoice_lines", "ledger_entries", "payment_attempts")
    ),
    "DROP INDEX outbox_unpublished",
    "DROP INDEX payment_attempts_pending",
    "ALTER FUNCTION api_ts(timestamptz) STABLE",
    *(
        f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT uuid_time_ordered()"
        for table in ("invoices", "invoice_lines", "ledger_entries", "payment_attempts", "outbox", "audit_logs")
    ),
]
# The tables a renewal writes: analyzed once they hold rows, so plans (the foreign keys' checks
# among them) are not made for empty tables.
OUTPUT_TABLES = (
    "invoices",
    "invoice_lines",
    "ledger_entries",
    "payment_attempts",
    "outbox",
    "audit_logs",
    "number_sequences",
    "subscriptions",
    "accounts",
)
LIMIT_INCLUDES = (
    "per tenant, as billing_app under RLS (app.tenant_id set), one set-based statement per table: the invoice"
    " (paid), two lines, charge and payment ledger entries, a succeeded payment attempt, the three invoice events"
    " the trigger writes, subscription and account advanced; rolled back (no commit flush); no Python, no driver"
)


def set_based(url: str, reps: int = 3, cap: int = 20_000) -> tuple[float, int]:
    """The physical limit: ``reps`` repetitions after one to warm up, of the rows at rest with the schema before
    0013 and with it, and of the handler's writes (billed, then paid), each over the same due accounts (at most
    ``cap``, spread over the tenants), rolled back. Prints the medians and the WAL per account; returns (seconds,
    accounts) of the median repetition of the rows at rest with this schema."""
    variants = {
        "rows at rest, schema before 0013": (SET_BASED, SCHEMA_BEFORE_0013, SCHEMA_WITH_0013),
        "rows at rest": (SET_BASED, [], []),
        "the handler's writes (billed, then paid)": (TWO_PHASE, [], []),
    }
    conn = postgres.admin_connection(url)
    try:
        conn.run(f"ANALYZE {', '.join(OUTPUT_TABLES)}")
        tenants = [str(row[0]) for row in conn.run("SELECT id FROM tenants ORDER BY id")]
        per_tenant = -(-cap // len(tenants))
        runs: dict[str, list] = {name: [] for name in variants}
        for rep in range(reps + 1):
            for name, (statements, undo, redo) in variants.items():
                for statement in undo:
                    conn.run(statement)
                result = _set_based_once(conn, tenants, per_tenant, statements)
                for statement in redo:
                    conn.run(statement)
                if rep:  # the first is the warm-up
                    runs[name].append(result)
    finally:
        conn.close()
    for name, results in runs.items():
        seconds, billed, (wal, images) = sorted(results)[len(results) // 2]
        print(
            f"set-based SQL, {name}: {billed:,} in {seconds:.2f} s = {billed / seconds:,.0f} accounts/s,"
            f" WAL {wal / billed / 1024:.1f} KB per account ({images / billed:.2f} full-page images)"
            f" (median of {len(results)})"
        )
    print(f"  the limit (rows at rest) includes: {LIMIT_INCLUDES}")
    seconds, billed, _wal = sorted(runs["rows at rest"])[len(runs["rows at rest"]) // 2]
    return seconds, billed


def _set_based_once(conn, tenants: list[str], per_tenant: int, statements: list[str]) -> tuple[float, int, tuple]:
    """One repetition: each tenant's due accounts in a transaction of its own, rolled back, then the dead rows
    vacuumed away. (seconds, accounts, (WAL bytes, full-page images) this session wrote for them)."""
    seconds = billed = 0
    wal_before = _wal(conn)
    for tenant_id in tenants:
        conn.run("BEGIN")
        conn.run("SET LOCAL ROLE billing_app")
        conn.run("SELECT set_config('app.tenant_id', :t, true)", t=tenant_id)
        started = time.perf_counter()
        count = [conn.run(statement, **_params(statement, cap=per_tenant))[0][0] for statement in statements][0]
        seconds += time.perf_counter() - started
        billed += count
        conn.run("ROLLBACK")
    wal_after = _wal(conn)
    conn.run(f"VACUUM {', '.join(OUTPUT_TABLES)}")
    return seconds, billed, (wal_after[0] - wal_before[0], wal_after[1] - wal_before[1])


def _wal(conn) -> tuple[int, int]:
    """(WAL bytes, full-page images) this session has written, outside a transaction: PostgreSQL 18's per-backend
    statistics (autovacuum's WAL meanwhile is not counted); before 18, the server's position and no image count."""
    try:
        conn.run("SELECT pg_stat_force_next_flush()")
        [[wal, images]] = conn.run("SELECT wal_bytes, wal_fpi FROM pg_stat_get_backend_wal(pg_backend_pid())")
        return int(wal), int(images)
    except Exception:  # noqa: BLE001 - no per-backend WAL statistics before PostgreSQL 18
        return int(conn.run("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')")[0][0]), 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="concurrent processors (Lambda concurrency)")
    parser.add_argument(
        "--sqs-sample",
        type=int,
        default=1000,
        help="accounts sent through moto's SQS (their rows are in the output tables when they are analyzed)",
    )
    parser.add_argument("--batch-size", type=int, default=100, help="SQS batch size (app.py maps 100)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of the set-based and processing steps")
    parser.add_argument("--baseline", default=BASELINE, help="the commit of today's handler ('' for none)")
    parser.add_argument(
        "--mixed-batches",
        action="store_true",
        help="shuffle each chunk before batching: tenants interleaved, as a standard queue may deliver them",
    )
    parser.add_argument(
        "--lifecycle-share", type=float, default=0.10, help="share of accounts with a scheduled change or a trial"
    )
    parser.add_argument(
        "--price-list",
        action="store_true",
        help="pro also bills distinct users (unique_count) and carries a 19%% tax rate (#18); no baseline then",
    )
    rebill_fanout.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.price_list:
        args.baseline = ""  # today's handler (29c8c05) has neither unique_count nor tax rates
    every = max(2, round(2 / args.lifecycle_share)) if args.lifecycle_share else 10**12

    # BENCH_PGDATA: a server of its own (a bench stops the server it started when it exits).
    admin_url = postgres.ensure_server(postgres.LOCAL_DIR / os.environ.get("BENCH_PGDATA", "pg-bench"))
    results: dict[str, float] = {}
    with timed(results, "setup"):
        url = build(admin_url, args.accounts, args.tenants, every, args.price_list)
    print(f"setup: {args.accounts:,} due accounts over {args.tenants} tenants in {results['setup']:.1f} s")
    print(f"of them, 1 in {every} with a downgrade scheduled and 1 in {every} at a trial's end")

    from chalicelib.billing import calendar, payments

    payments.set_gateway(payments.MockGateway())
    now = calendar.utcnow()
    # Selection + enqueue as deployed: the schedule's chains, each step through rebill_processor.
    keep = args.sqs_sample + args.process_sample if args.process_sample else args.accounts
    fan = rebill_fanout.run(now, args.partitions, keep)
    results["select"] = fan.seconds
    rebill_fanout.report(fan, args.accounts)
    messages = fan.messages()

    sample = messages[: args.sqs_sample]
    if len(sample) < 1000:  # measured: 10 rows analyzed made the round's write 3.4x slower (its FK checks)
        print(
            f"warning: the output tables are analyzed holding {len(sample):,} accounts' rows (under 1,000): the"
            " foreign-key checks on invoices may keep sequential-scan plans and slow every handler measured here"
        )
    enqueued, enqueue_s, drained, drain_s = _through_moto(now, sample)
    rate(f"enqueue to moto SQS ({len(sample):,}-account sample, SendMessageBatch x10)", enqueued, enqueue_s)
    rate("moto SQS receive + handler + delete (same sample)", drained, drain_s)
    # After the sample: the output tables hold rows, analyzed before anything is measured.
    limit_s, limit_n = set_based(url, args.reps)

    with timed(results, "process"):
        rest = messages[len(sample) :]
        setup = (admin_url, args.accounts, args.tenants, every)
        processed, handler_s = _process(
            rest, args.workers, args.batch_size, args.reps, args.baseline, setup, args.mixed_batches
        )
    rate(
        f"processing: rebill handler, {args.workers} worker(s), SQS batches of {args.batch_size}", processed, handler_s
    )
    select_rate = fan.accounts / results["select"]
    process_rate = processed / handler_s
    end_to_end = 1 / (1 / select_rate + 1 / process_rate)
    print(f"end to end (selection + processing, without the SQS emulator): {end_to_end:,.0f} accounts/s")
    limit = limit_n / limit_s
    print(f"ratio set-based limit / processing: {limit / process_rate:.1f}x")
    print(f"ratio set-based limit / selection: {limit / select_rate:.2f}x")
    rebill_fanout.wall_time(fan, process_rate, args.lambda_workers, args.sqs_ms)
    if len(messages) == args.accounts:
        _check(url, args.accounts, every, args.price_list)
    else:  # a sample: the rest stay due
        print(f"processed a sample of {len(messages):,} of {args.accounts:,}; rates and wall time extrapolate from it")
        rebill_fanout.check_sample(url, len(messages))
    rebill_fanout.table_sizes(url, len(messages), args.accounts)
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


# Today's handler, for the same run: the commit before issue #17's write path (its code, its driver
# settings), on a database of its own built from that commit's migrations (today's schema) with the
# same setup, and on this run's database (this schema) to tell the code's share from the schema's.
BASELINE = "29c8c05"
THIS, TODAY, TODAY_HERE = "this handler", "today's handler, today's schema", "today's handler, this schema"


def _process(
    messages: list[dict],
    workers: int,
    batch_size: int,
    reps: int = 3,
    baseline: str | None = BASELINE,
    setup: tuple | None = None,
    mixed: bool = False,
) -> tuple[int, float]:
    """Processing: this checkout's rebill handler and today's (``baseline``), in turns, each over ``reps``
    equal chunks of due accounts in a process of its own (bench/rebill_handler.py: two batches untimed
    first, database round trips counted). ``setup`` (admin URL, accounts, tenants, every) builds today's
    database; ``mixed`` shuffles each chunk (tenants interleaved in every batch). Prints the medians and the
    ratios; returns this checkout's median repetition (accounts, seconds)."""
    tree = _baseline_tree(baseline) if baseline else None
    paths = [(THIS, None, None)]
    if tree:
        paths.append((TODAY_HERE, tree, None))
        if setup:
            paths.append((TODAY, tree, _today_database(tree, *setup)))
    here = [path for path in paths if path[2] is None]
    size = len(messages) // (len(here) * reps)
    chunks = {None: iter(messages[i * size : (i + 1) * size] for i in range(len(here) * reps))}
    if len(paths) > len(here):
        today_url, today_messages = paths[-1][2]
        chunks[today_url] = iter(today_messages[i * size : (i + 1) * size] for i in range(reps))
    runs: dict[str, list[dict]] = {name: [] for name, _tree, _db in paths}
    for rep in range(reps):
        for name, path_tree, database in paths if rep % 2 == 0 else paths[::-1]:
            url = database[0] if database else None
            chunk = next(chunks[url])
            if mixed:
                random.Random(rep).shuffle(chunk)
            runs[name].append(_run_handler(chunk, path_tree, workers, batch_size, url))
    leftover = messages[len(here) * reps * size :]
    if leftover:  # billed too, untimed: every account is billed once
        _run_handler(leftover, None, workers, batch_size)
    if mixed:
        print("processing batches mixed: each chunk shuffled, tenants interleaved in every batch")
    for name, results in runs.items():
        _report_processing(name, results, workers, batch_size)
    rates = {name: _median(results)["accounts"] / _median(results)["seconds"] for name, results in runs.items()}
    for name in (TODAY, TODAY_HERE):
        if name in rates:
            print(f"ratio this handler / {name}: {rates[THIS] / rates[name]:.2f}x")
    best = _median(runs[THIS])
    return best["accounts"], best["seconds"]


def _today_database(tree: str, admin_url: str, accounts: int, tenants: int, every: int) -> tuple[str, list[dict]]:
    """Today's schema (the baseline's migrations) with the same due accounts, warmed up by two batches of today's
    handler and analyzed; (its URL, its renewals in selection order, a page of a thousand sorted by tenant)."""
    from datetime import UTC, datetime, timedelta

    from chalicelib.db import migrate

    name = os.environ.get("BENCH_DATABASE", "billing_bench") + "_today"
    conn = postgres.admin_connection(admin_url)
    conn.run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.run(f"CREATE DATABASE {name}")
    conn.close()
    url = postgres.with_database(admin_url, name)
    conn = postgres.admin_connection(url)
    try:
        migrate._ensure_table(conn)
        for migration in migrate.discover(Path(tree) / "migrations"):
            migrate._apply(conn, migration)
        anchor = (datetime.now(UTC) - timedelta(days=45)).replace(day=10, hour=8, minute=0, second=0, microsecond=0)
        for statement in SETUP:
            conn.run(statement, **_params(statement, accounts=accounts, tenants=tenants, anchor=anchor, every=every))
        rows = conn.run(
            "SELECT tenant_id::text, id::text, next_billing_at FROM accounts"
            " WHERE status IN ('ACTIVE', 'PENDING') AND next_billing_at <= now() ORDER BY next_billing_at, id"
        )
    finally:
        conn.close()
    due = [{"tenantId": t, "accountId": a, "kind": "renewal", "dueAt": _iso(at)} for t, a, at in rows]
    pages = [sorted(due[i : i + 1000], key=lambda m: m["tenantId"]) for i in range(0, len(due), 1000)]
    messages = [message for page in pages for message in page]
    warm = 2 * 100
    _run_handler(messages[:warm], tree, 1, 100, url)
    conn = postgres.admin_connection(url)
    conn.run(f"ANALYZE {', '.join(OUTPUT_TABLES)}")
    conn.close()
    return url, messages[warm:]


def _iso(value) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _median(results: list[dict]) -> dict:
    return sorted(results, key=lambda r: r["accounts"] / r["seconds"])[len(results) // 2]


def _report_processing(name: str, results: list[dict], workers: int, batch_size: int) -> None:
    median = _median(results)
    batches, groups = sum(r["batches"] for r in results), sum(r["groups"] for r in results)
    trips = sum(r["round_trips"] for r in results)
    print(
        f"processing, {name}: {median['accounts']:,} in {median['seconds']:.2f} s ="
        f" {median['accounts'] / median['seconds']:,.0f} accounts/s (median of {len(results)};"
        f" {workers} worker(s), SQS batches of {batch_size}); all:"
        f" {', '.join(format(r['accounts'] / r['seconds'], ',.0f') for r in results)}"
    )
    print(
        f"  database round trips: {trips / batches:.1f} per batch, {groups / batches:.1f} tenant groups per batch,"
        f" {trips / groups:.1f} per tenant group; WAL"
        f" {sum(r['wal_bytes'] for r in results) / sum(r['accounts'] for r in results) / 1024:.1f} KB per account"
    )


def _baseline_tree(commit: str) -> str | None:
    """The app at ``commit`` (git archive into a temporary directory), or None without git or that commit."""
    import atexit
    import shutil
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parents[1]
    target = tempfile.mkdtemp(prefix="rebill-baseline-")
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", commit, "app.py", "chalicelib", "devtools", "migrations"],
        capture_output=True,
    )
    if archive.returncode != 0:
        print(f"today's handler: no commit {commit} here ({archive.stderr.decode().strip()}); measuring this one only")
        return None
    subprocess.run(["tar", "-x", "-C", target], input=archive.stdout, check=True)
    return target


def _run_handler(messages: list[dict], tree: str | None, workers: int, batch_size: int, url: str | None = None) -> dict:
    import subprocess
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(messages, file)
    command = [sys.executable, str(Path(__file__).with_name("rebill_handler.py")), file.name]
    command += ["--workers", str(workers), "--batch-size", str(batch_size)] + (["--tree", tree] if tree else [])
    try:
        env = {**os.environ, "DATABASE_URL": url} if url else None
        done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"rebill_handler failed:\n{exc.stderr[-4000:]}") from exc
    finally:
        os.unlink(file.name)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not result["failures"], result
    return result


def _check_price_list(url: str) -> None:
    """Every renewal of "pro" billed its 19% tax on its own line, and its three distinct users (30) unless the
    period was a trial (the plan's trial usage is free)."""
    conn = postgres.admin_connection(url)
    [[renewals, users, taxed, tax, trials]] = conn.run(
        "SELECT count(*), count(*) FILTER (WHERE EXISTS (SELECT 1 FROM invoice_lines l WHERE l.invoice_id = i.id"
        " AND l.metric = 'logins' AND l.quantity = 3 AND l.amount = 30)),"
        " count(*) FILTER (WHERE EXISTS (SELECT 1 FROM invoice_lines l WHERE l.invoice_id = i.id AND l.kind = 'tax')),"
        " sum(i.tax), count(*) FILTER (WHERE s.trial_end IS NOT NULL) FROM invoices i"
        " JOIN subscriptions s ON s.id = i.subscription_id JOIN plans p ON p.id = s.plan_id"
        " WHERE i.billing_reason = 'subscription_cycle' AND p.code = 'pro'"
    )
    conn.close()
    assert renewals and renewals == users + trials == taxed, (renewals, users, trials, taxed)
    print(f"check: {renewals:,} renewals of pro billed a 19% tax line ({tax:,} in tax), and 3 distinct users")
    print(f"       each but the {trials:,} that ended a trial (usage in a trial is free)")


def rate(label: str, count: int, seconds: float) -> None:
    print(f"{label}: {count:,} in {seconds:.2f} s = {count / seconds:,.0f} accounts/s")


def _check(url: str, accounts: int, every: int, price_list: bool = False) -> None:
    if price_list:
        _check_price_list(url)
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
