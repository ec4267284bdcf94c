import threading

from chalicelib import auth, idempotency
from chalicelib.billing import accounts
from chalicelib.db import transaction
from chalicelib.http import ApiRequest
from tests import billing

BODY = {"email": "ada@customer.test", "name": "Ada", "currency": "USD"}


def _count_accounts(tenant_id):
    with transaction(tenant_id=tenant_id) as tx:
        return tx.scalar("SELECT count(*) FROM accounts")


def test_same_key_and_body_replays_the_first_response(api, tenant):
    first = api.post("/v1/accounts", BODY, tenant.user, headers={"Idempotency-Key": "k-1"})
    second = api.post("/v1/accounts", BODY, tenant.user, headers={"Idempotency-Key": "k-1"})

    assert first.status == second.status == 201
    assert second.body == first.body
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert _count_accounts(tenant.id) == 1


def test_same_key_with_a_different_body_is_409(api, tenant):
    api.post("/v1/accounts", BODY, tenant.user, headers={"Idempotency-Key": "k-1"})
    reply = api.post("/v1/accounts", {**BODY, "name": "Eve"}, tenant.user, headers={"Idempotency-Key": "k-1"})

    assert reply.status == 409
    assert reply.body["error"]["code"] == "idempotency_key_reused"
    assert _count_accounts(tenant.id) == 1


def test_same_key_on_another_route_is_409(api, tenant):
    api.post("/v1/accounts", BODY, tenant.user, headers={"Idempotency-Key": "k-1"})
    reply = api.post(
        "/v1/tenants",
        {"name": "N", "email": "n@x.test", "plan": "growth"},
        tenant.admin,
        headers={"Idempotency-Key": "k-1"},
    )
    assert reply.status == 409


def test_keys_are_scoped_per_tenant(api, tenant, other_tenant):
    a = api.post("/v1/accounts", BODY, tenant.user, headers={"Idempotency-Key": "shared"})
    b = api.post("/v1/accounts", BODY, other_tenant.user, headers={"Idempotency-Key": "shared"})

    assert a.status == b.status == 201
    assert a.body["id"] != b.body["id"]
    assert "Idempotent-Replayed" not in b.headers


def test_a_failed_request_releases_its_key_for_the_retry(api, catalog):
    key = {"Idempotency-Key": "k-2"}
    failed = api.post(
        "/v1/subscriptions",
        {"account_id": "3f1c7a52-8a51-4f43-9a43-5b0b1d7a9e10", "plan": "pro"},
        catalog.user,
        headers=key,
    )
    assert failed.status == 404
    account = api.post("/v1/accounts", {**BODY, "plan": "pro"}, catalog.user).body
    # Same key, now a different body: the failed attempt left nothing behind to conflict with.
    retried = api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user, headers=key)
    assert retried.status == 201


def test_invalid_requests_store_no_key(api, tenant):
    assert api.post("/v1/accounts", {"email": "x"}, tenant.user, headers={"Idempotency-Key": "k-3"}).status == 400
    assert api.post("/v1/accounts", BODY, tenant.user, headers={"Idempotency-Key": "k-3"}).status == 201


def test_overlong_key_is_400(api, tenant):
    reply = api.post("/v1/accounts", BODY, tenant.user, headers={"Idempotency-Key": "k" * 256})
    assert reply.status == 400
    assert reply.body["error"]["details"][0]["field"] == "Idempotency-Key"


def test_expired_keys_run_again(api, tenant):
    api.post("/v1/accounts", BODY, tenant.user, headers={"Idempotency-Key": "k-4"})
    with transaction(tenant_id=tenant.id) as tx:
        tx.run("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
    reply = api.post("/v1/accounts", BODY, tenant.user, headers={"Idempotency-Key": "k-4"})
    assert reply.status == 201 and "Idempotent-Replayed" not in reply.headers
    assert _count_accounts(tenant.id) == 2


def test_50_concurrent_identical_posts_with_one_key_create_exactly_one_row(database_url, make_tenant):
    """Through the same code path the route uses, on 50 threads with their own connections.

    (chalice's test client and chalice local share one ``app.current_request``
    across threads, so they cannot carry concurrent requests themselves.)
    """
    tenant_id = make_tenant()
    principal = auth.Principal(tenant_id=tenant_id, user_id="u", groups=frozenset({"USER"}))
    request = ApiRequest(principal, "POST", "/v1/accounts", body=BODY, idempotency_key="burst")
    start = threading.Barrier(50)
    outcomes, failures = [], []

    def post():
        start.wait()
        try:
            command = accounts.NewAccount(**request.body)
            outcomes.append(idempotency.run(request, lambda tx: accounts.create(tx, principal, command), status=201))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            failures.append(exc)

    billing.in_threads(*[post] * 50)

    assert _count_accounts(tenant_id) == 1
    assert len(outcomes) + len(failures) == 50
    assert {type(f).__name__ for f in failures} <= {"Conflict"}
    assert all(getattr(f, "code", None) == "idempotency_request_in_progress" for f in failures)
    assert len({str(o.body["id"]) for o in outcomes}) == 1
    assert sum(not o.replayed for o in outcomes) == 1


def test_one_key_on_the_same_route_with_another_id_is_not_a_replay(api, catalog):
    subs = []
    for i in range(2):
        account = api.post("/v1/accounts", {**BODY, "email": f"x{i}@y.test", "plan": "pro"}, catalog.user).body
        subs.append(api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user).body)

    first = api.post(f"/v1/subscriptions/{subs[0]['id']}/cancel", None, catalog.user, headers={"Idempotency-Key": "c"})
    second = api.post(f"/v1/subscriptions/{subs[1]['id']}/cancel", None, catalog.user, headers={"Idempotency-Key": "c"})

    assert first.status == 200
    assert second.status == 409
    assert second.body["error"]["code"] == "idempotency_key_reused"
    assert api.get(f"/v1/subscriptions/{subs[0]['id']}", catalog.user).body["status"] == "canceled"


def test_a_suspended_tenants_keyed_request_is_refused_at_the_claim_and_leaves_no_key(api, tenant):
    """The claim's transaction is where a keyed request's tenant is checked (its work's does not ask again)."""
    first = api.post("/v1/accounts", BODY, tenant.user, headers={"Idempotency-Key": "k-5"})
    with transaction(tenant_id=tenant.id) as tx:
        tx.run("UPDATE tenants SET status = 'suspended'")

    replay = api.post("/v1/accounts", BODY, tenant.user, headers={"Idempotency-Key": "k-5"})
    fresh = api.post("/v1/accounts", {**BODY, "name": "Eve"}, tenant.user, headers={"Idempotency-Key": "k-6"})

    assert first.status == 201
    assert (replay.status, fresh.status) == (403, 403)
    assert "suspended" in replay.body["error"]["message"] and "suspended" in fresh.body["error"]["message"]
    with transaction(tenant_id=tenant.id) as tx:
        assert [row[0] for row in tx.run("SELECT key FROM idempotency_keys")] == ["k-5"]
    assert _count_accounts(tenant.id) == 1
