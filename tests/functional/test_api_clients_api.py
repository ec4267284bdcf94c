"""Machine clients: a tenant's backend gets its own credentials, signs in with the client-credentials
grant and calls the API with its access token, within its scopes and its tenant, until it is deleted."""

from datetime import UTC, datetime

import pytest

from chalicelib import auth
from chalicelib.db import transaction

ALL = ["billing/read", "billing/write", "billing/usage.write", "billing/admin"]


def _now():
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _client(api, tenant, scopes, name="usage sender", **kw):
    reply = api.post("/v1/api_clients", {"name": name, "scopes": scopes}, tenant.admin, **kw)
    assert reply.status == 201, reply.body
    return reply.body


def _subscribed_account(api, tenant) -> str:
    account = api.post(
        "/v1/accounts", {"email": "ada@customer.test", "name": "Ada", "currency": "USD"}, tenant.user
    ).body
    assert api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, tenant.user).status == 201
    return account["id"]


def test_an_admin_makes_a_client_whose_secret_is_shown_once(api, catalog, cognito):
    made = _client(api, catalog, ["billing/usage.write"])

    assert made["object"] == "api_client" and made["scopes"] == ["billing/usage.write"]
    assert made["client_secret"] and made["client_id"]
    shown = api.get(f"/v1/api_clients/{made['id']}", token=catalog.admin).body
    listed = api.get("/v1/api_clients", token=catalog.admin).body["data"]
    assert "client_secret" not in shown and [c["id"] for c in listed] == [made["id"]]
    cognito_client = cognito.client.describe_user_pool_client(UserPoolId=cognito.pool_id, ClientId=made["client_id"])
    assert cognito_client["UserPoolClient"]["AllowedOAuthFlows"] == ["client_credentials"]


def test_a_machine_client_sends_ten_thousand_usage_events_and_reads_nothing_of_another_tenant(
    api, catalog, other_tenant, cognito
):
    account = _subscribed_account(api, catalog)
    api.post(
        "/v1/plans",
        {"code": "pro", "name": "Pro", "interval": "month", "amount": 4900, "currency": "USD"},
        other_tenant.admin,
    )
    foreign = _subscribed_account(api, other_tenant)
    made = _client(api, catalog, ["billing/usage.write", "billing/read"])
    token = cognito.machine_token(made["client_id"], made["client_secret"])

    accepted = 0
    for batch in range(100):
        events = [
            {
                "event_id": f"m-{batch}-{i}",
                "account_id": account,
                "metric": "api_calls",
                "quantity": 1,
                "timestamp": _now(),
            }
            for i in range(100)
        ]
        reply = api.post("/v1/events", {"events": events}, token)
        assert reply.status == 200, reply.body
        accepted += reply.body["accepted"]

    assert accepted == 10_000
    with transaction(tenant_id=catalog.id) as tx:
        assert tx.scalar("SELECT count(*) FROM usage_events WHERE account_id = :a", a=account) == 10_000
    assert api.get(f"/v1/accounts/{foreign}", token=token).status == 404
    assert [a["id"] for a in api.get("/v1/accounts", token=token).body["data"]] == [account]
    stolen = api.post(
        "/v1/events",
        {"event_id": "x", "account_id": foreign, "metric": "api_calls", "quantity": 1, "timestamp": _now()},
        token,
    )
    assert stolen.status == 422
    with transaction(tenant_id=other_tenant.id) as tx:
        assert tx.scalar("SELECT count(*) FROM usage_events") == 0


def test_a_machine_client_may_do_what_its_scopes_say_and_nothing_more(api, catalog, cognito):
    made = _client(api, catalog, ["billing/usage.write"])
    token = cognito.machine_token(made["client_id"], made["client_secret"])

    reply = api.get("/v1/accounts", token=token)
    assert (reply.status, reply.body["error"]["code"]) == (403, "insufficient_scope")
    assert (
        api.post(
            "/v1/plans", {"code": "x", "name": "X", "interval": "month", "amount": 1, "currency": "USD"}, token
        ).status
        == 403
    )


def test_a_machine_client_cannot_manage_clients_tenants_or_payment_keys_even_with_admin_scope(api, catalog, cognito):
    made = _client(api, catalog, ALL)
    token = cognito.machine_token(made["client_id"], made["client_secret"])

    for method, path, body in [
        ("POST", "/v1/api_clients", {"name": "more", "scopes": ALL}),
        ("GET", "/v1/api_clients", None),
        ("POST", "/v1/tenants", {"name": "T", "email": "t@t.test", "plan": "standard"}),
        ("PUT", "/v1/gateway", {"provider": "stripe", "secret_key": "sk_test_x", "webhook_secret": "whsec_x"}),
    ]:
        reply = api.call(method, path, body=body, token=token)
        assert (reply.status, reply.body["error"]["code"]) == (403, "people_only"), (method, path)
    assert api.get("/v1/plans", token=token).status == 200  # what billing/admin may do, it does


def test_a_deleted_clients_tokens_are_refused_and_cognito_issues_it_no_more(api, catalog, cognito):
    made = _client(api, catalog, ["billing/read"])
    token = cognito.machine_token(made["client_id"], made["client_secret"])
    assert api.get("/v1/plans", token=token).status == 200

    deleted = api.call("DELETE", f"/v1/api_clients/{made['id']}", token=catalog.admin)

    assert deleted.status == 200 and deleted.body["deleted"] is True
    assert api.get("/v1/plans", token=token).status == 401
    assert api.get(f"/v1/api_clients/{made['id']}", token=catalog.admin).status == 404
    with pytest.raises(Exception, match="ResourceNotFound|not bound"):
        cognito.machine_token(made["client_id"], made["client_secret"])


def test_another_warm_container_refuses_a_deleted_client_within_the_binding_cache_window(
    api, catalog, cognito, monkeypatch
):
    made = _client(api, catalog, ["billing/read"])
    token = cognito.machine_token(made["client_id"], made["client_secret"])
    assert api.get("/v1/plans", token=token).status == 200  # the binding is now cached here
    with transaction(tenant_id=catalog.id) as tx:  # deleted by another container: this one's cache is not told
        tx.run("UPDATE api_clients SET deleted_at = now() WHERE id = :id", id=made["id"])

    assert api.get("/v1/plans", token=token).status == 200  # still within the window
    monkeypatch.setattr(auth, "BINDING_CACHE_S", 0)
    assert api.get("/v1/plans", token=token).status == 401


def test_a_clients_token_naming_another_tenant_is_refused(api, catalog, other_tenant, cognito):
    made = _client(api, catalog, ALL)
    forged = cognito.forge(other_tenant.id, groups=(), client_id=made["client_id"], sub=made["client_id"])

    assert api.get("/v1/plans", token=forged).status == 401


def test_people_need_the_admin_role_to_manage_clients_and_retries_make_one(api, catalog, cognito):
    assert api.post("/v1/api_clients", {"name": "x", "scopes": ["billing/read"]}, catalog.user).status == 403
    key = {"headers": {"Idempotency-Key": "client-once"}}

    first = _client(api, catalog, ["billing/read"], **key)
    again = _client(api, catalog, ["billing/read"], **key)

    assert first["client_secret"] and again["client_secret"] is None  # shown once, not kept for replays
    assert {**again, "client_secret": first["client_secret"]} == first
    clients = cognito.client.list_user_pool_clients(UserPoolId=cognito.pool_id, MaxResults=60)["UserPoolClients"]
    assert sum(c["ClientName"].startswith(f"tenant-{catalog.id}") for c in clients) == 1


def test_a_cognito_client_whose_binding_was_not_stored_is_deleted_again(api, catalog, cognito, monkeypatch):
    from chalicelib import api_clients, errors

    def refuse(*_args, **_kwargs):
        raise errors.ServiceUnavailable("the audit trail is away")

    monkeypatch.setattr(api_clients.audit, "record", refuse)

    reply = api.post("/v1/api_clients", {"name": "lost", "scopes": ["billing/read"]}, catalog.admin)

    assert reply.status == 503
    clients = cognito.client.list_user_pool_clients(UserPoolId=cognito.pool_id, MaxResults=60)["UserPoolClients"]
    assert not [c for c in clients if c["ClientName"].startswith(f"tenant-{catalog.id}")]
    with transaction(tenant_id=catalog.id) as tx:
        assert tx.scalar("SELECT count(*) FROM api_clients") == 0


def test_a_machine_clients_secret_signs_no_person_in(api, catalog, cognito):
    made = _client(api, catalog, ["billing/read"])
    described = cognito.client.describe_user_pool_client(UserPoolId=cognito.pool_id, ClientId=made["client_id"])

    assert described["UserPoolClient"]["ExplicitAuthFlows"] == ["ALLOW_REFRESH_TOKEN_AUTH"]


@pytest.mark.parametrize(
    "body,field",
    [
        ({"name": "x", "scopes": ["billing/everything"]}, "scopes.0"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "", "scopes": ["billing/read"]}, "name"),
        ({"scopes": ["billing/read"]}, "name"),
    ],
)
def test_bad_client_requests_are_400_with_the_field(api, catalog, body, field):
    reply = api.post("/v1/api_clients", body, catalog.admin)

    assert reply.status == 400
    assert field in [d["field"] for d in reply.body["error"]["details"]]


def test_an_id_token_is_refused_on_every_kind_of_route(api, catalog, cognito):
    id_token = cognito.token(catalog.id, "ADMIN", kind="IdToken")

    for path in ("/v1/plans", "/v1/api_clients", "/v1/webhook_endpoints"):
        assert api.get(path, token=id_token).status == 401
