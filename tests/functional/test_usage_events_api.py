from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.db import transaction


def _now(offset=timedelta()):
    return (datetime.now(UTC) + offset).isoformat().replace("+00:00", "Z")


def _event(account_id, event_id, quantity=1, at=None, metric="api_calls"):
    return {
        "event_id": event_id,
        "account_id": account_id,
        "metric": metric,
        "quantity": quantity,
        "timestamp": at or _now(),
    }


@pytest.fixture
def account(api, catalog) -> dict:
    """A subscribed account: usage is billable from the subscription's start."""
    reply = api.post(
        "/v1/accounts", {"email": "ada@customer.test", "name": "Ada", "plan": "pro", "currency": "USD"}, catalog.user
    )
    assert api.post("/v1/subscriptions", {"account_id": reply.body["id"], "plan": "pro"}, catalog.user).status == 201
    return reply.body


def _stored(tenant_id):
    with transaction(tenant_id=tenant_id) as tx:
        return tx.all("SELECT event_id, quantity FROM usage_events ORDER BY event_id")


def test_a_single_event_is_accepted_and_stored(api, account, catalog):
    reply = api.post("/v1/events", _event(account["id"], "e-1", 7), catalog.user)

    assert reply.status == 200
    assert (reply.body["accepted"], reply.body["duplicates"], reply.body["rejected"]) == (1, 0, 0)
    assert _stored(catalog.id) == [{"event_id": "e-1", "quantity": 7}]


def test_a_resent_event_is_a_duplicate_and_counted_once(api, account, catalog):
    api.post("/v1/events", _event(account["id"], "e-1", 7), catalog.user)
    reply = api.post(
        "/v1/events", {"events": [_event(account["id"], "e-1", 7), _event(account["id"], "e-1", 7)]}, catalog.user
    )

    assert reply.status == 200
    assert [r["status"] for r in reply.body["data"]] == ["duplicate", "duplicate"]
    assert _stored(catalog.id) == [{"event_id": "e-1", "quantity": 7}]


def test_a_batch_rejects_bad_events_one_by_one_and_keeps_the_rest(api, account, catalog):
    batch = [
        _event(account["id"], "ok-1"),
        _event(account["id"], "old", at=_now(-timedelta(days=40))),
        _event(account["id"], "future", at=_now(timedelta(hours=1))),
        _event("3f1c7a52-8a51-4f43-9a43-5b0b1d7a9e10", "stranger"),
        _event(account["id"], "ok-2", 3),
    ]

    reply = api.post("/v1/events", {"events": batch}, catalog.user)

    assert reply.status == 200
    by_id = {r["event_id"]: r for r in reply.body["data"]}
    assert [by_id[e]["status"] for e in ("ok-1", "old", "future", "stranger", "ok-2")] == [
        "accepted",
        "rejected",
        "rejected",
        "rejected",
        "accepted",
    ]
    assert "days old" in by_id["old"]["reasons"][0]
    assert "future" in by_id["future"]["reasons"][0]
    assert by_id["stranger"]["reasons"] == ["no such account"]
    assert [e["event_id"] for e in _stored(catalog.id)] == ["ok-1", "ok-2"]


def test_a_batch_where_every_event_is_rejected_is_422_and_stores_nothing(api, account, catalog):
    reply = api.post(
        "/v1/events", {"events": [_event(account["id"], "old", at=_now(-timedelta(days=90)))]}, catalog.user
    )

    assert reply.status == 422
    assert reply.body["error"]["details"][0]["field"] == "events.0"
    assert _stored(catalog.id) == []


def test_batches_over_100_events_and_schema_errors_are_400(api, account, catalog):
    too_many = {"events": [_event(account["id"], f"e{i}") for i in range(101)]}
    assert api.post("/v1/events", too_many, catalog.user).status == 400
    bad = api.post("/v1/events", {"events": [{**_event(account["id"], "x"), "quantity": -1}]}, catalog.user)
    assert bad.status == 400
    assert bad.body["error"]["details"][0]["field"] == "events.0.quantity"
    assert _stored(catalog.id) == []


def test_another_tenants_account_cannot_receive_usage(api, account, other_tenant):
    reply = api.post("/v1/events", _event(account["id"], "steal"), other_tenant.user)
    assert reply.status == 422
    assert "no such account" in reply.body["error"]["details"][0]["issue"]


def _issues(reply) -> list[str]:
    return [d["issue"] for d in reply.body["error"]["details"]]


def test_usage_stamped_before_the_subscription_started_says_so(api, account, catalog):
    reply = api.post(
        "/v1/events", {"events": [_event(account["id"], "early", at=_now(-timedelta(days=2)))]}, catalog.user
    )

    assert reply.status == 422
    assert _issues(reply) == ["timestamp is before the subscription started"]
    assert _stored(catalog.id) == []


def test_usage_stamped_in_an_already_invoiced_period_is_rejected(api, account, catalog):
    with transaction(tenant_id=catalog.id) as tx:  # as after a renewal yesterday: the period before is invoiced
        tx.run(
            "UPDATE subscriptions SET billing_anchor = now() - interval '40 days',"
            " current_period_start = now() - interval '1 day'"
        )
    reply = api.post(
        "/v1/events", {"events": [_event(account["id"], "late", at=_now(-timedelta(days=2)))]}, catalog.user
    )

    assert reply.status == 422
    assert _issues(reply) == ["timestamp falls in a billing period that is already invoiced"]


def test_usage_after_the_subscription_ended_is_rejected_and_not_stored(api, account, catalog):
    sub = api.get(f"/v1/subscriptions?account_id={account['id']}", catalog.user).body["data"][0]
    assert api.post(f"/v1/subscriptions/{sub['id']}/cancel", None, catalog.user).status == 200

    reply = api.post("/v1/events", _event(account["id"], "after-end"), catalog.user)

    assert reply.status == 422
    assert _issues(reply) == ["timestamp is after the subscription ended"]
    assert _stored(catalog.id) == []


def test_usage_after_the_end_of_a_period_that_cancels_at_its_end_is_rejected(api, account, catalog):
    sub = api.get(f"/v1/subscriptions?account_id={account['id']}", catalog.user).body["data"][0]
    api.post(f"/v1/subscriptions/{sub['id']}/cancel", {"at_period_end": True}, catalog.user)
    with transaction(tenant_id=catalog.id) as tx:
        tx.run("UPDATE subscriptions SET current_period_end = now() + interval '60 seconds'")

    inside, after = _event(account["id"], "inside"), _event(account["id"], "after", at=_now(timedelta(seconds=120)))
    reply = api.post("/v1/events", {"events": [inside, after]}, catalog.user)

    assert [r["status"] for r in reply.body["data"]] == ["accepted", "rejected"]
    assert reply.body["data"][1]["reasons"] == ["timestamp is after the subscription ends"]


def test_usage_for_an_account_that_never_had_a_subscription_is_rejected(api, catalog):
    bare = api.post("/v1/accounts", {"email": "b@x.test", "name": "B", "currency": "USD"}, catalog.user).body

    reply = api.post("/v1/events", _event(bare["id"], "unbillable"), catalog.user)

    assert reply.status == 422
    assert _issues(reply) == ["the account has no subscription"]
    assert _stored(catalog.id) == []


def test_a_single_event_with_a_key_costs_as_many_round_trips_as_one_without(api, account, catalog, round_trips):
    """Counted, never timed. The claim's transaction: the claim (with its BEGIN), then the rate with the
    COMMIT. The work's: the accounts' lock (with its BEGIN; the claim checked the tenant), their billing
    windows, the insert, the audit row, and the key's completion with the COMMIT."""
    from chalicelib.db import connection

    connection.get_connection()  # opened (and counted from) before the request
    before = round_trips[0]

    reply = api.post("/v1/events", _event(account["id"], "keyed"), catalog.user, headers={"Idempotency-Key": "k-1"})

    assert reply.status == 200 and reply.body["accepted"] == 1
    assert round_trips[0] - before == 2 + 5


def test_a_request_whose_key_a_retry_took_over_stores_nothing_and_is_told_to_retry(
    api, account, catalog, owner_conn, monkeypatch
):
    from chalicelib.billing import usage

    record = usage.record

    def overtaken(tx, actor, batch):
        body = record(tx, actor, batch)
        # A retry took the claim over as stale while this request's work was still running.
        owner_conn.run("UPDATE idempotency_keys SET locked_at = locked_at + interval '1 second' WHERE key = 'slow'")
        return body

    monkeypatch.setattr(usage, "record", overtaken)
    reply = api.post("/v1/events", _event(account["id"], "late"), catalog.user, headers={"Idempotency-Key": "slow"})

    assert reply.status == 409 and reply.body["error"]["code"] == "idempotency_retry"
    assert _stored(catalog.id) == []
    with transaction(tenant_id=catalog.id) as tx:
        assert tx.scalar("SELECT status FROM idempotency_keys WHERE key = 'slow'") == "in_progress"


def test_a_single_event_without_a_key_costs_seven_round_trips_its_rate_one(api, account, catalog, round_trips):
    """Counted, never timed (devtools.round_trips). The rate's transaction is one flush: its BEGIN, the
    tenant's scope, synchronous_commit off, the rate statement and its COMMIT. The work's: the tenant
    check (with its BEGIN), the accounts' lock, their billing windows, the insert, the audit row, COMMIT."""
    from chalicelib.db import connection

    connection.get_connection()  # opened (and counted from) before the request
    before = round_trips[0]

    reply = api.post("/v1/events", _event(account["id"], "counted"), catalog.user)

    assert reply.status == 200 and reply.body["accepted"] == 1
    assert round_trips[0] - before == 1 + 6
