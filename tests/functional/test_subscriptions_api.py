from datetime import datetime


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_subscribing_starts_a_period_and_sets_the_accounts_next_billing_date(api, account, catalog):
    reply = api.post(
        "/v1/subscriptions", {"account_id": account["id"], "plan": "pro", "billing_cycle": "monthly"}, catalog.user
    )

    assert reply.status == 201, reply.body
    sub = reply.body
    assert (sub["object"], sub["status"], sub["plan"], sub["billing_cycle"]) == (
        "subscription",
        "active",
        "pro",
        "monthly",
    )
    assert (sub["amount"], sub["currency"]) == (4900, "USD")
    start, end = _ts(sub["current_period_start"]), _ts(sub["current_period_end"])
    assert 28 <= (end - start).days <= 31
    assert api.get(f"/v1/subscriptions/{sub['id']}", catalog.user).body == sub
    assert _ts(api.get(f"/v1/accounts/{account['id']}", catalog.user).body["next_billing_at"]) == end


def test_yearly_cycle_uses_the_yearly_price(api, account, catalog):
    reply = api.post(
        "/v1/subscriptions", {"account_id": account["id"], "plan": "pro", "billing_cycle": "yearly"}, catalog.user
    )
    assert reply.status == 201
    assert reply.body["amount"] == 49000


def test_subscription_validation_failure_lists_fields(api, catalog):
    reply = api.post("/v1/subscriptions", {"account_id": "x", "billing_cycle": "hourly"}, catalog.user)

    assert reply.status == 400
    assert {d["field"] for d in reply.body["error"]["details"]} == {"account_id", "billing_cycle", "plan"}


def test_plan_without_a_price_for_the_cycle_is_a_400_on_plan(api, account, catalog):
    reply = api.post(
        "/v1/subscriptions", {"account_id": account["id"], "plan": "pro", "billing_cycle": "weekly"}, catalog.user
    )
    assert reply.status == 400
    assert reply.body["error"]["details"][0]["field"] == "plan"


def test_a_plan_without_a_price_in_the_accounts_currency_is_unprocessable(api, account, catalog):
    reply = api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "basic"}, catalog.user)
    assert reply.status == 422
    assert reply.body["error"]["code"] == "currency_not_offered"


def test_second_live_subscription_is_a_conflict(api, account, catalog):
    body = {"account_id": account["id"], "plan": "pro"}
    assert api.post("/v1/subscriptions", body, catalog.user).status == 201
    reply = api.post("/v1/subscriptions", body, catalog.user)
    assert reply.status == 409
    assert reply.body["error"]["code"] == "subscription_exists"


def test_subscribing_another_tenants_account_is_not_found(api, account, other_tenant):
    api.post(
        "/v1/plans",
        {"code": "pro", "name": "Pro", "interval": "month", "amount": 1, "currency": "USD"},
        other_tenant.admin,
    )
    reply = api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, other_tenant.user)
    assert reply.status == 404


def test_cancel_stops_billing_and_cancelling_again_is_unprocessable(api, account, catalog):
    sub = api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user).body

    canceled = api.post(f"/v1/subscriptions/{sub['id']}/cancel", None, catalog.user)
    again = api.post(f"/v1/subscriptions/{sub['id']}/cancel", None, catalog.user)

    assert canceled.status == 200
    assert canceled.body["status"] == "canceled"
    assert canceled.body["canceled_at"] is not None
    assert api.get(f"/v1/accounts/{account['id']}", catalog.user).body["next_billing_at"] is None
    assert again.status == 422
    assert again.body["error"]["code"] == "already_canceled"
    assert api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user).status == 201


def test_cancel_at_period_end_keeps_the_subscription_active(api, account, catalog):
    sub = api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user).body

    reply = api.post(f"/v1/subscriptions/{sub['id']}/cancel", {"at_period_end": True}, catalog.user)

    assert reply.status == 200
    assert (reply.body["status"], reply.body["cancel_at_period_end"]) == ("active", True)
    assert api.post(f"/v1/subscriptions/{sub['id']}/cancel", {"at_period_end": True}, catalog.user).status == 422


def test_cancel_validation_failure_and_other_tenant(api, account, catalog, other_tenant):
    sub = api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user).body

    assert api.post(f"/v1/subscriptions/{sub['id']}/cancel", {"at_period_end": "yes"}, catalog.user).status == 400
    assert api.post(f"/v1/subscriptions/{sub['id']}/cancel", None, other_tenant.user).status == 404
    assert api.get(f"/v1/subscriptions/{sub['id']}", other_tenant.user).status == 404


def test_list_subscriptions_filters_by_account_and_status(api, account, catalog):
    sub = api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user).body

    mine = api.get(f"/v1/subscriptions?account_id={account['id']}", catalog.user)
    canceled = api.get("/v1/subscriptions?status=canceled", catalog.user)
    invalid = api.get("/v1/subscriptions?status=sleeping", catalog.user)

    assert [s["id"] for s in mine.body["data"]] == [sub["id"]]
    assert canceled.body["data"] == []
    assert invalid.status == 400


def test_a_new_subscription_emits_count_and_revenue_metrics(api, account, catalog, capsys):
    import json as _json

    api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user)
    metrics = [_json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    names = {m["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"]: m for m in metrics}
    assert names["subscription_count"]["subscription_count"] == 1
    assert names["subscription_revenue"]["subscription_revenue"] == 4900
    assert names["subscription_revenue"]["Currency"] == "USD"
