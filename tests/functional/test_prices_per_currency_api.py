"""Prices per currency over the API: a plan code priced in several currencies, its field errors, and an
account's currency picking the price (or a 422 that stores nothing)."""

from tests import billing

TEAM = {
    "code": "team",
    "name": "Team",
    "interval": "month",
    "amount": 4900,
    "currency": "USD",
    "amounts": {"EUR": 4500, "JPY": 7000, "KWD": 15000},
    "usage_prices": [
        {
            "metric": "api_calls",
            "aggregation": "sum",
            "unit_amount": 2,
            "currency_options": {"EUR": {"unit_amount": 3}, "JPY": {"unit_amount": 1}, "KWD": {"unit_amount": 1}},
        }
    ],
}


def test_a_plan_priced_per_currency_returns_every_currencys_amount_its_defaults_included(api, tenant):
    reply = api.post("/v1/plans", TEAM, tenant.admin)

    assert reply.status == 201, reply.body
    plan = reply.body
    assert (plan["amount"], plan["currency"]) == (4900, "USD")
    assert plan["amounts"] == {"USD": 4900, "EUR": 4500, "JPY": 7000, "KWD": 15000}
    assert plan["usage_prices"] == TEAM["usage_prices"]
    assert api.get("/v1/plans", tenant.user).body["data"] == [plan]


def test_amounts_may_give_the_default_currencys_price_instead_of_amount(api, tenant):
    body = {k: v for k, v in TEAM.items() if k not in ("amount", "usage_prices")}
    reply = api.post("/v1/plans", {**body, "amounts": {"USD": 4900, "EUR": 4500}}, tenant.admin)

    assert reply.status == 201, reply.body
    assert (reply.body["amount"], reply.body["amounts"]) == (4900, {"USD": 4900, "EUR": 4500})


def test_a_plan_made_with_one_currency_lists_it_as_its_only_amount(api, catalog):
    plans = api.get("/v1/plans", catalog.user).body["data"]

    assert {(p["name"], tuple(p["amounts"].items())) for p in plans} == {
        ("Pro", (("USD", 4900),)),
        ("Pro yearly", (("USD", 49000),)),
        ("Basic", (("EUR", 900),)),
    }


def test_a_usage_price_without_a_price_in_each_of_the_plans_currencies_is_a_400_naming_it(api, tenant, owner_conn):
    before = billing.snapshot(owner_conn, tenant.id)
    usage = {**TEAM["usage_prices"][0], "currency_options": {"EUR": {"unit_amount": 3}}}

    reply = api.post("/v1/plans", {**TEAM, "usage_prices": [usage]}, tenant.admin)

    assert reply.status == 400
    assert reply.body["error"]["details"] == [
        {"field": "usage_prices.0.currency_options.JPY", "issue": "is required: the plan has a JPY price (amounts)"},
        {"field": "usage_prices.0.currency_options.KWD", "issue": "is required: the plan has a KWD price (amounts)"},
    ]
    assert billing.snapshot(owner_conn, tenant.id) == before


def test_amounts_in_an_unknown_currency_or_past_the_largest_amount_are_400_field_errors(api, tenant):
    unknown = api.post("/v1/plans", {**TEAM, "usage_prices": [], "amounts": {"QQQ": 100}}, tenant.admin)
    too_large = api.post("/v1/plans", {**TEAM, "usage_prices": [], "amounts": {"EUR": 10**12}}, tenant.admin)
    fractional = api.post("/v1/plans", {**TEAM, "usage_prices": [], "amounts": {"EUR": 45.5}}, tenant.admin)

    assert (unknown.status, unknown.body["error"]["details"]) == (
        400,
        [{"field": "amounts", "issue": "keys: is not an ISO 4217 currency code"}],
    )
    assert (too_large.status, too_large.body["error"]["details"]) == (
        400,
        [{"field": "amounts.EUR", "issue": "must be at most 999999999999"}],
    )
    assert (fractional.status, fractional.body["error"]["details"]) == (
        400,
        [{"field": "amounts.EUR", "issue": "must be an integer"}],
    )


def test_a_plan_without_amount_or_its_default_currency_in_amounts_is_a_400_on_amount(api, tenant):
    body = {k: v for k, v in TEAM.items() if k not in ("amount", "usage_prices")}

    reply = api.post("/v1/plans", body, tenant.admin)

    assert reply.status == 400
    assert reply.body["error"]["details"] == [
        {"field": "amount", "issue": "is required, unless amounts gives the USD price"}
    ]


def test_a_subscription_in_a_currency_the_plan_has_no_price_in_is_422_and_stores_nothing(api, tenant, owner_conn):
    assert api.post("/v1/plans", TEAM, tenant.admin).status == 201
    gbp = api.post("/v1/accounts", {"email": "g@customer.test", "name": "G", "currency": "GBP"}, tenant.user).body
    before = billing.snapshot(owner_conn, tenant.id)

    reply = api.post(
        "/v1/subscriptions", {"account_id": gbp["id"], "plan": "team"}, tenant.user, headers={"Idempotency-Key": "g1"}
    )

    assert reply.status == 422
    assert reply.body["error"]["code"] == "currency_not_offered"
    assert reply.body["error"]["message"] == "the plan has no price in GBP (it is priced in EUR, JPY, KWD, USD)"
    assert billing.snapshot(owner_conn, tenant.id) == before


def test_a_subscription_shows_the_price_in_its_accounts_currency(api, tenant):
    assert api.post("/v1/plans", TEAM, tenant.admin).status == 201
    body = {"email": "k@customer.test", "name": "K", "currency": "KWD", "plan": "team"}
    kwd = api.post("/v1/accounts", body, tenant.user)
    assert kwd.status == 201, kwd.body

    reply = api.post("/v1/subscriptions", {"account_id": kwd.body["id"], "plan": "team", "quantity": 2}, tenant.user)

    assert reply.status == 201, reply.body
    assert (reply.body["amount"], reply.body["quantity"], reply.body["currency"]) == (15000, 2, "KWD")
