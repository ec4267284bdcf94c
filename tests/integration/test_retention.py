"""Retention: each purge removes exactly what is past its keep, across tenants, in bounded batches, once."""

import re
from datetime import timedelta
from pathlib import Path

import pytest
from chalice.test import Client

from app import app
from chalicelib import retention, webhook_endpoints
from chalicelib.billing import calendar
from chalicelib.db import errors, transaction
from tests import billing

INFRA = Path(__file__).resolve().parents[2] / "infra"
SQS_DEFAULT_RETENTION_S = 4 * 24 * 3600  # a queue that sets none


def _purge(table: str, batch_rows: int = 1000) -> int:
    purge = next(p for p in retention.PURGES if p.table == table)
    total = 0
    while True:
        purged, finished = retention.purge_batch(purge, batch_rows)
        total += purged
        if finished:
            return total


def _count(owner_conn, sql: str, **params) -> int:
    return owner_conn.run(sql, **params)[0][0]


def _keys(tenant: str, names: list[str]) -> None:
    with transaction(tenant_id=tenant) as tx:
        for name in names:
            tx.run(
                "INSERT INTO idempotency_keys (key, request_method, request_path, request_hash)"
                " VALUES (:k, 'POST', '/v1/accounts', 'h')",
                k=name,
            )


def test_expired_idempotency_keys_of_every_tenant_go_and_live_ones_stay(make_tenant, owner_conn):
    a, b = make_tenant("A"), make_tenant("B")
    _keys(a, ["a-old", "a-new"])
    _keys(b, ["b-old-1", "b-old-2", "b-new"])
    owner_conn.run("UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key LIKE '%-old%'")

    first, again = _purge("idempotency_keys"), _purge("idempotency_keys")

    assert (first, again) == (3, 0)
    assert sorted(r[0] for r in owner_conn.run("SELECT key FROM idempotency_keys")) == ["a-new", "b-new"]


def test_the_claims_keep_outlasts_the_longest_message_retention_of_any_queue_in_infra():
    text = "\n".join(p.read_text() for p in INFRA.rglob("*.tf"))
    configured = [int(s) for s in re.findall(r"message_retention_seconds\s*=\s*(\d+)", text)]
    assert max(configured + [SQS_DEFAULT_RETENTION_S]) == retention.LONGEST_SQS_RETENTION_S
    keep = next(p.keep_s for p in retention.PURGES if p.table == "processed_events")
    assert keep > retention.LONGEST_SQS_RETENTION_S


def test_consumer_claims_go_after_the_longest_sqs_retention_and_no_caller_can_purge_younger_ones(
    make_tenant, owner_conn
):
    tenant = make_tenant()
    with transaction(tenant_id=tenant) as tx:
        for hours in (16 * 24, 14 * 24 + 12, 13 * 24, 1):
            tx.run(
                "INSERT INTO processed_events (consumer, message_id, status, claimed_at)"
                " VALUES ('audit-log', :m, 'done', now() - make_interval(hours => :h))",
                m=f"claimed-{hours}h-ago",
                h=hours,
            )

    kept_15_days = _purge("processed_events")
    with transaction() as tx:  # a caller asking for no keep at all: the policy's 14-day floor holds
        floored = tx.scalar("SELECT retention_purge_processed_events(0, 100)")

    assert (kept_15_days, floored) == (1, 1)
    left = sorted(r[0] for r in owner_conn.run("SELECT message_id FROM processed_events"))
    assert left == ["claimed-1h-ago", "claimed-312h-ago"]


def _delivery(tx, endpoint: str, status: str, event_type: str = "invoice.paid") -> tuple[str, str]:
    event = tx.scalar(
        "INSERT INTO outbox (event_type, payload, published_at) VALUES (:t, '{}', now()) RETURNING id", t=event_type
    )
    delivery = tx.scalar(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, status, next_attempt_at, delivered_at,"
        " failed_at) VALUES (:e, :ev, :t, :s, CASE WHEN :s = 'pending' THEN now() END,"
        " CASE WHEN :s = 'delivered' THEN now() END, CASE WHEN :s = 'failed' THEN now() END) RETURNING id",
        e=endpoint,
        ev=event,
        t=event_type,
        s=status,
    )
    for _ in range(2):
        tx.run(
            "INSERT INTO webhook_attempts (delivery_id, attempted_at, status_code, latency_ms)"
            " VALUES (:d, now(), 500, 12)",
            d=delivery,
        )
    return str(event), str(delivery)


def _age(owner_conn, days: int, events: list[str], deliveries: list[str]) -> None:
    ago = f"now() - interval '{days} days'"
    owner_conn.run(
        f"UPDATE outbox SET created_at = {ago}, published_at = {ago} WHERE id = ANY(CAST(:ids AS uuid[]))", ids=events
    )
    owner_conn.run(
        f"UPDATE webhook_deliveries SET created_at = {ago}, delivered_at = CASE WHEN delivered_at IS NOT NULL"
        f" THEN {ago} END, failed_at = CASE WHEN failed_at IS NOT NULL THEN {ago} END"
        " WHERE id = ANY(CAST(:ids AS uuid[]))",
        ids=deliveries,
    )


def test_old_finished_deliveries_go_with_their_attempts_then_their_events_and_pending_ones_hold_theirs(
    make_tenant, owner_conn
):
    tenant = make_tenant()
    with transaction(tenant_id=tenant) as tx:
        fields = webhook_endpoints.EndpointFields(url="https://hooks.example.com/a", enabled_events=("*",))
        endpoint = webhook_endpoints.create(tx, fields)["id"]
        old = [_delivery(tx, endpoint, s) for s in ("delivered", "failed", "pending")]
        recent = _delivery(tx, endpoint, "delivered")
        unpublished_old = tx.scalar(
            "INSERT INTO outbox (event_type, payload) VALUES ('account.created', '{}') RETURNING id"
        )
        bare_old = tx.scalar(
            "INSERT INTO outbox (event_type, payload, published_at)"
            " VALUES ('account.created', '{}', now()) RETURNING id"
        )
    _age(owner_conn, 31, [e for e, _ in old] + [str(bare_old)], [d for _, d in old])
    owner_conn.run("UPDATE outbox SET created_at = now() - interval '31 days' WHERE id = :id", id=unpublished_old)

    deliveries, events = _purge("webhook_deliveries"), _purge("outbox")

    assert (deliveries, events) == (2, 3)  # delivered + failed; their two events and the bare one
    kept = {str(r[0]) for r in owner_conn.run("SELECT id FROM webhook_deliveries")}
    assert kept == {old[2][1], recent[1]}
    assert _count(owner_conn, "SELECT count(*) FROM webhook_attempts") == 4  # the kept deliveries' two each
    events_left = {str(r[0]) for r in owner_conn.run("SELECT id FROM outbox")}
    assert events_left == {old[2][0], recent[0], str(unpublished_old)}
    assert (_purge("webhook_deliveries"), _purge("outbox")) == (0, 0)


def _usage_at(owner_conn, tenant: str, account: str, days_ago: int, event_id: str) -> None:
    at = calendar.utcnow() - timedelta(days=days_ago)
    billing.usage(tenant, account, at, 1, event_id)
    owner_conn.run("UPDATE usage_events SET received_at = occurred_at WHERE event_id = :e", e=event_id)


@pytest.fixture
def usage_cases(make_tenant, owner_conn):
    """Two tenants' usage, named by what becomes of it: ``keep-*`` must stay in the hot table."""
    now = calendar.utcnow()
    a, b = make_tenant("A"), make_tenant("B")
    plan_a, plan_b = billing.plan(a), billing.plan(b)
    # A live subscription whose current period began 60 days ago (a quarter, or an overdue renewal).
    live = billing.subscribed_account(a, plan_a, now - timedelta(days=60))
    owner_conn.run(
        "UPDATE subscriptions SET current_period_start = now() - interval '60 days',"
        " current_period_end = now() + interval '30 days' WHERE account_id = :a",
        a=live,
    )
    _usage_at(owner_conn, a, live, 70, "move-before-the-live-period")
    _usage_at(owner_conn, a, live, 50, "keep-in-the-live-period")
    _usage_at(owner_conn, a, live, 20, "keep-young")
    # A canceled subscription whose final invoice is a draft held for the grace period, from 80 days ago.
    held = billing.subscribed_account(b, plan_b, now - timedelta(days=100))
    with transaction(tenant_id=b) as tx:
        tx.run("UPDATE subscriptions SET status = 'canceled', ended_at = now() WHERE account_id = :a", a=held)
        tx.run(
            "INSERT INTO invoices (account_id, currency, period_start, period_end, total, subtotal, amount_due)"
            " VALUES (:a, 'USD', now() - interval '80 days', now() - interval '40 days', 0, 0, 0)",
            a=held,
        )
    _usage_at(owner_conn, b, held, 90, "move-before-the-draft")
    _usage_at(owner_conn, b, held, 75, "keep-in-the-draft")
    # No subscription at all: nothing can bill it.
    idle = billing.subscribed_account(b, plan_b, now - timedelta(days=100))
    with transaction(tenant_id=b) as tx:
        tx.run("UPDATE subscriptions SET status = 'canceled', ended_at = now() WHERE account_id = :a", a=idle)
    for n in range(5):
        _usage_at(owner_conn, b, idle, 40 + n, f"move-idle-{n}")
    _usage_at(owner_conn, b, idle, 30, "keep-idle-but-young")
    return a, b


def _hot(owner_conn) -> set[str]:
    return {r[0] for r in owner_conn.run("SELECT event_id FROM usage_events")}


def _archived(owner_conn) -> list[str]:
    return sorted(r[0] for r in owner_conn.run("SELECT event_id FROM usage_events_archive"))


def test_usage_no_open_period_or_draft_needs_moves_to_the_archive_and_the_rest_stays(usage_cases, owner_conn):
    a, b = usage_cases
    moved, again = _purge("usage_events"), _purge("usage_events")

    assert (moved, again) == (7, 0)
    assert _hot(owner_conn) == {
        "keep-in-the-live-period",
        "keep-young",
        "keep-in-the-draft",
        "keep-idle-but-young",
    }
    assert _archived(owner_conn) == sorted(
        ["move-before-the-live-period", "move-before-the-draft"] + [f"move-idle-{n}" for n in range(5)]
    )
    # The archive is the app role's to read, each tenant its own rows.
    with transaction(tenant_id=a) as tx:
        assert [r[0] for r in tx.run("SELECT event_id FROM usage_events_archive")] == ["move-before-the-live-period"]
    with transaction() as tx:
        assert tx.scalar("SELECT count(*) FROM usage_events_archive") == 0


def test_a_usage_batch_looks_at_no_more_than_its_rows_and_the_pass_resumes_where_it_stopped(usage_cases, owner_conn):
    usage = next(p for p in retention.PURGES if p.table == "usage_events")
    batches = []
    while True:
        moved, finished = retention.purge_batch(usage, batch_rows=3)
        batches.append(moved)
        if finished:
            break
    cursor = owner_conn.run("SELECT after_at, after_id FROM retention_cursors WHERE job = 'usage_events'")

    # 9 events were received more than 35 days ago, oldest first: [draft's move, draft's keep, live's move],
    # [live's keep, idle, idle], [idle x 3]; then a batch that finds none ends the pass.
    assert batches == [2, 2, 3, 0]
    assert cursor == [[None, None]]  # the next pass starts over
    assert len(_archived(owner_conn)) == 7


def test_an_event_resent_after_its_first_copy_was_archived_is_not_archived_twice(usage_cases, owner_conn):
    _, b = usage_cases
    _purge("usage_events")
    idle = owner_conn.run("SELECT account_id FROM usage_events_archive WHERE event_id = 'move-idle-0'")[0][0]
    _usage_at(owner_conn, b, str(idle), 40, "move-idle-0")  # the client sends it again

    assert _purge("usage_events") == 1
    assert _archived(owner_conn).count("move-idle-0") == 1 and "move-idle-0" not in _hot(owner_conn)


def _archive_months(owner_conn) -> list[str]:
    return sorted(
        r[0]
        for r in owner_conn.run(
            "SELECT c.relname::text FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid"
            " WHERE h.inhparent = 'usage_events_archive'::regclass"
        )
    )


def test_archive_months_past_the_keep_are_dropped_whole_and_no_caller_keeps_less_than_a_year(owner_conn):
    for months_ago in (30, 25, 23, 0):
        owner_conn.run("SELECT usage_archive_partition(now() - make_interval(months => :m))", m=months_ago)
    before = _archive_months(owner_conn)

    dropped, again = retention.drop_expired_archive(24), retention.drop_expired_archive(24)

    assert (len(before), dropped, again) == (4, 2, 0)
    assert _archive_months(owner_conn) == before[2:]  # the two newest months of the four stay
    with pytest.raises(errors.DatabaseError, match="12 months at least"):
        retention.drop_expired_archive(6)


def test_a_run_does_nothing_past_its_budget_and_everything_due_within_it(make_tenant, owner_conn):
    tenant = make_tenant()
    _keys(tenant, [f"old-{n}" for n in range(7)])
    owner_conn.run("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")

    spent = retention.run(budget_s=0)
    done = retention.run(batch_rows=2)

    assert spent["idempotency_keys"] == 0
    assert done["idempotency_keys"] == 7
    assert _count(owner_conn, "SELECT count(*) FROM idempotency_keys") == 0


def test_the_app_role_reaches_the_archive_partitions_and_young_rows_through_no_other_door(make_tenant, owner_conn):
    tenant = make_tenant()
    name = owner_conn.run("SELECT usage_archive_partition(now())")[0][0]
    for statement in (
        f"SELECT count(*) FROM {name}",
        "SELECT usage_archive_partition(now())",
        "DELETE FROM usage_events",
        "INSERT INTO usage_events_archive SELECT * FROM usage_events_archive",
    ):
        with pytest.raises(errors.InsufficientPrivilege), transaction(tenant_id=tenant) as tx:
            tx.run(statement)


def test_the_minute_sweep_ends_with_the_purge(make_tenant, owner_conn):
    tenant = make_tenant()
    _keys(tenant, ["expired", "live"])
    owner_conn.run("UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'expired'")

    with Client(app) as client:
        result = client.lambda_.invoke("outbox_sweep", client.events.generate_cw_event("aws.events", "x", {}, []))

    assert result.payload["purged"]["idempotency_keys"] == 1
    assert [r[0] for r in owner_conn.run("SELECT key FROM idempotency_keys")] == ["live"]


def test_a_purge_that_fails_is_logged_and_counted_and_the_sweep_still_answers(make_tenant, monkeypatch, capsys):
    make_tenant()  # the test database, not the template

    def refused(*_args, **_kwargs):
        raise RuntimeError("the purge failed")  # as a row referenced meanwhile would make it fail

    monkeypatch.setattr(retention, "run", refused)
    with Client(app) as client:
        result = client.lambda_.invoke("outbox_sweep", client.events.generate_cw_event("aws.events", "x", {}, []))

    assert result.payload["purged"] == {}
    assert "published" in result.payload and "webhook_lanes" in result.payload
    assert '"retention_failures": 1' in capsys.readouterr().out
