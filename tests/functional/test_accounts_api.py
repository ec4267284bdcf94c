def test_create_account_returns_the_account_with_status_and_billing_date(api, catalog):
    reply = api.post(
        "/v1/accounts", {"email": "ada@customer.test", "name": "Ada", "plan": "pro", "currency": "USD"}, catalog.user
    )

    assert reply.status == 201
    assert reply.body["object"] == "account"
    assert reply.body["status"] == "ACTIVE"
    assert reply.body["plan"] == "pro"
    assert reply.body["next_billing_at"] is None
    assert reply.body["balance"] == 0

    fetched = api.get(f"/v1/accounts/{reply.body['id']}", catalog.user)
    assert fetched.status == 200
    assert fetched.body == reply.body


def test_create_account_reports_every_invalid_field(api, catalog):
    reply = api.post("/v1/accounts", {"email": "nope", "currency": "usd", "colour": "red"}, catalog.user)

    assert reply.status == 400
    assert reply.body["error"]["type"] == "invalid_request"
    fields = {d["field"]: d["issue"] for d in reply.body["error"]["details"]}
    assert set(fields) == {"email", "currency", "name", "colour"}
    assert fields["name"] == "is required"
    assert fields["colour"] == "is not a known field"


def test_create_account_with_unknown_plan_names_the_field(api, catalog):
    reply = api.post(
        "/v1/accounts", {"email": "a@b.test", "name": "A", "plan": "gold", "currency": "USD"}, catalog.user
    )

    assert reply.status == 400
    assert reply.body["error"]["details"] == [{"field": "plan", "issue": "no such plan"}]


def test_another_tenants_account_is_not_found(api, account, other_tenant):
    reply = api.get(f"/v1/accounts/{account['id']}", other_tenant.admin)

    assert reply.status == 404
    assert reply.body["error"]["type"] == "not_found"


def test_malformed_account_id_is_a_400_not_a_500(api, tenant):
    reply = api.get("/v1/accounts/not-a-uuid", tenant.user)

    assert reply.status == 400
    assert reply.body["error"]["details"][0]["field"] == "id"


def test_ledger_of_a_new_account_is_empty_with_zero_balance(api, account, catalog):
    reply = api.get(f"/v1/accounts/{account['id']}/ledger", catalog.user)

    assert reply.status == 200
    assert reply.body["data"] == []
    assert reply.body["balance"] == 0
    assert reply.body["currency"] == "USD"


def test_ledger_shows_entries_with_running_balance(api, account, catalog):
    from chalicelib.db import transaction

    with transaction(tenant_id=catalog.id) as tx:
        for key, kind, amount in [("c1", "charge", 4900), ("p1", "payment", -4900), ("c2", "charge", 4900)]:
            tx.run(
                "INSERT INTO ledger_entries (account_id, entry_type, amount, currency, idempotency_key)"
                " VALUES (:a, :k, :m, 'USD', :i)",
                a=account["id"],
                k=kind,
                m=amount,
                i=key,
            )

    first = api.get(f"/v1/accounts/{account['id']}/ledger?limit=2", catalog.user)
    rest = api.get(
        f"/v1/accounts/{account['id']}/ledger?limit=2&starting_after={first.body['next_cursor']}", catalog.user
    )

    assert [e["balance"] for e in first.body["data"]] == [4900, 0]
    assert first.body["has_more"] is True
    assert [e["balance"] for e in rest.body["data"]] == [4900]
    assert rest.body["has_more"] is False
    assert rest.body["balance"] == 4900
    assert api.get(f"/v1/accounts/{account['id']}", catalog.user).body["balance"] == 4900


def test_another_tenants_ledger_is_not_found(api, account, other_tenant):
    assert api.get(f"/v1/accounts/{account['id']}/ledger", other_tenant.user).status == 404
