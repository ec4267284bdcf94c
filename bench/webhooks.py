"""Webhook isolation benchmark: does a slow or failing endpoint delay a healthy one's deliveries?

    .venv/bin/python -m bench.webhooks                   # 1,000 events, 3 endpoints, 4 workers
    .venv/bin/python -m bench.webhooks --events 200 --slow-s 1

One tenant, receivers on 127.0.0.1: *healthy* answers 200 at once, *slow* answers 200 after
--slow-s seconds (5 by default), *failing* answers 500 at once. Each event is fanned out as
the webhooks consumer does (``webhook_delivery.fan_out``) and the endpoints' lanes run in
``webhook_delivery.process`` on --workers threads (Lambda's concurrency for the delivery
queue). The kicks go to an in-memory queue that honours their delay instead of moto's SQS,
whose receive costs grow with queue depth (it would time the emulator, not the app).

Two runs on a fresh database each: the healthy endpoint alone, then with the slow and the
failing one. For the healthy endpoint it prints each run's delay from fan-out to receipt
(median, p99, max) and what the others added, per event. A benchmark, not a test: it checks
only that the healthy endpoint got every event exactly once.
"""

import argparse
import heapq
import json
import os
import statistics
import threading
import time

from devtools import local_aws, postgres

local_aws.isolate()
os.environ["STAGE"] = "local"  # receivers on 127.0.0.1


class MemoryQueue:
    """SQS for kicks: messages become visible after their DelaySeconds."""

    def __init__(self):
        self.heap, self.lock, self.sent = [], threading.Lock(), 0

    def send(self, kicks, delay_s: int = 0) -> None:
        with self.lock:
            for kick in kicks:
                self.sent += 1
                body = json.dumps({"tenantId": kick.tenant_id, "endpointId": kick.endpoint_id})
                heapq.heappush(self.heap, (time.monotonic() + delay_s, self.sent, body))

    def receive(self, most: int = 10) -> list[dict]:
        with self.lock:
            batch = []
            while self.heap and self.heap[0][0] <= time.monotonic() and len(batch) < most:
                _at, n, body = heapq.heappop(self.heap)
                batch.append({"messageId": str(n), "body": body})
            return batch


def fresh_database(admin_url: str, name: str) -> None:
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


def run(admin_url: str, events: int, workers: int, slow_s: float, with_others: bool) -> list[float]:
    """One run; the healthy endpoint's delays (seconds from fan-out to receipt), in event order."""
    import uuid

    from chalicelib import outbox, webhook_delivery, webhook_endpoints
    from chalicelib.db import transaction
    from tests.webhooks import Receiver

    fresh_database(admin_url, "billing_bench_webhooks")
    tenant = str(uuid.uuid4())
    with transaction(tenant_id=tenant) as tx:
        tx.run("INSERT INTO tenants (id, name, email) VALUES (:id, 'Bench', 'ops@bench.test')", id=tenant)
    receivers = {"healthy": Receiver()}
    if with_others:
        receivers |= {"slow": Receiver(delay_s=slow_s), "failing": Receiver(statuses=[500])}
    with transaction(tenant_id=tenant) as tx:
        for receiver in receivers.values():
            webhook_endpoints.create(tx, webhook_endpoints.EndpointFields(url=receiver.url, enabled_events=("*",)))
    queue = MemoryQueue()
    webhook_delivery.kick = queue.send
    webhook_delivery.emit_metric = lambda *_a, **_k: None
    stop = threading.Event()
    threads = [threading.Thread(target=_worker, args=(queue, stop), daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    fanned = {}
    for n in range(events):
        with transaction(tenant_id=tenant) as tx:
            event_id = outbox.add(tx, "usage.rejected", {"rejected": 1}, {"object": "usage_rejection", "n": n})
        webhook_delivery.fan_out({"tenantId": tenant, "eventId": event_id, "eventType": "usage.rejected"})
        fanned[event_id] = time.monotonic()
    healthy = receivers["healthy"]
    deadline = time.monotonic() + 600
    while len(healthy.requests) < events and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    got = {r.headers["webhook-id"]: r.at for r in healthy.requests}
    assert len(healthy.requests) == len(got) == events, "the healthy endpoint got every event exactly once"
    if with_others:
        print(f"  meanwhile: slow got {len(receivers['slow'].requests)}, failing {len(receivers['failing'].requests)}")
    for receiver in receivers.values():
        receiver.stop()
    return [got[event_id] - at for event_id, at in fanned.items()]


def _worker(queue: MemoryQueue, stop: threading.Event) -> None:
    from chalicelib import webhook_delivery

    while not stop.is_set():
        batch = queue.receive()
        if batch:
            webhook_delivery.process(batch)
        else:
            time.sleep(0.01)


def _summary(delays: list[float]) -> tuple[float, float, float]:
    ordered = sorted(delays)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1], ordered[-1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4, help="concurrent delivery invocations")
    parser.add_argument("--slow-s", type=float, default=5.0, help="the slow endpoint's answer time")
    args = parser.parse_args(argv)
    admin_url = postgres.ensure_server(postgres.LOCAL_DIR / "pg-bench")

    alone = run(admin_url, args.events, args.workers, args.slow_s, with_others=False)
    mixed = run(admin_url, args.events, args.workers, args.slow_s, with_others=True)
    added = [m - a for m, a in zip(mixed, alone, strict=True)]
    for name, delays in (("healthy alone", alone), ("healthy beside slow + failing", mixed)):
        median, p99, worst = _summary(delays)
        print(f"{name}: delay from fan-out median {median:.3f} s, p99 {p99:.3f} s, max {worst:.3f} s")
    median, p99, worst = _summary(added)
    print(f"added by the others, per event: median {median:+.3f} s, p99 {p99:+.3f} s, max {worst:+.3f} s")
    print(f"ratio of medians (beside / alone): {statistics.median(mixed) / statistics.median(alone):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
