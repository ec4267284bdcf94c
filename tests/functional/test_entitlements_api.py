"""Per-account entitlements and hard caps over the API: GET /v1/accounts/{id}/entitlements shows the
plan's features and each metered limit with this period's usage, as the invoice will count it; a
usage price's hard cap rejects exactly the events past it, with their reason."""

from datetime import UTC, datetime

from chalicelib.db import transaction

METERED = {
    "code": "metered",
    "name": "Metered",
    "interval": "month",
    "amount": 1000,
    "currency": "USD",
    "features": {"sso": True, "seats": 5},
    "limits": {"storage_gb": 50},
    "usage_prices": [
        {"metric": "api_calls", "aggregation": "sum", "unit_amount": 1, "hard_cap": 100},
        {"metric": "storage_gb", "aggregation": "max", "unit_amount": 10},
        {"metric": "logins", "aggregation": "count", "unit_amount": 0},
    ],
}


def _subscribed(api, tenant) -> dict:
    assert api.post("/v1/plans", METERED, tenant.admin).status == 201
    account = api.post(
        "/v1/accounts", {"email": "ada@customer.test", "name": "Ada", "currency": "USD"}, tenant.user
    ).body
    subscription = api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "metered"}, tenant.user).body
    return {"account": account, "subscription": subscription}


def _events(account_id: str, *quantities, metric: str = "api_calls", prefix: str = "e") -> dict:
    now = datetime.now(UTC).isoformat()
    return {
        "events": [
            {"event_id": f"{prefix}-{n}", "account_id": account_id, "metric": metric, "quantity": q, "timestamp": now}
            for n, q in enumerate(quantities, 1)
        ]
    }


def test_entitlements_show_the_plans_features_and_each_metered_limit_with_this_periods_usage(api, tenant):
    subscribed = _subscribed(api, tenant)
    account_id = subscribed["account"]["id"]
    for batch in (
        _events(account_id, 30, 45),
        _events(account_id, 7, 12, 9, metric="storage_gb", prefix="s"),
        _events(account_id, 1, 1, 1, metric="logins", prefix="l"),
    ):
        assert api.post("/v1/events", batch, tenant.user).body["accepted"] == len(batch["events"])

    reply = api.get(f"/v1/accounts/{account_id}/entitlements", tenant.user)

    assert reply.status == 200
    sub = subscribed["subscription"]
    assert reply.body == {
        "object": "account_entitlements",
        "account": account_id,
        "plan": "metered",
        "subscription": sub["id"],
        "period": {"start": sub["current_period_start"], "end": sub["current_period_end"]},
        "features": [{"feature": "seats", "value": 5}, {"feature": "sso", "value": True}],
        "limits": [
            # 30 + 45 of a hard cap of 100
            {"metric": "api_calls", "aggregation": "sum", "limit": 100, "used": 75, "remaining": 25, "hard_cap": True},
            # the largest of 7, 12 and 9, against the plan's limits.storage_gb (informational)
            {
                "metric": "storage_gb",
                "aggregation": "max",
                "limit": 50,
                "used": 12,
                "remaining": 38,
                "hard_cap": False,
            },
            # three events, no limit
            {
                "metric": "logins",
                "aggregation": "count",
                "limit": None,
                "used": 3,
                "remaining": None,
                "hard_cap": False,
            },
        ],
    }


def test_a_hard_cap_rejects_exactly_the_events_past_it_with_their_reason_and_leaves_nothing_remaining(api, tenant):
    account_id = _subscribed(api, tenant)["account"]["id"]

    # 60 and 30 fit (90), 20 would make 110, 10 fits (100), 1 would make 101.
    reply = api.post("/v1/events", _events(account_id, 60, 30, 20, 10, 1), tenant.user)
    resent = api.post("/v1/events", _events(account_id, 60), tenant.user)  # e-1 again: a duplicate, not usage
    full = api.post("/v1/events", _events(account_id, 1, prefix="late"), tenant.user)
    limits = api.get(f"/v1/accounts/{account_id}/entitlements", tenant.user).body["limits"]

    assert reply.status == 200
    assert (reply.body["accepted"], reply.body["rejected"]) == (3, 2)
    reason = "the plan's hard cap of 100 (sum of api_calls) for the period is reached"
    assert reply.body["data"] == [
        {"event_id": "e-1", "status": "accepted"},
        {"event_id": "e-2", "status": "accepted"},
        {"event_id": "e-3", "status": "rejected", "reasons": [reason], "code": "hard_cap_reached"},
        {"event_id": "e-4", "status": "accepted"},
        {"event_id": "e-5", "status": "rejected", "reasons": [reason], "code": "hard_cap_reached"},
    ]
    assert resent.status == 200 and resent.body["data"] == [{"event_id": "e-1", "status": "duplicate"}]
    assert full.status == 422
    assert full.body["error"]["code"] == "usage_rejected"
    assert full.body["error"]["details"] == [{"field": "events.0", "issue": reason}]
    assert limits[0] == {
        "metric": "api_calls",
        "aggregation": "sum",
        "limit": 100,
        "used": 100,
        "remaining": 0,
        "hard_cap": True,
    }
    with transaction(tenant_id=tenant.id) as tx:
        assert tx.scalar("SELECT sum(quantity) FROM usage_events WHERE metric = 'api_calls'") == 100
        rejections = tx.all("SELECT payload FROM outbox WHERE event_type = 'usage.rejected' ORDER BY created_at")
    first = rejections[0]["payload"]["object"]["data"]
    assert [(r["event_id"], r["code"]) for r in first] == [("e-3", "hard_cap_reached"), ("e-5", "hard_cap_reached")]


def test_a_hard_cap_must_be_a_non_negative_whole_number(api, tenant):
    for cap in (-1, 1.5, "100"):
        plan = {
            **METERED,
            "usage_prices": [{"metric": "api_calls", "aggregation": "sum", "unit_amount": 1, "hard_cap": cap}],
        }
        reply = api.post("/v1/plans", plan, tenant.admin)
        assert reply.status == 400, cap
        assert reply.body["error"]["details"][0]["field"] == "usage_prices.0.hard_cap"


def test_an_account_without_a_subscription_is_entitled_to_nothing(api, tenant):
    account = api.post("/v1/accounts", {"email": "b@customer.test", "name": "B", "currency": "USD"}, tenant.user).body

    reply = api.get(f"/v1/accounts/{account['id']}/entitlements", tenant.user)

    assert reply.status == 200
    assert reply.body == {
        "object": "account_entitlements",
        "account": account["id"],
        "plan": None,
        "subscription": None,
        "period": None,
        "features": [],
        "limits": [],
    }


def test_another_tenants_account_has_no_entitlements_to_show(api, tenant, other_tenant):
    account_id = _subscribed(api, tenant)["account"]["id"]

    theirs = api.get(f"/v1/accounts/{account_id}/entitlements", other_tenant.user)
    unknown = api.get("/v1/accounts/3f1c7a52-8a51-4f43-9a43-5b0b1d7a9e10/entitlements", tenant.user)

    assert (theirs.status, theirs.body["error"]["code"]) == (404, "resource_missing")
    assert (unknown.status, unknown.body["error"]["code"]) == (404, "resource_missing")
