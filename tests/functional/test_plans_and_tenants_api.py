def test_admin_creates_a_plan_with_metered_prices_and_lists_it(api, tenant):
    body = {
        "code": "scale",
        "name": "Scale",
        "interval": "month",
        "amount": 9900,
        "currency": "USD",
        "usage_prices": [
            {"metric": "api_calls", "aggregation": "sum", "unit_amount": 2},
            {
                "metric": "seats",
                "aggregation": "max",
                "tiers": [{"up_to": 10, "unit_amount": 500}, {"up_to": None, "unit_amount": 300}],
            },
        ],
    }
    created = api.post("/v1/plans", body, tenant.admin)
    listed = api.get("/v1/plans", tenant.user)

    assert created.status == 201
    assert created.body["usage_prices"] == body["usage_prices"]
    assert [p["id"] for p in listed.body["data"]] == [created.body["id"]]


def test_duplicate_plan_price_is_a_conflict(api, tenant):
    body = {"code": "pro", "name": "Pro", "interval": "month", "amount": 100, "currency": "USD"}
    assert api.post("/v1/plans", body, tenant.admin).status == 201
    reply = api.post("/v1/plans", body, tenant.admin)
    assert reply.status == 409
    assert reply.body["error"]["code"] == "plan_exists"


def test_plan_amounts_must_be_non_negative_integers(api, tenant):
    for amount in (-1, 1.5, "100", 10**15):
        body = {"code": "x", "name": "X", "interval": "month", "amount": amount, "currency": "USD"}
        reply = api.post("/v1/plans", body, tenant.admin)
        assert reply.status == 400, amount
        assert reply.body["error"]["details"][0]["field"] == "amount"


def test_plans_of_another_tenant_are_invisible(api, tenant, other_tenant):
    api.post("/v1/plans", {"code": "p", "name": "P", "interval": "month", "amount": 1, "currency": "USD"}, tenant.admin)
    assert api.get("/v1/plans", other_tenant.user).body["data"] == []


def test_operator_admin_provisions_a_tenant_it_cannot_then_read_into(api, make_tenant, cognito):
    operator = cognito.token(make_tenant("Platform", operator=True), "ADMIN")
    reply = api.post("/v1/tenants", {"name": "Newco", "email": "ops@newco.test", "plan": "growth"}, operator)

    assert reply.status == 201
    assert (reply.body["object"], reply.body["status"], reply.body["plan"]) == ("tenant", "active", "growth")
    newco = cognito.token(reply.body["id"], "ADMIN")
    assert api.get("/v1/plans", newco).status == 200
    assert api.get("/v1/accounts", operator).body["data"] == []


def test_a_customer_tenants_admin_cannot_provision_tenants(api, tenant):
    reply = api.post("/v1/tenants", {"name": "Newco", "email": "ops@newco.test", "plan": "growth"}, tenant.admin)
    assert reply.status == 403
    assert "platform operator" in reply.body["error"]["message"]


def test_tenant_creation_validation_failure(api, tenant):
    reply = api.post("/v1/tenants", {"name": "", "email": "x"}, tenant.admin)
    assert reply.status == 400
    assert {d["field"] for d in reply.body["error"]["details"]} == {"name", "email", "plan"}


def test_tiers_must_rise_and_end_open(api, tenant):
    for tiers in (
        [{"up_to": 10, "unit_amount": 5}],
        [{"up_to": 10, "unit_amount": 5}, {"up_to": 5, "unit_amount": 3}, {"up_to": None, "unit_amount": 1}],
        [{"up_to": None, "unit_amount": 5}, {"up_to": None, "unit_amount": 1}],
    ):
        plan = {
            "code": "t",
            "name": "T",
            "interval": "month",
            "amount": 0,
            "currency": "USD",
            "usage_prices": [{"metric": "m", "aggregation": "sum", "tiers": tiers}],
        }
        reply = api.post("/v1/plans", plan, tenant.admin)
        assert reply.status == 400, tiers
        assert reply.body["error"]["details"][0]["field"] == "usage_prices.0.tiers"


def test_a_usage_price_mixing_models_is_refused_naming_each_field(api, tenant):
    plan = {
        "code": "mixed",
        "name": "Mixed",
        "interval": "month",
        "amount": 0,
        "currency": "USD",
        "usage_prices": [
            {"metric": "m", "aggregation": "sum", "model": "package", "unit_amount": 5, "tiers": TIERS_OPEN},
            {
                "metric": "m",
                "aggregation": "sum",
                "model": "percentage",
                "rate": "2.5",
                "field": "amount",
                "min_amount": 9,
                "max_amount": 3,
            },
        ],
    }
    reply = api.post("/v1/plans", plan, tenant.admin)
    assert reply.status == 400
    assert reply.body["error"]["code"] == "invalid_usage_price"
    assert [d["field"] for d in reply.body["error"]["details"]] == [
        "usage_prices.0.package_size",
        "usage_prices.0.tiers",
        "usage_prices.1.min_amount",
    ]


TIERS_OPEN = [{"up_to": None, "unit_amount": 1}]
