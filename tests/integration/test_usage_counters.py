"""Hard caps judged by running counters (usage_counters): exact when batches race for the last units,
when a concurrent batch resends an event, and whoever else stores usage in the window."""

import threading
import time
from datetime import UTC, datetime, timedelta

from chalicelib import errors
from chalicelib.billing import usage
from chalicelib.db import transaction
from tests import billing

REASON = "the plan's hard cap of 100 (sum of api_calls) for the period is reached"


def _capped_account(tenant_id: str, code: str = "capped", **price) -> str:
    prices = [{"metric": "api_calls", "aggregation": "sum", "unit_amount": 1, "hard_cap": 100, **price}]
    return billing.subscribed_account(
        tenant_id, billing.plan(tenant_id, code, usage_prices=prices), datetime.now(UTC) - timedelta(days=1)
    )


def _event(account_id: str, event_id: str, quantity: int) -> dict:
    fields = {"account_id": account_id, "metric": "api_calls", "timestamp": datetime.now(UTC).isoformat()}
    return {"event_id": event_id, "quantity": quantity, **fields}


def _record(tenant_id: str, *events: dict) -> list[tuple[str, str]]:
    """Each event's (id, status) as one batch records them; all refused is a 422, told as "rejected"."""
    try:
        with transaction(tenant_id=tenant_id) as tx:
            summary = usage.record(tx, billing.actor(tenant_id), usage.UsageBatch(events))
    except errors.UnprocessableState:
        return [(event["event_id"], "rejected") for event in events]
    return [(result["event_id"], result["status"]) for result in summary["data"]]


def _stored_and_counted(tenant_id: str) -> tuple[int, list[int]]:
    with transaction(tenant_id=tenant_id) as tx:
        stored = tx.scalar("SELECT COALESCE(sum(quantity), 0) FROM usage_events")
        counted = [row[0] for row in tx.run("SELECT sum FROM usage_counters ORDER BY from_at")]
    return stored, counted


def test_eight_concurrent_batches_store_exactly_up_to_the_cap_and_no_further(make_tenant):
    tenant_id = make_tenant()
    account_id = _capped_account(tenant_id)
    start, outcomes = threading.Barrier(8), []

    def send(n: int):
        batch = [_event(account_id, f"b{n}-{k}", 5) for k in range(5)]  # 25 each, 200 in all
        start.wait()
        outcomes.extend(_record(tenant_id, *batch))

    billing.in_threads(*(lambda n=n: send(n) for n in range(8)))

    statuses = [status for _event_id, status in outcomes]
    assert (statuses.count("accepted"), statuses.count("rejected")) == (20, 20)
    assert _stored_and_counted(tenant_id) == (100, [100])


def test_a_counter_starts_from_the_windows_stored_events_and_then_counts_every_insert(make_tenant):
    tenant_id = make_tenant()
    account_id = _capped_account(tenant_id)
    now = datetime.now(UTC)
    billing.usage(tenant_id, account_id, now - timedelta(hours=2), 30, "before-any-cap-check")

    first = _record(tenant_id, _event(account_id, "batch-60", 60))
    billing.usage(tenant_id, account_id, now - timedelta(hours=1), 5, "stored-directly")  # by the trigger
    late = _record(tenant_id, _event(account_id, "ten", 10), _event(account_id, "five", 5))

    assert first == [("batch-60", "accepted")]
    assert late == [("ten", "rejected"), ("five", "accepted")]
    assert _stored_and_counted(tenant_id) == (100, [100])


def test_a_resend_in_a_batch_that_waited_for_the_first_is_a_duplicate_and_adds_nothing(make_tenant):
    tenant_id = make_tenant()
    account_id = _capped_account(tenant_id)
    resent = _event(account_id, "resent", 60)
    first_recorded, results = threading.Event(), {}

    def first():
        with transaction(tenant_id=tenant_id) as tx:
            usage.record(tx, billing.actor(tenant_id), usage.UsageBatch((resent,)))
            first_recorded.set()
            time.sleep(0.3)  # still uncommitted while the second batch takes the counter's lock

    def second():
        first_recorded.wait()
        results["second"] = _record(tenant_id, resent, _event(account_id, "other", 40))

    billing.in_threads(first, second)

    # Counted again, "resent" would make 120 and be refused; it is the first batch's, and 60 + 40 fit.
    assert results["second"] == [("resent", "duplicate"), ("other", "accepted")]
    assert _stored_and_counted(tenant_id) == (100, [100])


def test_count_and_max_caps_are_judged_by_their_own_counters(make_tenant):
    tenant_id = make_tenant()
    by_count = _capped_account(tenant_id, "by-count", aggregation="count", hard_cap=2)
    by_max = _capped_account(tenant_id, "by-max", aggregation="max", hard_cap=50)

    counted = _record(tenant_id, *(_event(by_count, f"c{n}", 1000) for n in range(3)))
    maxed = _record(tenant_id, _event(by_max, "m-40", 40), _event(by_max, "m-60", 60), _event(by_max, "m-50", 50))

    assert counted == [("c0", "accepted"), ("c1", "accepted"), ("c2", "rejected")]
    assert maxed == [("m-40", "accepted"), ("m-60", "rejected"), ("m-50", "accepted")]
    with transaction(tenant_id=tenant_id) as tx:
        rows = tx.all("SELECT account_id::text AS account, sum, count, max FROM usage_counters")
    assert sorted((r["account"], r["sum"], r["count"], r["max"]) for r in rows) == sorted(
        [(by_count, 2000, 2, 1000), (by_max, 90, 2, 50)]
    )
