"""A bounded load run on 127.0.0.1: locust (headless) against chalice local, a mix of usage
event batches and invoice lists from two tenants' clients, with no pause between requests.

Reports requests/s, p50/p99 latency and errors (must be 0), and checks that the events
stored are exactly the events the app said it accepted. 10 s in `make test`, 60 s in
`make hardening`.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.hardening.conftest import FULL

SECONDS = 60 if FULL else 10
USERS = 8
FIGURE = (
    "load: {seconds} s, {users} clients, 3:1 POST /v1/events (10 per batch) : GET /v1/invoices ->"
    " {requests} requests, {rps} req/s, p50 {p50} ms, p99 {p99} ms, {errors} errors;"
    " {accepted} events accepted, {stored} stored"
)


def _usage_rows(stack, tenant_ids) -> int:
    return stack.sql("SELECT count(*) FROM usage_events WHERE tenant_id = ANY(CAST(:t AS uuid[]))", t=tenant_ids)[0][0]


def test_a_minute_of_mixed_load_has_no_errors_and_stores_every_accepted_event(stack, figures, tmp_path):
    tenants = []
    for name in ("Load A", "Load B"):
        tenant = stack.tenant(name)
        stack.plan(tenant)
        accounts = [stack.billed_account(tenant) for _ in range(3)]  # so invoice lists have rows
        tenants.append({"id": tenant.id, "token": tenant.user, "accounts": accounts})
    tenant_ids = [t["id"] for t in tenants]
    before = _usage_rows(stack, tenant_ids)
    served_before = len(stack.statuses())

    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("locust")),
            "--locustfile",
            str(Path(__file__).with_name("locustfile.py")),
            "--headless",
            "--host",
            stack.url,
            "--users",
            str(USERS),
            "--spawn-rate",
            str(USERS),
            "--run-time",
            f"{SECONDS}s",
            "--stop-timeout",
            "10",
            "--csv",
            str(tmp_path / "load"),
            "--only-summary",
            "--loglevel",
            "WARNING",
        ],
        env={**os.environ, "LOAD_TENANTS": json.dumps(tenants), "LOAD_RESULT": str(tmp_path / "totals.json")},
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
    )
    with open(tmp_path / "load_stats.csv") as stats:
        total = next(row for row in csv.DictReader(stats) if row["Name"] == "Aggregated")
    totals = json.loads((tmp_path / "totals.json").read_text())
    stored = _usage_rows(stack, tenant_ids) - before
    served = stack.statuses()[served_before:]
    figures.add(
        "load",
        FIGURE,
        seconds=SECONDS,
        users=USERS,
        requests=int(total["Request Count"]),
        rps=round(float(total["Requests/s"])),
        p50=total["50%"],
        p99=total["99%"],
        errors=int(total["Failure Count"]) + sum(status >= 500 for status in served),
        accepted=totals["accepted"],
        stored=stored,
    )

    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    assert int(total["Failure Count"]) == 0
    assert not [status for status in served if status >= 400]
    assert int(total["Request Count"]) > SECONDS * 10, "the load reached the app"
    assert totals["accepted"] == totals["sent"] == stored
