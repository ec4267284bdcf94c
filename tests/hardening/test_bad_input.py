"""Bad bodies get clear 4xx JSON errors and store nothing; odd but valid text is stored verbatim."""

import json
from datetime import UTC, datetime

from chalicelib.db import transaction
from chalicelib.validation import SCHEMA_DIR
from tests import billing


def _accounts(tenant_id):
    with transaction(tenant_id=tenant_id) as tx:
        return tx.scalar("SELECT count(*) FROM accounts")


def test_malformed_json_is_400(api, tenant):
    reply = api.call("POST", "/v1/accounts", token=tenant.user, raw=b'{"email": ')
    assert reply.status == 400
    assert "malformed JSON" in reply.body["error"]["message"]
    assert _accounts(tenant.id) == 0


def test_duplicated_keys_at_any_depth_are_400(api, tenant):
    for raw in (
        b'{"email": "a@b.test", "name": "A", "currency": "USD", "currency": "EUR"}',
        b'{"email": "a@b.test", "name": "A", "currency": "USD", "metadata": {"k": "1", "k": "2"}}',
    ):
        reply = api.call("POST", "/v1/accounts", token=tenant.user, raw=raw)
        assert reply.status == 400, raw
        assert "duplicate key" in reply.body["error"]["message"]
    assert _accounts(tenant.id) == 0


def test_body_over_256_kb_is_413(api, tenant):
    raw = json.dumps({"email": "a@b.test", "name": "x" * (300 * 1024), "currency": "USD"}).encode()
    reply = api.call("POST", "/v1/accounts", token=tenant.user, raw=raw)
    assert reply.status == 413
    assert reply.body["error"]["type"] == "payload_too_large"
    assert _accounts(tenant.id) == 0


def test_wrong_content_type_is_415_in_our_error_shape(api, tenant):
    reply = api.call("POST", "/v1/accounts", token=tenant.user, raw=b"email=a", headers={"Content-Type": "text/plain"})
    assert reply.status == 415
    assert reply.body["error"]["type"] == "unsupported_media_type"


def test_deep_nesting_nan_and_non_objects_are_400(api, tenant):
    deep = b'{"metadata": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}"
    deepest = b"[" * 100_000 + b"]" * 100_000  # past the parser's recursion limit, under 256 KB
    for raw in (deep, deepest, b'{"amount": NaN}', b"[]", b'"text"', b"\xff\xfe"):
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


# --- every string and number field of every POST body, with hostile values ----------------

FIGURE = (
    "bad input: {requests} hostile requests over {fields} body fields of {routes} routes:"
    " {rejected} rejected 4xx with nothing stored, {stored} stored verbatim as data, {server_errors} 5xx"
)
SQL = {
    "quote": "O'Brien'); DROP TABLE accounts;--",
    "double quote": '" OR "1"="1',
    "backslash": "\\'; SELECT pg_sleep(5);--",
    "like wildcards": "%_%",
    "placeholders": ":id $1 %s ?",
    "stacked": "a; DELETE FROM ledger_entries",
}
UNICODE = {
    "RTL override": "\u202eevil",
    "zero width": "a\u200bb\u200d",
    "combining": "e\u0301\u0301\u0301",
    "astral": "\U0001f4b8\U0002070e",
    "BOM": "\ufeffname",
    "line separator": "a\u2028b",
    "empty": "",
}
UNSTORABLE = {"NUL": "a\x00b", "lone surrogate": "\ud800", "overlong": "x" * 5000}
NUMBERS = {
    "negative": -1,
    "over the maximum": 10**12,
    "over int64": 2**63,
    "over uint64": 2**64,
    "huge": 10**400,
    "fraction": 1.5,
    "integral float": 1000.0,
    "string": "100",
    "boolean": True,
    "null": None,
}
# route -> (whose token, request schema)
ROUTES = {
    "/v1/tenants": ("operator", "tenant_create"),
    "/v1/plans": ("admin", "plan_create"),
    "/v1/accounts": ("user", "account_create"),
    "/v1/subscriptions": ("user", "subscription_create"),
    "/v1/events": ("user", "usage_event"),
}
USAGE_PRICE = {"metric": "api_calls", "aggregation": "sum"}
# Amounts inside a plan's usage prices, and the part of the body that holds each.
NESTED = {
    "usage_prices.0.unit_amount": lambda v: {"usage_prices": [{**USAGE_PRICE, "unit_amount": v}]},
    "usage_prices.0.tiers.0.unit_amount": lambda v: {
        "usage_prices": [{**USAGE_PRICE, "tiers": [{"up_to": None, "unit_amount": v}]}]
    },
}
NUMERIC = {("/v1/plans", "amount"), ("/v1/plans", "interval_count"), ("/v1/events", "quantity")} | {
    ("/v1/plans", field) for field in NESTED
}


def _base(route: str, n: int, account_id: str) -> dict:
    return {
        "/v1/tenants": {"name": "T", "email": f"t{n}@x.test", "plan": "growth"},
        "/v1/plans": {"code": f"c{n}", "name": "P", "interval": "month", "amount": 100, "currency": "USD"},
        "/v1/accounts": {"email": f"a{n}@x.test", "name": "A", "currency": "USD"},
        "/v1/subscriptions": {"account_id": account_id, "plan": "pro"},
        "/v1/events": {
            "event_id": f"e{n}",
            "account_id": account_id,
            "metric": "api_calls",
            "quantity": 1,
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }[route]


def _string_fields(schema_name: str) -> list[str]:
    schema = json.loads((SCHEMA_DIR / f"{schema_name}.json").read_text())
    fields = [name for name, spec in schema["properties"].items() if spec.get("type") == "string"]
    fields += [f"{name}.k" for name, spec in schema["properties"].items() if "additionalProperties" in spec]
    return fields


def _stored(owner_conn, tenant_id: str) -> tuple:
    """Every row of the tenant, and how many tenants there are (a POST /v1/tenants makes a new one)."""
    return billing.snapshot(owner_conn, tenant_id), owner_conn.run("SELECT count(*) FROM tenants")[0][0]


def _with(body: dict, field: str, value) -> dict:
    body = json.loads(json.dumps(body))
    if field in NESTED:
        body.update(NESTED[field](value))
    elif "." in field:
        outer, inner = field.split(".")
        body[outer] = {inner: value}
    else:
        body[field] = value
    return body


def test_hostile_values_in_every_field_are_stored_verbatim_or_rejected_with_nothing_stored(
    api, account, catalog, make_tenant, cognito, owner_conn, figures
):
    # Usage is billable only on a subscription: without one, odd but valid events would be refused
    # for that reason and never reach storage.
    subscribed = api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user)
    assert subscribed.status == 201, subscribed.body
    tokens = {
        "operator": cognito.token(make_tenant("Ops", operator=True), "ADMIN"),
        "admin": catalog.admin,
        "user": catalog.user,
    }
    cases = [
        (route, field, label, value)
        for route, (_role, schema) in ROUTES.items()
        for field in _string_fields(schema)
        for label, value in {**SQL, **UNICODE, **UNSTORABLE}.items()
    ]
    cases += [(route, field, label, value) for route, field in NUMERIC for label, value in NUMBERS.items()]
    counts = {"requests": 0, "rejected": 0, "stored": 0, "server_errors": 0}
    for n, (route, field, label, value) in enumerate(cases):
        role, _schema = ROUTES[route]
        before = _stored(owner_conn, catalog.id)
        body = _with(_base(route, n, account["id"]), field, value)
        reply = api.post(route, body, tokens[role], headers={"Idempotency-Key": f"bad-input-{n}"})
        case = (route, field, label, reply.status, reply.body)
        counts["requests"] += 1
        counts["server_errors"] += reply.status >= 500
        if reply.status >= 400:
            assert reply.status in (400, 422), case
            assert {d["field"] for d in reply.body["error"].get("details", [])} & {field, field.split(".")[0]} or (
                route == "/v1/events" and reply.status == 422
            ), case
            assert _stored(owner_conn, catalog.id) == before, ("something was stored", case)
            counts["rejected"] += 1
            continue
        assert label not in UNSTORABLE and (route, field) not in NUMERIC, ("should have been rejected", case)
        assert reply.status in (200, 201), case
        if route in ("/v1/accounts", "/v1/plans", "/v1/tenants") and "." not in field:
            assert reply.body[field] == value, ("not stored verbatim", case)
        counts["stored"] += 1
    fields = {(route, field) for route, field, _label, _value in cases}
    figures.add("bad_input", FIGURE, fields=len(fields), routes=len(ROUTES), **counts)
