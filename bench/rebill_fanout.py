"""The daily run's fan-out in the rebill bench (bench/rebill.py): selection + enqueue through the
schedule's chains, with the rebill queue held in memory; the whole run's wall time with N workers;
table sizes after the run.

The queue: the app's own boto3 SQS client answers SendMessageBatch and GetQueueUrl in botocore's
``before-call`` event, after the client has validated and serialized the request, so the app's
path and the SDK's CPU are real and only the network is not (its cost is modelled, --sqs-ms).
moto's SQS costs O(queue depth) per message: at a million accounts it would time moto, not us.

The fan-out runs as deployed: ``rebill.start`` (the schedule's body), then every step message, in
the order sent, through ``app.rebill_processor`` as a batch of one (a continuation among a batch of
accounts gets the full page); account messages are kept for the processing phase.
"""

import io
import json
import math
import re
import threading
import time
from collections import deque
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/000000000000/billing-rebill"
MAIN_TF = Path(__file__).resolve().parents[1] / "infra" / "main.tf"
TABLES = [
    "accounts",
    "subscriptions",
    "usage_events",
    "invoices",
    "invoice_lines",
    "ledger_entries",
    "payment_attempts",
    "outbox",
    "processed_events",
    "idempotency_keys",
    "audit_logs",
    "rebill_chains",
]


def add_arguments(parser) -> None:
    parser.add_argument("--partitions", type=int, default=None, help="renewal chains per run (rebill.PARTITIONS)")
    parser.add_argument(
        "--process-sample", type=int, default=0, help="process only this many accounts and extrapolate (0: all)"
    )
    parser.add_argument(
        "--lambda-workers", type=int, default=None, help="N for the wall time (rebill_processor's prod reservation)"
    )
    parser.add_argument("--sqs-ms", type=float, default=15.0, help="assumed SendMessageBatch round trip, ms")


class _Http:
    status_code = 200
    headers: dict = {}


class CapturedQueue:
    """The rebill queue in memory, as the app's boto3 client sees it."""

    def __init__(self, client):
        self.messages: deque[str] = deque()
        self.calls = 0
        self._lock = threading.Lock()
        events = client.meta.events
        events.register("before-parameter-build.sqs.SendMessageBatch", self._capture)
        events.register("before-call.sqs.SendMessageBatch", self._accepted)
        events.register("before-call.sqs.GetQueueUrl", lambda **_: (_Http(), {"QueueUrl": QUEUE_URL}))

    def _capture(self, params, context, **_):
        context["bench_ids"] = [entry["Id"] for entry in params["Entries"]]
        with self._lock:
            self.messages.extend(entry["MessageBody"] for entry in params["Entries"])
            self.calls += 1

    def _accepted(self, context, **_):
        ok = [{"Id": i, "MessageId": i, "MD5OfMessageBody": ""} for i in context["bench_ids"]]
        return _Http(), {"Successful": ok, "Failed": []}


@dataclass
class FanOut:
    seconds: float
    run: dict  # rebill.start's answer: run, chains, stalled
    calls: int
    keep: list[str]  # the first account messages, as sent, for the SQS sample and processing
    accounts: int = 0
    distinct: int = 0
    invocations: list[tuple[float, int]] = field(default_factory=list)  # (seconds, accounts sent) per step

    def messages(self) -> list[dict]:
        return [json.loads(body) for body in self.keep]


def run(now, partitions: int | None, keep: int) -> FanOut:
    """The schedule, then every step message through the processor; account messages counted (the first
    ``keep`` kept), and every account id checked to have been sent once."""
    import app as app_module
    from chalicelib import aws
    from chalicelib.billing import rebill
    from devtools.pump import LambdaContext, lambda_event

    aws.reset_clients()
    queue = CapturedQueue(aws.client("sqs"))
    kept, seen, invocations, accounts = [], set(), [], 0
    with redirect_stdout(io.StringIO()):  # the steps' EMF lines
        started = time.perf_counter()
        opened = rebill.start(now, QUEUE_URL, partitions or rebill.PARTITIONS)
        while queue.messages:
            body = queue.messages.popleft()
            if '"kind": "select"' not in body:
                accounts += 1
                seen.add(body[body.index('"accountId": "') + 14 :][:36])
                if len(kept) < keep:
                    kept.append(body)
                continue
            before, began = len(queue.messages), time.perf_counter()
            record = {"MessageId": "step", "ReceiptHandle": "r", "Body": body}
            result = app_module.rebill_processor(lambda_event([record], "arn:bench"), LambdaContext("rebill"))
            assert result == {"batchItemFailures": []}, result
            invocations.append((time.perf_counter() - began, len(queue.messages) - before))
        seconds = time.perf_counter() - started
    aws.reset_clients()
    return FanOut(seconds, opened, queue.calls, kept, accounts, len(seen), invocations)


def report(fan: FanOut, due: int) -> None:
    steps = len(fan.invocations)
    longest = max((s for s, _ in fan.invocations), default=0.0)
    most = max((n for _, n in fan.invocations), default=0)
    print(
        f"selection + enqueue through the fan-out ({fan.run['chains']} chains, {steps:,} step invocations,"
        f" {fan.calls:,} SendMessageBatch calls captured in memory): {fan.accounts:,} in {fan.seconds:.2f} s"
        f" = {fan.accounts / fan.seconds:,.0f} accounts/s"
    )
    print(
        f"  per step invocation: median {sorted(s for s, _ in fan.invocations)[steps // 2]:.3f} s, longest"
        f" {longest:.3f} s (of a 30 s timeout), at most {most:,} messages sent"
    )
    assert fan.accounts == fan.distinct == due, f"{fan.accounts} sent, {fan.distinct} distinct, {due} due"
    print(f"  check: each of the {due:,} due accounts sent exactly once when the chains finished")


def reserved_processors(stage: str = "prod") -> int:
    """rebill_processor's reserved concurrency default for ``stage`` in infra/main.tf."""
    text = MAIN_TF.read_text()
    block = text[text.index("default_reservations") :]
    block = block[re.search(rf"\b{stage}\s*=\s*{{", block).end() :]
    return int(re.search(r"rebill_processor\s*=\s*(\d+)", block[: block.index("}")]).group(1))


def wall_time(fan: FanOut, process_rate: float, workers: int | None, sqs_ms: float) -> None:
    """The whole run with N workers: total work spread over them, or the longest chain, whichever is longer."""
    from chalicelib.billing import rebill

    n = workers or reserved_processors()
    steps = len(fan.invocations)
    longest = max(chain["step"] for chain in rebill.progress_of(fan.run["run"]))  # steps of the longest chain
    sqs_per_step = math.ceil(rebill.PAGE_SIZE / 10) / 8 * sqs_ms / 1000  # a page's calls, 8 in flight
    step_s = fan.seconds / max(steps, 1) + sqs_per_step
    work = fan.accounts / process_rate + steps * step_s  # seconds of one worker
    chain = longest * step_s  # its steps one after another
    total = max(work / n, chain)
    source = "--lambda-workers" if workers else "rebill_processor's prod reservation"
    print(
        f"whole run, {fan.accounts:,} accounts, N = {n} workers ({source}): {_duration(total)}"
        f" = max(work / N = {_duration(work / n)}, longest chain {_duration(chain)}: {longest} steps)"
    )
    print(
        f"  work: processing at {process_rate:,.0f} accounts/s per worker + {steps:,} steps of {step_s:.3f} s"
        f" ({sqs_per_step:.3f} s of it SQS: {sqs_ms:g} ms per SendMessageBatch, assumed, not measured)"
    )
    print(f"  = {_duration(work)} on one worker; assumes the database keeps up with N workers (here they would")
    print("  share 2 cores) and SQS hands each step to a poller at once")


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def check_sample(url: str, billed: int) -> None:
    """A sampled run: exactly the processed accounts charged, once each."""
    from devtools import postgres

    conn = postgres.admin_connection(url)
    [[charges, accounts]] = conn.run(
        "SELECT count(*), count(DISTINCT account_id) FROM ledger_entries WHERE entry_type = 'charge'"
    )
    conn.close()
    assert (charges, accounts) == (billed, billed), f"expected {billed} charges, one per account: {charges, accounts}"
    print(f"check: the {billed:,} accounts processed charged exactly once each (the rest stay due)")


GROWS_WITH_BILLING = {"invoices", "invoice_lines", "ledger_entries", "payment_attempts", "outbox", "audit_logs"}


def table_sizes(url: str, billed: int, accounts: int) -> None:
    """pg_total_relation_size (heap, indexes, TOAST) and exact row counts of the main tables, after VACUUM
    FULL: the set-based limit's rolled-back rows and the run's dead versions (the outbox's publish attempts,
    the advanced accounts) are not data. Tables that grow with billing also per account billed, and that
    times every due account when the run was a sample."""
    from devtools import postgres

    conn = postgres.admin_connection(url)
    conn.run("VACUUM FULL " + ", ".join(TABLES))
    rows = conn.run(
        "SELECT c.relname::text, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n"
        " ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relname = ANY(CAST(:names AS text[]))"
        " ORDER BY 2 DESC",
        names=TABLES,
    )
    counts = {name: conn.run(f"SELECT count(*) FROM {name}")[0][0] for name, _size in rows}
    conn.close()
    print(f"table sizes after the run and VACUUM FULL ({billed:,} of {accounts:,} accounts billed):")
    for name, size in rows:
        line = f"  {name:18} {size / 2**20:10,.1f} MiB  {counts[name]:>12,} rows"
        if name in GROWS_WITH_BILLING and billed:
            line += f"  {size / billed:8,.0f} B per account billed"
            if billed < accounts:
                line += f", x {accounts:,} = {size / billed * accounts / 2**20:,.0f} MiB"
        print(line)
    print(f"  {'total':18} {sum(size for _name, size in rows) / 2**20:10,.1f} MiB")
