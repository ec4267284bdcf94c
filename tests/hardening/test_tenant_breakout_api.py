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

# (method, path, role, where the victim's id goes, parameter, which victim id)
PROBES = [
    ("GET", "/v1/accounts/{account_id}", "USER", "path", "account_id", "account"),
    ("GET", "/v1/accounts/{account_id}/ledger", "USER", "path", "account_id", "account"),
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
}


def _id_bearing_parameters() -> set:
    """(METHOD, path, where, name) for every uuid parameter and every *_id body field in the document."""
    found = set()
    for path, methods in DOCUMENT["paths"].items():
        for method, operation in methods.items():
            for parameter in operation.get("parameters", []):
                if parameter["schema"].get("format") == "uuid":
                    found.add((method.upper(), path, parameter["in"], parameter["name"]))
            body = json.dumps(operation.get("requestBody", {}))
            for name in {"account_id", "subscription_id", "invoice_id", "plan_id", "invoice"}:
                if f'"{name}"' in body:
                    found.add((method.upper(), path, "body", name))
    return found


def test_the_probes_cover_every_id_bearing_parameter_in_the_document():
    assert {(m, p, where, name) for m, p, _role, where, name, _which in PROBES} == _id_bearing_parameters()


@pytest.fixture
def victim(api, catalog, owner_conn, gateway) -> dict:
    """Tenant A with a plan, a billed account (invoice, ledger, payment), a subscription and usage."""
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
    return {
        "tenant": a,
        "tenant_id": a.id,
        "account": account["id"],
        "subscription": subscription["id"],
        "invoice": invoice["id"],
        "ledger_entry": ledger[0]["id"],
        "plan": plan["id"],
        "invoice_item": invoice_item["id"],
        "credit_note": note["id"],
    }


def _request(api, token, method, template, where, name, value, own_account):
    """The probe's request with ``value`` in its id-bearing parameter; other path ids are B's own account."""
    path = template.format(**{p: value if (where, name) == ("path", p) else own_account for p in _path_ids(template)})
    body = dict(BODIES.get(template, {}))
    if where == "query":
        path = f"{path}?{name}={value}"
    if where == "body":
        body[name] = value
        if template == "/v1/events":
            body["timestamp"] = datetime.now(UTC).isoformat()
    return api.call(method, path, body=body if method == "POST" else None, token=token)


def _path_ids(template: str) -> list[str]:
    return [part[1:-1] for part in template.split("/") if part.startswith("{")]


def _own_account_and_plan(api, b) -> str:
    """B's own account, and B's own "pro" plan: in every probe A's id is the only thing B lacks."""
    plan = {"code": "pro", "name": "Pro", "interval": "month", "amount": 100, "currency": "USD"}
    assert api.post("/v1/plans", plan, b.admin).status == 201
    return api.post("/v1/accounts", {"email": "own@b.test", "name": "Own", "currency": "USD"}, b.user).body["id"]


def test_another_tenants_ids_get_what_a_nonexistent_id_gets_and_reveal_and_change_nothing(
    api, victim, other_tenant, owner_conn, figures
):
    b = other_tenant
    own = _own_account_and_plan(api, b)
    before = billing.snapshot(owner_conn, victim["tenant"].id)
    secrets = {victim[k] for k in ("account", "subscription", "invoice", "ledger_entry", "plan", "invoice_item")}
    secrets.add(victim["credit_note"])
    secrets |= {"victim@a.test", "Victim Corp", victim["tenant"].id}
    counts = {"probes": 0, "not_found": 0, "rejected": 0, "leaks": 0}
    for method, path, role, where, name, which in PROBES:
        token = b.admin if role == "ADMIN" else b.user
        theirs = _request(api, token, method, path, where, name, victim[which], own)
        never = _request(api, token, method, path, where, name, str(uuid.uuid4()), own)
        probe = f"{method} {path} {where}:{name}"
        leaked = [s for s in secrets if s in json.dumps(theirs.body)]
        counts["probes"] += 1
        counts["leaks"] += bool(leaked)
        assert not leaked, (probe, leaked)
        assert theirs.status == never.status, (probe, theirs.body, never.body)
        assert theirs.body["error"].get("code") == never.body["error"].get("code"), probe
        if path == "/v1/events":  # a usage batch is judged per event: "no such account", as for any unknown id
            assert (theirs.status, theirs.body["error"]["code"]) == (422, "usage_rejected"), probe
            counts["rejected"] += 1
        elif path.startswith("/v1/gateway/stripe/"):  # Stripe's webhooks: unsigned, as for any tenant id
            assert (theirs.status, theirs.body["error"]["code"]) == (400, "invalid_signature"), probe
            counts["rejected"] += 1
        else:
            assert (theirs.status, theirs.body["error"]["code"]) == (404, "resource_missing"), probe
            counts["not_found"] += 1

    assert billing.snapshot(owner_conn, victim["tenant"].id) == before, "no row of A's changed"
    figures.add("breakout_api", FIGURE, parameters=len(_id_bearing_parameters()), **counts)


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
