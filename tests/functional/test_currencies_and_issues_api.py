"""Currencies are ISO 4217 codes, and a refused body is answered in short sentences, over the API."""

import json
from datetime import UTC, datetime

from tests import billing

UNKNOWN = {"field": "currency", "issue": "is not an ISO 4217 currency code"}


def test_an_account_in_an_unknown_currency_is_a_400_field_error_and_stores_nothing(api, catalog, owner_conn):
    before = billing.snapshot(owner_conn, catalog.id)

    reply = api.post(
        "/v1/accounts",
        {"email": "q@customer.test", "name": "Q", "currency": "QQQ"},
        catalog.user,
        headers={"Idempotency-Key": "qqq-account"},
    )

    assert reply.status == 400
    assert reply.body["error"]["type"] == "invalid_request"
    assert reply.body["error"]["details"] == [UNKNOWN]
    assert reply.body["error"]["request_id"]
    assert billing.snapshot(owner_conn, catalog.id) == before


def test_a_plan_in_an_unknown_currency_is_a_400_field_error_and_stores_nothing(api, tenant, owner_conn):
    before = billing.snapshot(owner_conn, tenant.id)

    reply = api.post(
        "/v1/plans",
        {"code": "odd", "name": "Odd", "interval": "month", "amount": 100, "currency": "QQQ"},
        tenant.admin,
        headers={"Idempotency-Key": "qqq-plan"},
    )

    assert reply.status == 400
    assert reply.body["error"]["details"] == [UNKNOWN]
    assert billing.snapshot(owner_conn, tenant.id) == before
    assert api.get("/v1/plans", tenant.user).body["data"] == []


def test_currencies_with_zero_and_three_decimal_places_are_accepted(api, tenant):
    for code, currency in (("yen", "JPY"), ("dinar", "BHD")):
        plan = {"code": code, "name": code, "interval": "month", "amount": 1000, "currency": currency}
        assert api.post("/v1/plans", plan, tenant.admin).status == 201
        account = {"email": f"{code}@customer.test", "name": code, "plan": code, "currency": currency}
        reply = api.post("/v1/accounts", account, tenant.user)
        assert reply.status == 201, reply.body
        assert reply.body["currency"] == currency


def test_a_batch_of_101_events_is_refused_in_one_short_sentence(api, account, catalog):
    now = datetime.now(UTC).isoformat(timespec="seconds")
    event = {"account_id": account["id"], "metric": "api_calls", "quantity": 1, "timestamp": now}
    batch = {"events": [{**event, "event_id": f"e-{n}", "properties": {"note": "x" * 400}} for n in range(101)]}
    assert len(json.dumps(batch)) > 50_000

    reply = api.post("/v1/events", batch, catalog.user)

    assert reply.status == 400
    assert reply.body["error"]["details"] == [{"field": "events", "issue": "at most 100 events"}]
    assert len(json.dumps(reply.body)) < 500


def test_a_100_kb_name_is_refused_without_being_echoed(api, catalog):
    name = "N" * 100_000

    reply = api.post("/v1/accounts", {"email": "n@customer.test", "name": name, "currency": "USD"}, catalog.user)

    assert reply.status == 400
    assert reply.body["error"]["details"] == [{"field": "name", "issue": "at most 200 characters"}]
    assert "N" * 50 not in json.dumps(reply.body)
