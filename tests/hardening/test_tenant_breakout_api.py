"""Tenant breakout over the API: tenant B's tokens carrying tenant A's real ids.

For every route and every id-bearing parameter (path, query and body), B gets a 404
resource_missing, exactly the answer an id that never existed gets (so A's ids are
not even confirmed to exist), never a byte of A's data, and nothing of A's changes.
The one exception is a usage event, which a batch judges per event: rejected with
"no such account", as for any unknown id.
"""

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devtools.stack import FALL_DUE
from tests import billing

DOCUMENT = json.loads((Path(__file__).parents[2] / "docs" / "openapi.json").read_text())
FIGURE = (
    "tenant breakout (API): {probes} requests with another tenant's ids over {parameters} id-bearing parameters"
    " -> {not_found} x 404, {rejected} refused as for an unknown id (a usage event; Stripe's unsigned webhook),"
    " {leaks} leaks"
)

DELIVERIES = "/v1/webhook_endpoints/{endpoint_id}/deliveries"
RETRY = "/v1/webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/retry"
# (method, path, role, where the victim's id goes, parameter, which victim id)
PROBES = [
    ("GET", "/v1/accounts/{account_id}", "USER", "path", "account_id", "account"),
    ("GET", "/v1/accounts/{account_id}/ledger", "USER", "path", "account_id", "account"),
    ("GET", "/v1/accounts/{account_id}/entitlements", "USER", "path", "account_id", "account"),
    ("GET", "/v1/accounts/{account_id}/upcoming_invoice", "USER", "path", "account_id", "account"),
    ("POST", "/v1/accounts/{account_id}/rebill", "ADMIN", "path", "account_id", "account"),
    ("POST", "/v1/accounts/{account_id}/payment_methods/setup", "USER", "path", "account_id", "account"),
    ("POST", "/v1/gateway/stripe/{tenant_id}", "USER", "path", "tenant_id", "tenant_id"),
    ("GET", "/v1/subscriptions/{subscription_id}", "USER", "path", "subscription_id", "subscription"),
    ("POST", "/v1/subscriptions/{subscription_id}/cancel", "USER", "path", "subscription_id", "subscription"),
    ("POST", "/v1/subscriptions/{subscription_id}", "USER", "path", "subscription_id", "subscription"),
    ("DELETE", "/v1/subscriptions/{subscription_id}/pending_change", "USER", "path", "subscription_id", "subscription"),
    ("POST", "/v1/subscriptions/{subscription_id}/pause", "USER", "path", "subscription_id", "subscription"),
    ("POST", "/v1/subscriptions/{subscription_id}/resume", "USER", "path", "subscription_id", "subscription"),
    ("GET", "/v1/invoices/{invoice_id}", "USER", "path", "invoice_id", "invoice"),
    ("POST", "/v1/invoices/{invoice_id}/finalize", "USER", "path", "invoice_id", "invoice"),
    ("POST", "/v1/invoices/{invoice_id}/void", "ADMIN", "path", "invoice_id", "invoice"),
    ("POST", "/v1/invoices/{invoice_id}/mark_uncollectible", "ADMIN", "path", "invoice_id", "invoice"),
    ("GET", "/v1/invoices/{invoice_id}/pdf", "USER", "path", "invoice_id", "invoice"),
    ("POST", "/v1/invoices", "USER", "body", "account_id", "account"),
    ("POST", "/v1/invoice_items", "USER", "body", "account_id", "account"),
    ("GET", "/v1/invoice_items", "USER", "query", "account_id", "account"),
    ("GET", "/v1/invoice_items", "USER", "query", "starting_after", "invoice_item"),
    ("GET", "/v1/invoice_items/{item_id}", "USER", "path", "item_id", "invoice_item"),
    ("DELETE", "/v1/invoice_items/{item_id}", "USER", "path", "item_id", "invoice_item"),
    ("POST", "/v1/credit_notes", "ADMIN", "body", "invoice", "invoice"),
    ("GET", "/v1/credit_notes", "USER", "query", "invoice", "invoice"),
    ("GET", "/v1/credit_notes", "USER", "query", "starting_after", "credit_note"),
    ("GET", "/v1/credit_notes/{note_id}", "USER", "path", "note_id", "credit_note"),
    ("GET", "/v1/subscriptions", "USER", "query", "account_id", "account"),
    ("GET", "/v1/invoices", "USER", "query", "account_id", "account"),
    ("GET", "/v1/plans", "USER", "query", "starting_after", "plan"),
    ("GET", "/v1/accounts", "USER", "query", "starting_after", "account"),
    ("GET", "/v1/accounts/{account_id}/ledger", "USER", "query", "starting_after", "ledger_entry"),
    ("GET", "/v1/subscriptions", "USER", "query", "starting_after", "subscription"),
    ("GET", "/v1/invoices", "USER", "query", "starting_after", "invoice"),
    ("POST", "/v1/subscriptions", "USER", "body", "account_id", "account"),
    ("POST", "/v1/events", "USER", "body", "account_id", "account"),
    ("GET", "/v1/notifications", "USER", "query", "starting_after", "event"),
    ("GET", "/v1/notifications/{event_id}", "USER", "path", "event_id", "event"),
    ("GET", "/v1/webhook_endpoints", "ADMIN", "query", "starting_after", "webhook_endpoint"),
    ("GET", "/v1/webhook_endpoints/{endpoint_id}", "ADMIN", "path", "endpoint_id", "webhook_endpoint"),
    ("POST", "/v1/webhook_endpoints/{endpoint_id}", "ADMIN", "path", "endpoint_id", "webhook_endpoint"),
    ("DELETE", "/v1/webhook_endpoints/{endpoint_id}", "ADMIN", "path", "endpoint_id", "webhook_endpoint"),
    ("POST", "/v1/webhook_endpoints/{endpoint_id}/rotate", "ADMIN", "path", "endpoint_id", "webhook_endpoint"),
    ("GET", DELIVERIES, "ADMIN", "path", "endpoint_id", "webhook_endpoint"),
    ("GET", DELIVERIES, "ADMIN", "query", "starting_after", "webhook_delivery"),
    ("POST", RETRY, "ADMIN", "path", "endpoint_id", "webhook_endpoint"),
    ("GET", "/v1/api_clients", "ADMIN", "query", "starting_after", "api_client"),
    ("GET", "/v1/api_clients/{api_client_id}", "ADMIN", "path", "api_client_id", "api_client"),
    ("DELETE", "/v1/api_clients/{api_client_id}", "ADMIN", "path", "api_client_id", "api_client"),
    ("POST", RETRY, "ADMIN", "path", "delivery_id", "webhook_delivery"),
    ("POST", "/v1/accounts/{account_id}", "USER", "path", "account_id", "account"),
    ("POST", "/v1/accounts/{account_id}/discounts", "USER", "path", "account_id", "account"),
    ("POST", "/v1/accounts/{account_id}/discounts", "USER", "body", "coupon", "coupon"),
    ("DELETE", "/v1/accounts/{account_id}/discounts", "USER", "path", "account_id", "account"),
    ("POST", "/v1/subscriptions/{subscription_id}/discounts", "USER", "path", "subscription_id", "subscription"),
    ("POST", "/v1/subscriptions/{subscription_id}/discounts", "USER", "body", "coupon", "coupon"),
    ("DELETE", "/v1/subscriptions/{subscription_id}/discounts", "USER", "path", "subscription_id", "subscription"),
    ("GET", "/v1/tax_rates", "USER", "query", "starting_after", "tax_rate"),
    ("GET", "/v1/tax_rates/{rate_id}", "USER", "path", "rate_id", "tax_rate"),
    ("POST", "/v1/tax_rates/{rate_id}", "ADMIN", "path", "rate_id", "tax_rate"),
    ("GET", "/v1/coupons", "USER", "query", "starting_after", "coupon"),
    ("GET", "/v1/coupons/{coupon_id}", "USER", "path", "coupon_id", "coupon"),
    ("POST", "/v1/coupons/{coupon_id}", "ADMIN", "path", "coupon_id", "coupon"),
]
BODIES = {
    "/v1/subscriptions": {"plan": "pro"},
    "/v1/events": {"event_id": "breakout-1", "metric": "api_calls", "quantity": 5},
    "/v1/subscriptions/{subscription_id}/cancel": {},
    "/v1/subscriptions/{subscription_id}": {"quantity": 2},
    "/v1/subscriptions/{subscription_id}/pause": {},
    "/v1/subscriptions/{subscription_id}/resume": {},
    "/v1/accounts/{account_id}/rebill": {},
    "/v1/invoice_items": {"currency": "USD", "description": "breakout", "amount": 1},
    "/v1/credit_notes": {"reason": "duplicate"},
    "/v1/webhook_endpoints/{endpoint_id}": {"description": "breakout"},
    "/v1/accounts/{account_id}": {"default_tax_rates": []},
    "/v1/accounts/{account_id}/discounts": {"coupon": "00000000-0000-4000-8000-000000000000"},
    "/v1/subscriptions/{subscription_id}/discounts": {"coupon": "00000000-0000-4000-8000-000000000000"},
    "/v1/tax_rates/{rate_id}": {"display_name": "breakout"},
    "/v1/coupons/{coupon_id}": {"name": "breakout"},
}
# Probes with two of A's ids at once: e is A's webhook endpoint, d a delivery of A's through it.
PAIRED_PROBES = [
    ("GET", "/v1/webhook_endpoints/{e}/deliveries?starting_after={d}"),
    ("POST", "/v1/webhook_endpoints/{e}/deliveries/{d}/retry"),
]
# POST routes that take no body: sent none.
NO_BODY = {"/v1/webhook_endpoints/{endpoint_id}/rotate", RETRY}


def _id_bearing_parameters() -> set:
    """(METHOD, path, where, name) for every uuid parameter and every *_id body field in the document."""
    found = set()
    for path, methods in DOCUMENT["paths"].items():
        for method, operation in methods.items():
            for parameter in operation.get("parameters", []):
                if parameter["schema"].get("format") == "uuid":
                    found.add((method.upper(), path, parameter["in"], parameter["name"]))
            body = json.dumps(operation.get("requestBody", {}))
            for name in {"account_id", "subscription_id", "invoice_id", "plan_id", "invoice", "coupon"}:
                if f'"{name}"' in body:
                    found.add((method.upper(), path, "body", name))
    return found


def test_the_probes_cover_every_id_bearing_parameter_in_the_document():
    assert {(m, p, where, name) for m, p, _role, where, name, _which in PROBES} == _id_bearing_parameters()


@pytest.fixture
def victim(api, catalog, owner_conn, gateway) -> dict:
    """Tenant A with a plan, a billed account (invoice, ledger, payment), a subscription and usage,
    its events, a webhook endpoint with a delivery, and a machine client."""
    a = catalog
    account = api.post(
        "/v1/accounts", {"email": "victim@a.test", "name": "Victim Corp", "currency": "USD"}, a.user
    ).body
    subscription = api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, a.user).body
    for statement in FALL_DUE:
        owner_conn.run(statement, account=account["id"])
    assert api.post(f"/v1/accounts/{account['id']}/rebill", {}, a.admin).body["outcome"] == "succeeded"
    invoice = api.get(f"/v1/invoices?account_id={account['id']}", a.user).body["data"][0]
    ledger = api.get(f"/v1/accounts/{account['id']}/ledger", a.user).body["data"]
    plan = api.get("/v1/plans", a.user).body["data"][0]
    item = {"account_id": account["id"], "currency": "USD", "description": "Victim item", "amount": 5}
    invoice_item = api.post("/v1/invoice_items", item, a.user).body
    note = api.post("/v1/credit_notes", {"invoice": invoice["id"], "amount": 1, "reason": "duplicate"}, a.admin).body
    endpoint = _endpoint(api, a, "https://hooks.example.com/a")
    event, delivery = _delivery(owner_conn, a.id, endpoint["id"])
    client = api.post("/v1/api_clients", {"name": "Victim sender", "scopes": ["billing/usage.write"]}, a.admin).body
    rate = api.post("/v1/tax_rates", {"display_name": "Victim VAT", "percentage": "19", "inclusive": True}, a.admin)
    coupon = api.post("/v1/coupons", {"name": "Victim deal", "percent_off": "10", "duration": "forever"}, a.admin)
    assert api.post(f"/v1/accounts/{account['id']}/discounts", {"coupon": coupon.body["id"]}, a.user).status == 201
    return {
        "tax_rate": rate.body["id"],
        "coupon": coupon.body["id"],
        "tenant": a,
        "tenant_id": a.id,
        "account": account["id"],
        "subscription": subscription["id"],
        "invoice": invoice["id"],
        "ledger_entry": ledger[0]["id"],
        "plan": plan["id"],
        "invoice_item": invoice_item["id"],
        "credit_note": note["id"],
        "event": event,
        "webhook_endpoint": endpoint["id"],
        "webhook_secret": endpoint["secret"],
        "webhook_delivery": delivery,
        "api_client": client["id"],
        "api_client_id": client["client_id"],
        "api_client_secret": client["client_secret"],
    }


def _endpoint(api, tenant, url: str) -> dict:
    reply = api.post("/v1/webhook_endpoints", {"url": url, "enabled_events": ["*"]}, tenant.admin)
    assert reply.status == 201, reply.body
    return reply.body


def _delivery(owner_conn, tenant_id: str, endpoint_id: str) -> tuple[str, str]:
    """The tenant's account.created event, and a pending delivery of it to ``endpoint_id`` (put in
    directly: no queues here to fan it out)."""
    [[event]] = owner_conn.run(
        "SELECT id FROM outbox WHERE tenant_id = CAST(:t AS uuid) AND event_type = 'account.created'"
        " ORDER BY created_at LIMIT 1",
        t=tenant_id,
    )
    [[delivery]] = owner_conn.run(
        "INSERT INTO webhook_deliveries (tenant_id, endpoint_id, event_id, event_type, next_attempt_at)"
        " VALUES (CAST(:t AS uuid), CAST(:e AS uuid), :event, 'account.created', now()) RETURNING id",
        t=tenant_id,
        e=endpoint_id,
        event=event,
    )
    return str(event), str(delivery)


def _webhook_rows(owner_conn, tenant_id: str) -> dict:
    """Every webhook row of ``tenant_id`` (endpoints with their secrets and lanes, deliveries, attempts):
    the tables ``billing.snapshot`` does not cover."""
    return {
        table: sorted(
            str(row[0])
            for row in owner_conn.run(
                f"SELECT to_jsonb(t) FROM {table} t WHERE tenant_id = CAST(:t AS uuid)", t=tenant_id
            )
        )
        for table in ("webhook_endpoints", "webhook_deliveries", "webhook_attempts")
    }


def _request(api, token, method, template, where, name, value, own):
    """The probe's request with ``value`` in its id-bearing parameter; other path ids are B's own
    (``own``: path parameter -> B's id of that kind)."""
    path = template.format(**{p: value if (where, name) == ("path", p) else own[p] for p in _path_ids(template)})
    body = dict(BODIES.get(template, {}))
    if where == "query":
        path = f"{path}?{name}={value}"
    if where == "body":
        body[name] = value
        if template == "/v1/events":
            body["timestamp"] = datetime.now(UTC).isoformat()
    sends_body = method == "POST" and template not in NO_BODY
    return api.call(method, path, body=body if sends_body else None, token=token)


def _path_ids(template: str) -> list[str]:
    return [part[1:-1] for part in template.split("/") if part.startswith("{")]


def _own_account_and_plan(api, b) -> str:
    """B's own account, and B's own "pro" plan: in every probe A's id is the only thing B lacks."""
    plan = {"code": "pro", "name": "Pro", "interval": "month", "amount": 100, "currency": "USD"}
    assert api.post("/v1/plans", plan, b.admin).status == 201
    return api.post("/v1/accounts", {"email": "own@b.test", "name": "Own", "currency": "USD"}, b.user).body["id"]


def _own_ids(api, b, owner_conn) -> dict:
    """B's own ids for every path parameter a probe does not aim at: an account (and a "pro" plan),
    and a webhook endpoint with a delivery of B's account.created event. So the retry probe aimed at
    A's delivery goes through B's real, enabled endpoint, and the delivery lookup is what answers."""
    account = _own_account_and_plan(api, b)
    endpoint = _endpoint(api, b, "https://hooks.example.com/b")["id"]
    _event, delivery = _delivery(owner_conn, b.id, endpoint)
    subscription = api.post("/v1/subscriptions", {"account_id": account, "plan": "pro"}, b.user).body["id"]
    return {"account_id": account, "endpoint_id": endpoint, "delivery_id": delivery, "subscription_id": subscription}


def test_another_tenants_ids_get_what_a_nonexistent_id_gets_and_reveal_and_change_nothing(
    api, victim, other_tenant, owner_conn, figures
):
    b = other_tenant
    own = _own_ids(api, b, owner_conn)
    before = billing.snapshot(owner_conn, victim["tenant"].id)
    webhooks_before = _webhook_rows(owner_conn, victim["tenant"].id)
    secrets = {victim[k] for k in ("account", "subscription", "invoice", "ledger_entry", "plan", "invoice_item")}
    secrets |= {victim[k] for k in ("credit_note", "event", "webhook_endpoint", "webhook_secret", "webhook_delivery")}
    secrets |= {victim[k] for k in ("api_client", "api_client_id", "api_client_secret", "tax_rate", "coupon")}
    secrets |= {"Victim VAT", "Victim deal"}
    secrets |= {"victim@a.test", "Victim Corp", victim["tenant"].id, "hooks.example.com/a", "Victim sender"}
    counts = {"probes": 0, "not_found": 0, "rejected": 0, "leaks": 0}
    for method, path, role, where, name, which in PROBES:
        token = b.admin if role == "ADMIN" else b.user
        theirs = _request(api, token, method, path, where, name, victim[which], own)
        never = _request(api, token, method, path, where, name, str(uuid.uuid4()), own)
        _judge(f"{method} {path} {where}:{name}", path, theirs, never, secrets, counts)
    # Both of A's ids at once (A's endpoint and a delivery of A's through it), as two that never existed.
    for method, template in PAIRED_PROBES:
        theirs = api.call(
            method, template.format(e=victim["webhook_endpoint"], d=victim["webhook_delivery"]), token=b.admin
        )
        never = api.call(method, template.format(e=uuid.uuid4(), d=uuid.uuid4()), token=b.admin)
        _judge(f"{method} {template} (A's endpoint and delivery)", template, theirs, never, secrets, counts)

    assert billing.snapshot(owner_conn, victim["tenant"].id) == before, "no row of A's changed"
    assert _webhook_rows(owner_conn, victim["tenant"].id) == webhooks_before, "no webhook row of A's changed"
    figures.add("breakout_api", FIGURE, parameters=len(_id_bearing_parameters()), **counts)


def _judge(probe, path, theirs, never, secrets, counts) -> None:
    """``theirs`` (A's id) is answered as ``never`` (an id that never existed) and shows nothing of A's."""
    leaked = [s for s in secrets if s in json.dumps(theirs.body)]
    counts["probes"] += 1
    counts["leaks"] += bool(leaked)
    assert not leaked, (probe, leaked)
    assert theirs.status == never.status, (probe, theirs.body, never.body)
    assert _error(theirs) == _error(never), probe  # the same message and details too, word for word
    if path == "/v1/events":  # a usage batch is judged per event: "no such account", as for any unknown id
        assert (theirs.status, theirs.body["error"]["code"]) == (422, "usage_rejected"), probe
        counts["rejected"] += 1
    elif path.startswith("/v1/gateway/stripe/"):  # Stripe's webhooks: unsigned, as for any tenant id
        assert (theirs.status, theirs.body["error"]["code"]) == (400, "invalid_signature"), probe
        counts["rejected"] += 1
    else:
        assert (theirs.status, theirs.body["error"]["code"]) == (404, "resource_missing"), probe
        counts["not_found"] += 1


def _error(reply) -> dict:
    return {k: v for k, v in reply.body["error"].items() if k != "request_id"}


def test_another_tenants_plan_code_is_as_unknown_as_one_that_never_existed(api, catalog, other_tenant, owner_conn):
    b = other_tenant
    own = _own_account_and_plan(api, b)
    before = billing.snapshot(owner_conn, b.id)

    theirs = api.post("/v1/subscriptions", {"account_id": own, "plan": "basic"}, b.user)  # A's code, not B's
    never = api.post("/v1/subscriptions", {"account_id": own, "plan": "never-existed"}, b.user)

    assert theirs.status == never.status == 400, theirs.body
    echoed = json.dumps(theirs.body["error"]["details"]).replace("basic", "never-existed")  # the code is echoed
    assert echoed == json.dumps(never.body["error"]["details"])
    assert "Basic" not in json.dumps(theirs.body)
    assert billing.snapshot(owner_conn, b.id)["subscriptions"] == before["subscriptions"] == []


def test_an_idempotency_key_used_by_another_tenant_is_a_different_key(api, catalog, other_tenant):
    key = {"Idempotency-Key": "shared-key-1"}
    a = api.post("/v1/accounts", {"email": "a@a.test", "name": "A", "currency": "USD"}, catalog.user, headers=key)
    b = api.post("/v1/accounts", {"email": "b@b.test", "name": "B", "currency": "EUR"}, other_tenant.user, headers=key)

    assert (a.status, b.status) == (201, 201)
    assert "Idempotent-Replayed" not in b.headers
    assert b.body["email"] == "b@b.test" and b.body["id"] != a.body["id"]
