"""The load mix for test_load.py, run by locust (headless) against chalice local on 127.0.0.1.

Each simulated client belongs to one tenant (LOAD_TENANTS: JSON list of {"token",
"accounts"}) and loops without pause: three times in four it posts a batch of ten
usage events, otherwise it lists invoices. Every event it sends has a new id, so
the app must accept all of them; the totals it was told were accepted are written
to LOAD_RESULT when the run stops, for comparison with the rows in the database.
"""

import itertools
import json
import os
import random
import uuid
from datetime import UTC, datetime

from locust import FastHttpUser, constant, events, task

TENANTS = json.loads(os.environ.get("LOAD_TENANTS", "[]"))
BATCH = 10
_next_tenant = itertools.cycle(range(max(len(TENANTS), 1)))
_totals = {"sent": 0, "accepted": 0}


class TenantClient(FastHttpUser):
    wait_time = constant(0)

    def on_start(self):
        tenant = TENANTS[next(_next_tenant)]
        self.accounts = tenant["accounts"]
        self.auth = {"Authorization": f"Bearer {tenant['token']}"}

    @task(3)
    def post_usage_batch(self):
        now = datetime.now(UTC).isoformat(timespec="seconds")
        batch = [
            {
                "event_id": str(uuid.uuid4()),
                "account_id": random.choice(self.accounts),
                "metric": "api_calls",
                "quantity": random.randint(1, 100),
                "timestamp": now,
            }
            for _ in range(BATCH)
        ]
        headers = {**self.auth, "Idempotency-Key": str(uuid.uuid4())}
        with self.client.post("/v1/events", json={"events": batch}, headers=headers, catch_response=True) as reply:
            if reply.status_code != 200:
                reply.failure(f"{reply.status_code}: {reply.text[:200]}")
                return
            _totals["sent"] += BATCH
            _totals["accepted"] += reply.json()["accepted"]

    @task(1)
    def list_invoices(self):
        with self.client.get("/v1/invoices?limit=20", headers=self.auth, catch_response=True) as reply:
            if reply.status_code != 200 or not reply.json()["data"]:
                reply.failure(f"{reply.status_code}: {reply.text[:200]}")


@events.test_stop.add_listener
def _write_totals(**_kwargs):
    with open(os.environ["LOAD_RESULT"], "w") as out:
        json.dump(_totals, out)
