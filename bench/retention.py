"""Retention benchmark: how fast each purge removes what is due, and how long one batch holds its locks.

    .venv/bin/python -m bench.retention                  # 50,000 due rows per table, batches of 2,000
    .venv/bin/python -m bench.retention --rows 200000 --batch 5000

A fresh database on the bench server, filled set-based as the owner across 20 tenants: per table
--rows rows past their keep and as many that must stay (young rows; for usage, half of the old
usage falls in a live subscription's current period and stays too). Webhook deliveries are
delivered, with two attempts each, and name published events. Then ``retention.purge_batch`` runs
each purge to the end, in the order ``retention.run`` takes them, and the bench prints per table
the rows removed, rows/s, the batches and the slowest batch (one transaction: the longest any
purge holds a lock), and checks that exactly the due rows went. A benchmark, not a test.
"""

import argparse
import os
import time

from devtools import local_aws, postgres

local_aws.isolate()

FILL = {
    "tenants": "INSERT INTO tenants (id, name, email) SELECT gen_random_uuid(), 'T' || n, 't@bench.test'"
    " FROM generate_series(1, 20) n",
    "plans": "INSERT INTO plans (tenant_id, code, name, interval, amount, currency)"
    " SELECT id, 'pro', 'Pro', 'month', 4900, 'USD' FROM tenants",
    "accounts": "INSERT INTO accounts (tenant_id, email, name, currency, plan_id)"
    " SELECT p.tenant_id, 'c@bench.test', 'C', 'USD', p.id FROM plans p, generate_series(1, 50)",
    # Half the accounts have a live subscription whose period began 60 days ago: their usage since stays.
    "subscriptions": "INSERT INTO subscriptions (tenant_id, account_id, plan_id, billing_anchor,"
    " current_period_start, current_period_end)"
    " SELECT a.tenant_id, a.id, a.plan_id, now() - interval '60 days', now() - interval '60 days',"
    " now() + interval '30 days' FROM (SELECT a.*, row_number() OVER () AS n FROM accounts a) a WHERE n % 2 = 0",
    "idempotency_keys": "INSERT INTO idempotency_keys (tenant_id, key, request_method, request_path, request_hash,"
    " expires_at) SELECT t.id, 'k' || n, 'POST', '/v1/accounts', 'h',"
    " CASE WHEN n / 20 % 2 = 0 THEN now() - interval '1 hour' ELSE now() + interval '1 hour' END"
    " FROM generate_series(1, :twice) n JOIN tenants t ON true WHERE n % 20 = 0",
    "processed_events": "WITH t AS (SELECT array_agg(id) AS ids FROM tenants)"
    " INSERT INTO processed_events (tenant_id, consumer, message_id, status, claimed_at)"
    " SELECT t.ids[n % 20 + 1], 'audit-log', 'm' || n, 'done',"
    " now() - CASE WHEN n % 2 = 0 THEN interval '20 days' ELSE interval '2 days' END"
    " FROM t, generate_series(1, :twice) n",
    "webhook_endpoints": "INSERT INTO webhook_endpoints (tenant_id, url, event_types, secret)"
    " SELECT id, 'https://hooks.bench.test/', '{*}', 'whsec_bench' FROM tenants",
    "outbox": "INSERT INTO outbox (tenant_id, event_type, payload, created_at, published_at)"
    " SELECT e.tenant_id, 'invoice.paid', '{\"object\": {}}', now() - d.ago, now() - d.ago"
    " FROM (SELECT tenant_id, row_number() OVER () AS n FROM webhook_endpoints, generate_series(1, :twice / 20)) e"
    " CROSS JOIN LATERAL (SELECT CASE WHEN e.n % 2 = 0 THEN interval '40 days' ELSE interval '1 day' END AS ago) d",
    "webhook_deliveries": "INSERT INTO webhook_deliveries (tenant_id, endpoint_id, event_id, event_type, status,"
    " next_attempt_at, created_at, delivered_at) SELECT o.tenant_id, w.id, o.id, o.event_type, 'delivered', NULL,"
    " o.created_at, o.created_at FROM outbox o JOIN webhook_endpoints w ON w.tenant_id = o.tenant_id",
    "webhook_attempts": "INSERT INTO webhook_attempts (tenant_id, delivery_id, attempted_at, status_code, latency_ms)"
    " SELECT d.tenant_id, d.id, d.created_at, 200, 40 FROM webhook_deliveries d, generate_series(1, 2)",
    # Usage: a quarter old and idle (moves), a quarter old in a live period (stays), half young (stays).
    "usage_events": "WITH a AS (SELECT array_agg(id ORDER BY id) AS ids, array_agg(tenant_id ORDER BY id) AS tids"
    " FROM accounts) INSERT INTO usage_events (tenant_id, event_id, account_id, metric, quantity, occurred_at,"
    " received_at) SELECT a.tids[n % 1000 + 1], 'e' || n, a.ids[n % 1000 + 1], 'api_calls', 1, now() - ago, now() - ago"
    " FROM a, generate_series(1, :twice * 2) n"
    " CROSS JOIN LATERAL (SELECT CASE WHEN n % 2 = 0 THEN interval '1 day' * (40 + n % 15)"
    " ELSE interval '1 day' END AS ago) x",
}
DUE = {
    "idempotency_keys": "SELECT count(*) FROM idempotency_keys WHERE expires_at < now()",
    "processed_events": "SELECT count(*) FROM processed_events WHERE claimed_at < now() - interval '15 days'",
    "webhook_deliveries": "SELECT count(*) FROM webhook_deliveries WHERE created_at < now() - interval '30 days'",
    "outbox": "SELECT count(*) FROM outbox WHERE created_at < now() - interval '30 days'",
    "usage_events": "SELECT count(*) FROM usage_events u WHERE received_at < now() - interval '35 days'"
    " AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.account_id = u.account_id"
    " AND s.current_period_start <= u.occurred_at)",
}


def _database(admin_url: str, name: str):
    from chalicelib.config import reset_settings
    from chalicelib.db import migrate, reset_connection

    conn = postgres.admin_connection(admin_url)
    conn.run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.run(f"CREATE DATABASE {name}")
    conn.close()
    os.environ["DATABASE_URL"] = postgres.with_database(admin_url, name)
    reset_settings()
    reset_connection()
    migrate.migrate(log=lambda _: None)
    return postgres.admin_connection(os.environ["DATABASE_URL"])


def _fill(owner, rows: int) -> dict[str, int]:
    for sql in FILL.values():
        owner.run(sql, twice=rows * 2) if ":twice" in sql else owner.run(sql)
    owner.run("ANALYZE")
    return {table: owner.run(sql)[0][0] for table, sql in DUE.items()}


def _drain(purge, batch: int) -> tuple[int, float, int, float]:
    from chalicelib import retention

    removed, batches, slowest = 0, 0, 0.0
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        purged, finished = retention.purge_batch(purge, batch)
        slowest = max(slowest, time.perf_counter() - t0)
        removed, batches = removed + purged, batches + 1
        if finished:
            return removed, time.perf_counter() - started, batches, slowest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="rows due per table (about as many stay)")
    parser.add_argument("--batch", type=int, default=2000, help="rows a batch looks at")
    args = parser.parse_args(argv)
    from chalicelib import retention

    admin_url = postgres.ensure_server(postgres.LOCAL_DIR / "pg-bench")
    owner = _database(admin_url, "billing_bench_retention")
    due = _fill(owner, args.rows)
    print(f"retention: {args.rows:,} rows asked per table, batches of {args.batch:,}")
    print(f"{'table':<20}{'due':>10}{'removed':>10}{'rows/s':>10}{'batches':>9}{'slowest batch':>15}")
    ok = True
    for purge in retention.PURGES:
        removed, seconds, batches, slowest = _drain(purge, args.batch)
        ok &= removed == due[purge.table]
        rate = removed / seconds if seconds else 0
        figures = f"{due[purge.table]:>10,}{removed:>10,}{rate:>10,.0f}{batches:>9}{slowest * 1000:>12.0f} ms"
        print(f"{purge.table:<20}{figures}")
    left = owner.run("SELECT count(*) FROM webhook_attempts")[0][0]
    print(f"webhook_attempts left (cascaded with their deliveries): {left:,}; every due row and only those: {ok}")
    owner.close()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
