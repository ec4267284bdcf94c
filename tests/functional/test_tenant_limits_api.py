"""Tenant plan limits over the API: the platform plan a tenant is on (tenants.plan_tier) caps its
accounts, webhook endpoints and API clients (403 naming the limit), and its usage requests a second
(429 with Retry-After); provisioning names a real plan."""

import time
from datetime import UTC, datetime

import pytest

from chalicelib import errors
from chalicelib.billing import tenant_limits
from chalicelib.db import transaction
from tests import billing


@pytest.fixture
def on_tiny_plan(owner_conn):
    """Put a tenant on a platform plan of 2 accounts, 1 webhook endpoint, 1 API client and 1 usage
    request a second with bursts of 2."""
    owner_conn.run(
        "INSERT INTO platform_plans (tier, name, max_accounts, max_webhook_endpoints, max_api_clients,"
        " usage_requests_per_second, usage_burst) VALUES ('tiny', 'Tiny', 2, 1, 1, 1, 2)"
    )

    def put(tenant_id: str) -> None:
        owner_conn.run("UPDATE tenants SET plan_tier = 'tiny' WHERE id = CAST(:t AS uuid)", t=tenant_id)

    return put


def _account(api, tenant, n: int):
    return api.post("/v1/accounts", {"email": f"c{n}@customer.test", "name": f"C{n}", "currency": "USD"}, tenant.user)


def test_a_tenant_on_a_plan_of_two_accounts_is_refused_the_third_with_accounts_limit_reached(
    api, tenant, on_tiny_plan, owner_conn
):
    on_tiny_plan(tenant.id)
    assert [_account(api, tenant, n).status for n in (1, 2)] == [201, 201]
    before = billing.snapshot(owner_conn, tenant.id)

    third = _account(api, tenant, 3)

    assert third.status == 403
    assert third.body["error"]["code"] == "accounts_limit_reached"
    assert third.body["error"]["message"] == "the tiny plan allows at most 2 accounts"
    assert billing.snapshot(owner_conn, tenant.id) == before
    assert len(api.get("/v1/accounts", tenant.user).body["data"]) == 2


def test_the_default_standard_plan_counts_accounts_and_enterprise_counts_nothing(tenant, other_tenant, owner_conn):
    owner_conn.run("UPDATE tenants SET plan_tier = 'enterprise' WHERE id = CAST(:t AS uuid)", t=other_tenant.id)
    with transaction(tenant_id=tenant.id) as tx:
        assert tx.one("SELECT tier, max_accounts, usage_requests_per_second FROM tenant_platform_plan()") == {
            "tier": "standard",
            "max_accounts": 10000,
            "usage_requests_per_second": 100,
        }
    with transaction(tenant_id=other_tenant.id) as tx:
        counted = []
        tenant_limits.enforce(tx, "accounts", counted.append)
        assert counted == [], "an unlimited tier counts nothing"


def test_a_second_webhook_endpoint_past_the_plans_one_is_refused_with_webhook_endpoints_limit_reached(
    api, tenant, on_tiny_plan
):
    on_tiny_plan(tenant.id)
    body = {"url": "https://hooks.example.com/a", "enabled_events": ["*"]}
    assert api.post("/v1/webhook_endpoints", body, tenant.admin).status == 201

    second = api.post("/v1/webhook_endpoints", {**body, "url": "https://hooks.example.com/b"}, tenant.admin)

    assert second.status == 403
    assert second.body["error"]["code"] == "webhook_endpoints_limit_reached"
    assert "at most 1 webhook endpoints" in second.body["error"]["message"]


def test_an_api_client_past_the_plans_limit_is_refused_with_api_clients_limit_reached(tenant, on_tiny_plan):
    on_tiny_plan(tenant.id)
    with transaction(tenant_id=tenant.id) as tx:
        tenant_limits.enforce(tx, "api_clients", lambda cap: 0)
        tenant_limits.enforce(tx, "api_clients", 0)  # a count the caller made under the same lock

    with pytest.raises(errors.Forbidden) as refused:
        with transaction(tenant_id=tenant.id) as tx:
            tenant_limits.enforce(tx, "api_clients", lambda cap: 1)

    assert refused.value.code == "api_clients_limit_reached"
    assert refused.value.message == "the tiny plan allows at most 1 API clients"


def test_provisioning_a_tenant_on_a_plan_the_platform_does_not_sell_is_a_400_on_plan_and_stores_nothing(
    api, make_tenant, cognito, owner_conn
):
    operator = cognito.token(make_tenant("Platform", operator=True), "ADMIN")
    tenants_before = owner_conn.run("SELECT count(*) FROM tenants")[0][0]
    body = {"name": "Newco", "email": "ops@newco.test", "plan": "platinum"}

    refused = api.post("/v1/tenants", body, operator, headers={"Idempotency-Key": "t-1"})
    retried = api.post("/v1/tenants", {**body, "plan": "enterprise"}, operator, headers={"Idempotency-Key": "t-1"})

    assert refused.status == 400
    assert refused.body["error"]["details"] == [
        {"field": "plan", "issue": "must be a platform plan: enterprise, growth or standard"}
    ]
    assert retried.status == 201 and retried.body["plan"] == "enterprise", "the refusal claimed no key"
    assert owner_conn.run("SELECT count(*) FROM tenants")[0][0] == tenants_before + 1


def _usage(api, tenant, account_id: str, event_id: str, **kw):
    event = {
        "event_id": event_id,
        "account_id": account_id,
        "metric": "api_calls",
        "quantity": 1,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    return api.post("/v1/events", event, tenant.user, **kw)


def test_usage_requests_over_the_plans_rate_are_429_with_retry_after_store_nothing_and_pass_a_second_later(
    api, catalog, on_tiny_plan, owner_conn
):
    account = api.post("/v1/accounts", {"email": "a@c.test", "name": "A", "currency": "USD"}, catalog.user).body
    assert api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user).status == 201
    on_tiny_plan(catalog.id)  # 1 a second, bursts of 2

    burst = [_usage(api, catalog, account["id"], f"e-{n}").status for n in (1, 2)]
    before = billing.snapshot(owner_conn, catalog.id)
    over = _usage(api, catalog, account["id"], "e-3", headers={"Idempotency-Key": "k-3"})
    stored_after_refusal = billing.snapshot(owner_conn, catalog.id)
    time.sleep(1.0)
    later = _usage(api, catalog, account["id"], "e-3", headers={"Idempotency-Key": "k-3"})

    assert burst == [200, 200]
    assert over.status == 429
    assert over.headers["Retry-After"] == "1"
    assert over.body["error"]["code"] == "usage_rate_limit_exceeded"
    assert "at most 1 usage requests a second" in over.body["error"]["message"]
    assert stored_after_refusal == before, "a refused request stores nothing (its key is not claimed either)"
    assert later.status == 200 and later.body["accepted"] == 1


def test_a_replayed_or_reused_idempotency_key_spends_no_usage_rate_token(api, catalog, on_tiny_plan):
    account = api.post("/v1/accounts", {"email": "a@c.test", "name": "A", "currency": "USD"}, catalog.user).body
    assert api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user).status == 201
    on_tiny_plan(catalog.id)  # 1 a second, bursts of 2
    key = {"Idempotency-Key": "k-1"}
    event = {"event_id": "e-1", "account_id": account["id"], "metric": "api_calls", "quantity": 1}
    event["timestamp"] = datetime.now(UTC).isoformat()

    first = api.post("/v1/events", event, catalog.user, headers=key)  # the burst's first token
    replays = [api.post("/v1/events", event, catalog.user, headers=key) for _ in range(5)]
    reused = _usage(api, catalog, account["id"], "e-other", headers=key)  # another body: 409, no token either
    second = _usage(api, catalog, account["id"], "e-2")  # the burst's second token
    third = _usage(api, catalog, account["id"], "e-3")

    assert first.status == 200 and first.body["accepted"] == 1
    assert [(r.status, r.headers.get("Idempotent-Replayed"), r.body) for r in replays] == [
        (200, "true", first.body)
    ] * 5
    assert reused.status == 409 and reused.body["error"]["code"] == "idempotency_key_reused"
    assert second.status == 200
    assert third.status == 429 and third.body["error"]["code"] == "usage_rate_limit_exceeded"
