"""Bad bodies get clear 4xx JSON errors and store nothing."""

import json

from chalicelib.db import transaction


def _accounts(tenant_id):
    with transaction(tenant_id=tenant_id) as tx:
        return tx.scalar("SELECT count(*) FROM accounts")


def test_malformed_json_is_400(api, tenant):
    reply = api.call("POST", "/v1/accounts", token=tenant.user, raw=b'{"email": ')
    assert reply.status == 400
    assert "malformed JSON" in reply.body["error"]["message"]


def test_duplicated_keys_are_400(api, tenant):
    raw = b'{"email": "a@b.test", "name": "A", "currency": "USD", "currency": "EUR"}'
    reply = api.call("POST", "/v1/accounts", token=tenant.user, raw=raw)
    assert reply.status == 400
    assert "duplicate key" in reply.body["error"]["message"]


def test_body_over_256_kb_is_413(api, tenant):
    raw = json.dumps({"email": "a@b.test", "name": "x" * (300 * 1024), "currency": "USD"}).encode()
    reply = api.call("POST", "/v1/accounts", token=tenant.user, raw=raw)
    assert reply.status == 413
    assert reply.body["error"]["type"] == "payload_too_large"


def test_wrong_content_type_is_415_in_our_error_shape(api, tenant):
    reply = api.call("POST", "/v1/accounts", token=tenant.user, raw=b"email=a", headers={"Content-Type": "text/plain"})
    assert reply.status == 415
    assert reply.body["error"]["type"] == "unsupported_media_type"


def test_deep_nesting_nan_and_non_objects_are_400(api, tenant):
    deep = b'{"metadata": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}"
    for raw in (deep, b'{"amount": NaN}', b"[]", b'"text"', b"\xff\xfe"):
        reply = api.call("POST", "/v1/accounts", token=tenant.user, raw=raw)
        assert reply.status == 400, raw[:20]
    assert _accounts(tenant.id) == 0


def test_sql_metacharacters_are_stored_as_data(api, tenant):
    name = "Robert'); DROP TABLE accounts;--"
    reply = api.post("/v1/accounts", {"email": "bobby@tables.test", "name": name, "currency": "USD"}, tenant.user)
    assert reply.status == 201
    assert api.get(f"/v1/accounts/{reply.body['id']}", tenant.user).body["name"] == name


def test_unexpected_errors_are_a_generic_500_with_a_request_id(api, tenant, monkeypatch):
    from chalicelib.billing import plans

    def boom(*_args, **_kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(plans, "list_page", boom)
    reply = api.get("/v1/plans", tenant.user)

    assert reply.status == 500
    assert reply.body["error"]["message"] == "internal error"
    assert reply.body["error"]["request_id"]
    assert "secret" not in json.dumps(reply.body)


def test_unstorable_strings_and_numbers_are_400_and_the_connection_stays_healthy(api, tenant):
    bodies = [
        b'{"email": "a@b.test", "name": "a\\u0000b", "currency": "USD"}',
        b'{"email": "a@b.test", "name": "\\ud800", "currency": "USD"}',
        b'{"email": "a@b.test", "name": "A", "currency": "USD", "metadata": {"k": "\\u0000"}}',
        b'{"email": "a@b.test", "name": "A", "currency": "USD", "metadata": {"k": 1e400}}',
    ]
    for raw in bodies:
        for headers in ({}, {"Idempotency-Key": "unicode"}):
            reply = api.call("POST", "/v1/accounts", token=tenant.user, raw=raw, headers=headers)
            assert reply.status == 400, (raw, reply.body)
    assert api.get("/v1/accounts", tenant.user).status == 200
    assert _accounts(tenant.id) == 0


def test_integral_floats_are_not_integers(api, tenant):
    plan = {"code": "p", "name": "P", "interval": "month", "amount": 1000.0, "currency": "USD"}
    reply = api.post("/v1/plans", plan, tenant.admin)
    assert reply.status == 400
    assert reply.body["error"]["details"][0]["field"] == "amount"


def test_out_of_range_timestamps_and_odd_limits_are_400_and_do_not_poison_the_next_request(api, tenant, other_tenant):
    for query in (
        "period_start_gte=0001-01-01T00:00:00%2B01:00",
        "period_start_lt=9999-12-31T23:59:59-01:00",
        "limit=%C2%B2",
        "limit=" + "9" * 5000,
    ):
        assert api.get(f"/v1/invoices?{query}", tenant.user).status == 400, query
    assert api.get("/v1/plans", other_tenant.user).status == 200
    assert api.get("/v1/invoices", tenant.user).status == 200
