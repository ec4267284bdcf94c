"""The rebill process killed for real (SIGKILL, as Lambda kills a sandbox on a timeout) at each
point where money is half-moved, one run after another over the same due accounts:

1. mid ledger write: the charges are inserted, the transaction is not committed (or, where the
   write carries its COMMIT in the same flush, the transaction dies just before it);
2. after the gateway charged the first card, before anything of it is recorded;
3. after every transaction committed, before the queue delete.

Each death leaves the batch on the queue; it comes back after the visibility timeout to a fresh
process. Then one run that is not killed, and every account must be charged once, paid once,
with the same idempotency key on every gateway call for it, nothing left pending, unpublished
or dead-lettered. The processes are real (tests/hardening/rebill_worker.py), against the stack's
moto server and database, so nothing survives a death but what was committed or queued.
"""

import json
import signal
import time

import boto3

from devtools.pump import queue_depth
from tests.hardening import rebill_worker

ACCOUNTS = 6
WORKER = "tests.hardening.rebill_worker"
FIGURE = (
    "faults, process killed: SIGKILL {deaths} over {accounts} due accounts -> {charged} charged once, {lost} lost,"
    " {duplicated} charged twice, {retried} interrupted payment retried with its first key, {unpublished} events"
    " unpublished,"
    " {dead} dead-lettered"
)


def test_a_rebill_process_killed_at_any_point_leaves_every_account_charged_and_paid_once(stack, tmp_path, figures):
    tenant = stack.tenant("Killed")
    stack.plan(tenant)
    accounts = [stack.due_account(tenant) for _ in range(ACCOUNTS)]
    calls = tmp_path / "gateway-calls.jsonl"
    queue = next(q for name, q in stack.messaging.queues.items() if name.endswith("-rebill"))
    common = ["--gateway-log", str(calls), "--queue-url", queue["url"], "--queue-arn", queue["arn"]]

    assert stack.python(WORKER, "schedule", *common).returncode == 0
    money = {}
    for death in rebill_worker.DEATHS:
        run = stack.python(WORKER, "drain", "--die", death, *common)
        assert run.returncode == -signal.SIGKILL, f"{death}: the worker exited {run.returncode} instead of dying"
        money[death] = _money_moved(stack, tenant.id)
        time.sleep(stack.messaging.visibility_timeout + 0.5)  # the unacknowledged batch becomes visible again
    assert stack.python(WORKER, "drain", *common).returncode == 0

    assert money["mid-ledger-write"] == {"charge": 0, "payment": 0}, "the killed transaction rolled back"
    assert money["after-gateway-charge"] == {"charge": ACCOUNTS, "payment": 0}, "charged at the card, not recorded"
    assert money["after-commit"] == {"charge": ACCOUNTS, "payment": ACCOUNTS}

    gateway_calls = [json.loads(line) for line in calls.read_text().splitlines()]
    counts = {"charged": 0, "lost": 0, "duplicated": 0}
    for account in accounts:
        ledger = _api(stack, tenant, f"/v1/accounts/{account}/ledger?limit=100")
        assert ledger["balance"] == sum(entry["amount"] for entry in ledger["data"]) == 0, ledger
        kinds = sorted(entry["entry_type"] for entry in ledger["data"])
        counts["charged"] += kinds == ["charge", "payment"]
        counts["lost"] += "charge" not in kinds
        counts["duplicated"] += kinds.count("charge") > 1 or kinds.count("payment") > 1
        keys = {call["idempotency_key"] for call in gateway_calls if call["account_id"] == account}
        assert len(keys) == 1, f"{account}: the gateway saw {keys}: a real gateway would charge it twice"
        (charge,) = [entry for entry in ledger["data"] if entry["entry_type"] == "charge"]
        assert {int(call["amount"]) for call in gateway_calls if call["account_id"] == account} == {charge["amount"]}
        (invoice,) = _api(stack, tenant, f"/v1/invoices?account_id={account}")["data"]
        assert (invoice["total"], invoice["amount_paid"], invoice["status"]) == (
            charge["amount"],
            charge["amount"],
            "paid",
        )

    counts["unpublished"] = stack.sql(
        "SELECT count(*) FROM outbox WHERE tenant_id = CAST(:t AS uuid) AND published_at IS NULL", t=tenant.id
    )[0][0]
    pending = stack.sql(
        "SELECT count(*) FROM payment_attempts WHERE tenant_id = CAST(:t AS uuid) AND outcome = 'pending'", t=tenant.id
    )[0][0]
    sqs = boto3.client("sqs", endpoint_url=stack.aws_endpoint, region_name="us-east-1")
    counts["dead"], left = queue_depth(queue["dlq_url"], sqs), queue_depth(queue["url"], sqs)
    figures.add(
        "faults, process killed",
        FIGURE,
        deaths=", ".join(rebill_worker.DEATHS),
        accounts=ACCOUNTS,
        retried=len(gateway_calls) - ACCOUNTS,
        **counts,
    )
    assert len(gateway_calls) > ACCOUNTS, "the payment interrupted by the kill was retried"
    assert (pending, left) == (0, 0), "no payment left pending, no message left on the queue"
    assert counts == {"charged": ACCOUNTS, "lost": 0, "duplicated": 0, "unpublished": 0, "dead": 0}


def _money_moved(stack, tenant_id: str) -> dict:
    rows = stack.sql(
        "SELECT entry_type, count(*) FROM ledger_entries WHERE tenant_id = CAST(:t AS uuid) GROUP BY 1", t=tenant_id
    )
    return {"charge": 0, "payment": 0, **dict(rows)}


def _api(stack, tenant, path: str) -> dict:
    status, body, _ = stack.call("GET", path, tenant.user)
    assert status == 200, body
    return body
