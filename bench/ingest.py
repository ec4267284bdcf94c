"""Usage ingest benchmark: POST /v1/events through the Chalice app, in process, on one thread.

    .venv/bin/python -m bench.ingest                        # 400 batches of 100, 2,000 single events
    .venv/bin/python -m bench.ingest --batches 100 --singles 300 --pairs 50

Each request goes through ``chalice.test.Client`` exactly as tests/functional drive the app:
chalice's local API Gateway event, the app's middleware (invocation log line, CORS, error shape),
RS256 verification of a real access token from the local Cognito pool (moto) against its JWKS,
JSON parsing and schema validation, the tenant's usage rate (a GCRA row, on a tier whose rate never
binds so that the statement still runs), the Idempotency-Key when one is sent, the tenant-scoped
transaction (tenant status, the accounts' lock and billing windows, hard caps, the insert, the audit
row, the key's completion) and, after a batch with a rejected event, the outbox flush (none here),
against a fresh database on the embedded PostgreSQL (fsync on; or DATABASE_URL's server) over its
unix socket. Round trips are the driver's waits on the server, counted per request. Single events
are also sent as deployed: the Lambda handler called with the proxy event API Gateway sends once its
Cognito authorizer verified the token (no local gateway, no RS256 in the app; ``VERIFY_JWT`` off).

The data: --accounts subscribed accounts, half on a plan whose usage price has a hard cap (high
enough never to bind: the cap check runs on every batch), half on an uncapped one; a batch is 100
events over 10 of them. Prints events/s (all requests' events over their total time, and 1/median),
per-request latency (median, p99) for batches, single events, batches with and without an
Idempotency-Key (interleaved pairs, so both see the same machine: the key's cost is the median of
the pairs' ratios), replays of a key, and schema validation alone, including its first use in a
fresh interpreter. A benchmark, not a test: it checks only that every accepted event was stored once.
"""

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from devtools import local_aws, postgres

local_aws.isolate()
os.environ.setdefault("STAGE", "local")

DATABASE = "billing_bench_ingest"
TIER = "INSERT INTO platform_plans (tier, name, usage_requests_per_second, usage_burst)" + (
    " VALUES ('bench', 'Bench', 1000000, 1000000) ON CONFLICT (tier) DO NOTHING"
)
PRICE = {"metric": "api_calls", "aggregation": "sum", "unit_amount": 1}


class Bench:
    """The app behind chalice's test client, a tenant with subscribed accounts, and a USER token."""

    def __init__(self, client, tenant_id: str, token: str, accounts: list[str], client_id: str = ""):
        self.client, self.tenant_id, self.token, self.accounts = client, tenant_id, token, accounts
        self.client_id = client_id  # the pool's app client for people: the token's, and the authorizer's claims'
        self.sent = 0  # event ids are unique across the run
        self.accepted = 0  # as the responses said, replays not counted

    def post(self, body: dict, key: str | None = None):
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.client.http.request("POST", "/v1/events", headers=headers, body=json.dumps(body).encode())

    def events(self, count: int, first_account: int = 0) -> list[dict]:
        now = datetime.now(UTC).isoformat()
        events = []
        for n in range(count):
            self.sent += 1
            account = self.accounts[(first_account + n % 10) % len(self.accounts)]
            events.append(
                {
                    "event_id": f"b-{self.sent}",
                    "account_id": account,
                    "metric": "api_calls",
                    "quantity": 1 + n % 7,
                    "timestamp": now,
                    "properties": {"region": "eu-west-1"},
                }
            )
        return events

    def timed(self, body: dict, key: str | None = None) -> float:
        started = time.perf_counter()
        response = self.post(body, key)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"unexpected {response.status_code}: {response.body[:500]!r}")
        if response.headers.get("Idempotent-Replayed") != "true":
            self.accepted += json.loads(response.body)["accepted"]
        return elapsed


class RoundTrips:
    """The driver's waits on the server (one per round trip), counted while a series runs."""

    count = 0

    @classmethod
    def install(cls) -> None:
        from pg8000 import core

        handle = core.CoreConnection.handle_messages

        def counted(self, context):
            cls.count += 1
            return handle(self, context)

        core.CoreConnection.handle_messages = counted


def setup(admin_url: str, accounts: int, jwks_dir: Path) -> Bench:
    import boto3
    from chalice.test import Client

    from chalicelib.config import reset_settings
    from chalicelib.db import migrate, reset_connection
    from devtools.cognito import LocalPool

    conn = postgres.admin_connection(admin_url)
    conn.run(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    conn.run(f"CREATE DATABASE {DATABASE}")
    conn.close()
    url = postgres.with_database(admin_url, DATABASE)
    pool = LocalPool(jwks_dir)
    os.environ.update(DATABASE_URL=url, **pool.env())
    os.environ["EVENTS_TOPIC_ARN"] = boto3.client("sns").create_topic(Name="bench-events")["TopicArn"]
    reset_settings()
    reset_connection()
    migrate.migrate(log=lambda _: None)
    tenant_id = str(uuid.uuid4())
    owner = postgres.admin_connection(url)
    owner.run(TIER)
    owner.run(
        "INSERT INTO tenants (id, name, email, plan_tier) VALUES (CAST(:id AS uuid), 'Bench', 'ops@bench.test',"
        " 'bench')",
        id=tenant_id,
    )
    owner.close()
    from app import app

    client = Client(app, stage_name="local").__enter__()
    bench = Bench(client, tenant_id, pool.token(tenant_id, "USER"), [], pool.client_id)
    admin = pool.token(tenant_id, "ADMIN")
    for code, price in (("metered", PRICE), ("capped", {**PRICE, "hard_cap": 10**12})):
        plan = {
            "code": code,
            "name": code,
            "interval": "month",
            "amount": 1000,
            "currency": "USD",
            "usage_prices": [price],
        }
        _ok(_call(client, "/v1/plans", plan, admin))
    for n in range(accounts):
        account = {"email": f"c{n}@bench.test", "name": f"C{n}", "currency": "USD"}
        account_id = _ok(_call(client, "/v1/accounts", account, bench.token))["id"]
        plan = "capped" if n % 2 else "metered"
        _ok(_call(client, "/v1/subscriptions", {"account_id": account_id, "plan": plan}, bench.token))
        bench.accounts.append(account_id)
    return bench


def _call(client, path: str, body: dict, token: str):
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    return client.http.request("POST", path, headers=headers, body=json.dumps(body).encode())


def _ok(response) -> dict:
    if response.status_code not in (200, 201):
        raise SystemExit(f"setup failed: {response.status_code} {response.body[:500]!r}")
    return json.loads(response.body)


def series(run, count: int) -> tuple[list[float], float]:
    """``run(n)`` for n in range(count): each one's seconds, and the round trips per request."""
    before = RoundTrips.count
    samples = [run(n) for n in range(count)]
    return samples, (RoundTrips.count - before) / count


def batches(bench: Bench, count: int, key_prefix: str | None = None) -> tuple[list[float], float]:
    key = (lambda n: f"{key_prefix}-{n}") if key_prefix else (lambda n: None)
    return series(lambda n: bench.timed({"events": bench.events(100, n)}, key(n)), count)


def singles(bench: Bench, count: int) -> tuple[list[float], float]:
    return series(lambda n: bench.timed(bench.events(1, n)[0]), count)


class LambdaContext:
    aws_request_id, function_name, memory_limit_in_mb = "bench", "api_handler", 1024

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


def deployed_singles(bench: Bench, count: int) -> tuple[list[float], float]:
    """Single events as deployed: the Lambda handler called with the proxy event API Gateway sends once its
    Cognito authorizer verified the token (VERIFY_JWT off, as in prod: the app reads the authorizer's claims).
    No chalice local gateway and no RS256 verification in the app, which ``singles`` both include."""
    from app import app
    from bench.cold_start import proxy_event
    from chalicelib.config import reset_settings

    def one(n: int) -> float:
        event = proxy_event("POST", "/v1/events", bench.tenant_id, bench.events(1, n)[0], bench.client_id)
        started = time.perf_counter()
        answer = app(event, LambdaContext())
        elapsed = time.perf_counter() - started
        if answer["statusCode"] != 200:
            raise SystemExit(f"unexpected {answer['statusCode']}: {answer['body'][:500]!r}")
        bench.accepted += json.loads(answer["body"])["accepted"]
        return elapsed

    verify = os.environ.get("VERIFY_JWT")
    os.environ["VERIFY_JWT"] = "false"
    reset_settings()
    try:
        series(one, 50)  # warm-up
        return series(one, count)
    finally:
        if verify is None:
            del os.environ["VERIFY_JWT"]
        else:
            os.environ["VERIFY_JWT"] = verify
        reset_settings()


def interleaved(bench: Bench, pairs: int) -> tuple[list[float], list[float], float]:
    """Batches with and without an Idempotency-Key, alternating (the order flips each pair); and the
    round trips a key adds to a batch."""
    keyed, plain, trips = [], [], 0
    for n in range(pairs):
        run = [(keyed, f"bench-{uuid.uuid4()}", 1), (plain, None, -1)]
        for samples, key, sign in run if n % 2 else reversed(run):
            before = RoundTrips.count
            samples.append(bench.timed({"events": bench.events(100, n)}, key))
            trips += sign * (RoundTrips.count - before)
    return keyed, plain, trips / pairs


def replays(bench: Bench, count: int) -> tuple[list[float], float]:
    body, key = {"events": bench.events(100)}, f"bench-replay-{uuid.uuid4()}"
    bench.timed(body, key)
    return series(lambda _n: bench.timed(body, key), count)


def validation_alone(bench: Bench, count: int) -> float:
    """Seconds per batch body for ``validation.validate`` alone (warm)."""
    from chalicelib import validation

    body = {"events": bench.events(100)}
    validation.validate("usage_event_batch", body)
    started = time.perf_counter()
    for _ in range(count):
        validation.validate("usage_event_batch", body)
    return (time.perf_counter() - started) / count


FIRST_USE = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from chalicelib import errors, validation
body = json.loads(sys.argv[2])
def timed(body):
    started = time.perf_counter()
    try:
        validation.validate("usage_event_batch", body)
    except errors.InvalidRequest:
        pass
    return time.perf_counter() - started
first, second = timed(body), timed(body)
body["events"][0]["quantity"] = 1.0
print(json.dumps({"first": first, "second": second, "first_refusal": timed(body)}))
"""


COMPILE = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from chalicelib import validation
started = time.perf_counter()
import fastjsonschema
imported = time.perf_counter()
validation._fast("usage_event_batch")
print(json.dumps({"import": imported - started, "compile": time.perf_counter() - imported}))
"""


def _fresh(code: str, *args: str) -> dict:
    root = str(Path(__file__).resolve().parents[1])
    run = [sys.executable, "-c", code, root, *args]
    return json.loads(subprocess.run(run, capture_output=True, text=True, check=True, cwd=tempfile.gettempdir()).stdout)


def first_use(bench: Bench, runs: int = 5) -> dict:
    """Median seconds, in fresh interpreters, of validating a batch the first time (imports and compiling
    included), the second time, and then refusing one (the failure path's first use)."""
    body = json.dumps({"events": bench.events(100)})
    found = [_fresh(FIRST_USE, body) for _ in range(runs)]
    from chalicelib import validation

    if hasattr(validation, "_fast"):  # the fast validator: its import and the batch schema's compile apart
        found = [{**f, **_fresh(COMPILE)} for f in found]
    return {name: statistics.median(f[name] for f in found) for name in found[0]}


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(label: str, samples: list[float], events_per_request: int, round_trips: float | None = None) -> float:
    """Prints the series; returns its events/s over its total time."""
    rate, median = events_per_request * len(samples) / sum(samples), statistics.median(samples)
    trips = f", {round_trips:.1f} round trips" if round_trips is not None else ""
    print(
        f"{label}: {len(samples):,} requests, {rate:,.0f} events/s ({events_per_request / median:,.0f} at the"
        f" median), median {median * 1000:.2f} ms, p99 {_p(samples, 0.99) * 1000:.1f} ms{trips}"
    )
    return rate


def check(bench: Bench) -> None:
    from chalicelib.db import transaction

    with transaction(tenant_id=bench.tenant_id) as tx:
        stored = tx.scalar("SELECT count(*) FROM usage_events")
    assert stored == bench.accepted, (stored, bench.accepted)
    print(f"check: {stored:,} events stored, each accepted once (warm-up included)")


def run(bench: Bench, args) -> None:
    batches(bench, 30)
    singles(bench, 100)  # warm-up
    RoundTrips.install()
    batch_times, batch_trips = batches(bench, args.batches)
    batch_rate = report("batches of 100", batch_times, 100, batch_trips)
    single_times, single_trips = singles(bench, args.singles)
    single_rate = report("single events", single_times, 1, single_trips)
    deployed_times, deployed_trips = deployed_singles(bench, args.singles)
    deployed_rate = report(
        "single events as deployed (Lambda handler, the authorizer's claims)", deployed_times, 1, deployed_trips
    )
    keyed, plain, key_trips = interleaved(bench, args.pairs)
    report(f"batches of 100 with an Idempotency-Key (+{key_trips:.1f} round trips)", keyed, 100)
    report("batches of 100 without (interleaved)", plain, 100)
    replay_times, replay_trips = replays(bench, 100)
    report("replays of a key (a batch of 100)", replay_times, 100, replay_trips)
    key_cost = statistics.median(k / p for k, p in zip(keyed, plain, strict=True)) - 1
    per_batch, first = validation_alone(bench, 300), first_use(bench)
    median = statistics.median(batch_times)
    print(f"validation alone: {per_batch * 1e3:.2f} ms a batch of 100 ({per_batch / median:.0%} of a batch's median)")
    print(
        f"validation in a fresh interpreter: first batch {first['first'] * 1e3:.1f} ms (imports and compiling"
        f" included), second {first['second'] * 1e3:.2f} ms,"
        f" then a first refusal {first['first_refusal'] * 1e3:.1f} ms (jsonschema's import and compiling)"
    )
    if "compile" in first:
        print(
            f"of the first: importing fastjsonschema {first['import'] * 1e3:.1f} ms, compiling the batch schema"
            f" {first['compile'] * 1e3:.1f} ms"
        )
    print(
        f"ratio batches / 10,000 events/s target: {batch_rate / 10_000:.2f}x ({100 / median / 10_000:.2f}x at the"
        f" median); p99 {_p(batch_times, 0.99) * 1000:.1f} ms (target < 30)"
    )
    single_median = statistics.median(single_times)
    print(
        f"ratio single events / 1,000/s target: {single_rate / 1_000:.2f}x"
        f" ({1 / single_median / 1_000:.2f}x at the median); as deployed {deployed_rate / 1_000:.2f}x"
        f" ({1 / statistics.median(deployed_times) / 1_000:.2f}x at the median)"
    )
    print(f"cost of an Idempotency-Key: {key_cost:+.1%} time per batch, median of {len(keyed)} pairs (target <= 10%)")
    check(bench)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--singles", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=200, help="batches with and without an Idempotency-Key, each")
    parser.add_argument("--accounts", type=int, default=20)
    args = parser.parse_args(argv)

    from moto import mock_aws

    # A server of its own: another bench stops the server it started when it exits, mid-run for us.
    admin_url = postgres.ensure_server(postgres.LOCAL_DIR / "pg-bench-ingest")
    with mock_aws(), tempfile.TemporaryDirectory() as jwks_dir:
        with contextlib.redirect_stdout(io.StringIO()):  # the EMF lines of the setup's subscriptions
            bench = setup(admin_url, args.accounts, Path(jwks_dir))
        print(__doc__.split("\n\n")[2].replace("\n", " "))
        run(bench, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
