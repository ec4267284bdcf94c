"""Limits under concurrency: creations racing for a plan's last place, and usage batches racing for
the last units under a hard cap, each on its own connection."""

import threading
import time
from datetime import UTC, datetime, timedelta

from chalicelib import errors
from chalicelib.billing import accounts, rebill, tenants, usage
from chalicelib.db import transaction
from tests import billing

CAPPED = [{"metric": "api_calls", "aggregation": "sum", "unit_amount": 1, "hard_cap": 100}]


def test_concurrent_account_creations_never_take_more_places_than_the_plan_has(make_tenant, owner_conn):
    tenant_id = make_tenant()
    owner_conn.run("INSERT INTO platform_plans (tier, name, max_accounts) VALUES ('three', 'Three', 3)")
    owner_conn.run("UPDATE tenants SET plan_tier = 'three' WHERE id = CAST(:t AS uuid)", t=tenant_id)
    start, outcomes = threading.Barrier(6), []

    def create(n: int):
        start.wait()
        try:
            with transaction(tenant_id=tenant_id) as tx:
                accounts.create(tx, billing.actor(tenant_id), accounts.NewAccount(f"c{n}@x.test", f"C{n}", "USD"))
                time.sleep(0.05)  # hold the place a moment: a racing count must wait for this commit
            outcomes.append("created")
        except errors.Forbidden as exc:
            outcomes.append(exc.code)

    billing.in_threads(*(lambda n=n: create(n) for n in range(6)))

    assert sorted(outcomes) == ["accounts_limit_reached"] * 3 + ["created"] * 3
    with transaction(tenant_id=tenant_id) as tx:
        assert tx.scalar("SELECT count(*) FROM accounts") == 3


def test_two_concurrent_batches_never_both_take_the_last_units_under_a_hard_cap(make_tenant):
    tenant_id = make_tenant()
    account_id = billing.subscribed_account(
        tenant_id, billing.plan(tenant_id, usage_prices=CAPPED), datetime.now(UTC) - timedelta(days=1)
    )
    first_recorded, results = threading.Event(), {}

    def batch(name: str, wait_for=None):
        if wait_for is not None:
            wait_for.wait()
        event = {
            "event_id": name,
            "account_id": account_id,
            "metric": "api_calls",
            "quantity": 60,
            "timestamp": datetime.now(UTC).isoformat(),
        }
        with transaction(tenant_id=tenant_id) as tx:
            summary = usage.record(tx, billing.actor(tenant_id), usage.UsageBatch((event,)))
            if wait_for is None:
                first_recorded.set()
                time.sleep(0.3)  # still uncommitted while the second batch is judged
        results[name] = summary["data"][0]["status"]

    def second():
        try:
            batch("second", wait_for=first_recorded)
        except errors.UnprocessableState as exc:  # its one event was refused: the batch is a 422
            results["second"] = exc.code

    billing.in_threads(lambda: batch("first"), second)

    assert results == {"first": "accepted", "second": "usage_rejected"}
    with transaction(tenant_id=tenant_id) as tx:
        assert tx.scalar("SELECT sum(quantity) FROM usage_events") == 60


def test_an_event_stamped_after_the_periods_end_counts_towards_the_next_period(make_tenant):
    """Between a period's end and its renewal, usage belongs to the next period: a full period does
    not refuse it."""
    tenant_id = make_tenant()
    anchor = datetime.now(UTC) - timedelta(days=31, hours=1)  # the first period ended an hour or so ago
    account_id = billing.subscribed_account(tenant_id, billing.plan(tenant_id, usage_prices=CAPPED), anchor)
    billing.usage(tenant_id, account_id, anchor + timedelta(days=1), 100, "in-the-closed-period")
    event = {
        "event_id": "after-the-end",
        "account_id": account_id,
        "metric": "api_calls",
        "quantity": 100,
        "timestamp": datetime.now(UTC).isoformat(),
    }

    with transaction(tenant_id=tenant_id) as tx:
        summary = usage.record(tx, billing.actor(tenant_id), usage.UsageBatch((event,)))

    assert summary["accepted"] == 1


def test_late_usage_for_a_draft_held_in_its_grace_period_is_capped_by_the_prices_it_was_held_with(make_tenant, gateway):
    tenant = make_tenant()
    daily_cap = [{"metric": "api_calls", "aggregation": "sum", "unit_amount": 2, "hard_cap": 20}]
    billing.priced_plan(tenant, "daily", 100, interval="day", usage_prices=daily_cap)
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    account, _subscription = billing.subscribe(tenant, "daily", start, billing_cycle="daily")
    with transaction(tenant_id=tenant) as tx:
        tenants.update_invoice_settings(tx, billing.actor(tenant), {"grace_hours": 24})
    billing.usage(tenant, account, start + timedelta(hours=1), 10, "on-time")
    boundary = start + timedelta(days=1)
    assert rebill.renew(tenant, account, boundary, boundary + timedelta(minutes=1)) == "succeeded"

    def event(event_id: str, quantity: int, at: datetime) -> dict:
        fields = {"account_id": account, "metric": "api_calls", "timestamp": at.isoformat()}
        return {"event_id": event_id, "quantity": quantity, **fields}

    batch = (
        event("late-15", 15, start + timedelta(hours=5)),  # 10 + 15 > 20 in the held period
        event("late-10", 10, start + timedelta(hours=6)),  # 10 + 10 = 20
        event("today-20", 20, datetime.now(UTC)),  # today's usage counts apart
    )
    with transaction(tenant_id=tenant) as tx:
        results = usage.record(tx, billing.actor(tenant), usage.UsageBatch(batch))["data"]

    assert [(r["status"], r.get("code")) for r in results] == [
        ("rejected", "hard_cap_reached"),
        ("accepted", None),
        ("accepted", None),
    ]
