"""Charging a round's payments at Stripe: one batch of renewals, one charge at a time against several at once.

    .venv/bin/python -m bench.charges                        # 100 accounts, 300 ms a PaymentIntent, 8 at once
    .venv/bin/python -m bench.charges --latency-ms 500 --concurrency 16

One tenant's renewals as one SQS batch through ``rebill_batch.process`` (rebill_processor's body), paid by
the official ``stripe`` SDK against the local stand-in (devtools/stripe_standin.py), which holds every API
answer --latency-ms (creating and confirming a PaymentIntent at Stripe takes roughly 300-700 ms); the
tenant's keys are read from Secrets Manager (moto, in process), as deployed. Two runs, each on a fresh
database: ``PAYMENT_CONCURRENCY=1`` (every charge after the last) and ``--concurrency``. Prints each run's
seconds for the batch, the most requests the stand-in was answering at once, and the ratio. A benchmark, not
a test: it checks only that every account was charged once and billed once.
"""

import argparse
import json
import os
import time
from datetime import UTC, datetime, timedelta

from bench.webhooks import fresh_database
from devtools import local_aws, postgres

local_aws.isolate()
os.environ.update(STAGE="local", GATEWAY_CREDENTIALS_STORE="secretsmanager", SQS_REPORT_BATCH_ITEM_FAILURES="true")
ANCHOR = datetime(2027, 1, 31, 9, tzinfo=UTC)
DUE = datetime(2027, 2, 28, 9, tzinfo=UTC)


def run(admin_url: str, standin, accounts: int, concurrency: int, latency_s: float) -> tuple[float, int]:
    """One batch of ``accounts`` renewals charged ``concurrency`` at a time: (seconds, most in flight)."""
    import uuid

    from chalicelib.billing import gateway_credentials, payments, rebill, rebill_batch
    from chalicelib.config import reset_settings
    from chalicelib.db import transaction
    from tests import billing, gateway

    fresh_database(admin_url, "billing_bench_charges")
    os.environ["PAYMENT_CONCURRENCY"] = str(concurrency)
    reset_settings()
    gateway_credentials.forget()
    payments.set_gateway(None)
    tenant = str(uuid.uuid4())
    with transaction(tenant_id=tenant) as tx:
        tx.run("INSERT INTO tenants (id, name, email) VALUES (:id, 'Bench', 'ops@bench.test')", id=tenant)
    plan = billing.plan(tenant, usage_prices=[])
    ids = [billing.subscribed_account(tenant, plan, ANCHOR) for _ in range(accounts)]
    at_stripe = gateway.OnStandin(standin, tenant, ids)
    # The renewals as the daily run selects them (its only tenant on this fresh database).
    due = [message for page in rebill.due(DUE + timedelta(hours=1)) for message in page]
    records = [{"messageId": m["accountId"], "body": json.dumps(m)} for m in due]
    standin.latency_seconds, standin.most_in_flight = latency_s, 0
    started = time.perf_counter()
    result = rebill_batch.process(records, now=DUE + timedelta(hours=1))
    elapsed = time.perf_counter() - started
    standin.latency_seconds = 0.0
    assert result == {"batchItemFailures": []}, result
    charged = sorted(account for _pi, account, _amount, _currency in at_stripe.charges)
    assert charged == sorted(ids), "every account charged exactly once"
    for account in ids:
        assert billing.state(tenant, account)["entries"] == [("charge", 4900), ("payment", -4900)]
    return elapsed, standin.most_in_flight


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100, help="renewals in the batch (app.py maps 100)")
    parser.add_argument("--latency-ms", type=int, default=300, help="how long Stripe takes to answer a request")
    parser.add_argument("--concurrency", type=int, default=8, help="PAYMENT_CONCURRENCY of the second run")
    args = parser.parse_args(argv)

    from moto import mock_aws

    from devtools.stripe_standin import StripeStandin

    admin_url = postgres.ensure_server(postgres.LOCAL_DIR / os.environ.get("BENCH_PGDATA", "pg-bench"))
    standin = StripeStandin()
    os.environ["STRIPE_API_BASE"] = standin.start()
    latency = args.latency_ms / 1000
    try:
        with mock_aws():
            figures = {width: run(admin_url, standin, args.accounts, width, latency) for width in (1, args.concurrency)}
    finally:
        standin.stop()
    for width, (seconds, most) in figures.items():
        print(
            f"PAYMENT_CONCURRENCY={width}: a batch of {args.accounts} renewals at {args.latency_ms} ms a"
            f" PaymentIntent in {seconds:.2f} s = {args.accounts / seconds:,.0f} accounts/s;"
            f" at most {most} requests at Stripe at once"
        )
    one, many = figures[1][0], figures[args.concurrency][0]
    print(f"ratio {args.concurrency} at once / one at a time: {one / many:.1f}x (the pool's width: {args.concurrency})")
    print("check: every account charged once at Stripe and billed once, in both runs (processor timeout: 30 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
