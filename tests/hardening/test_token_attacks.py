"""Token attacks on every route: a missing, broken, forged, expired, confused or tampered
token is a 401, and so are an ID token (every route takes access tokens), a machine client of
no tenant or of another tenant, and a deleted client; a genuine one with too little role, a
missing or foreign scope, a machine on a route for people, no tenant or a suspended tenant is a
403; never a 500, and never the data the route would have served."""

import re
import time
import uuid

import pytest

from chalicelib import identity
from chalicelib.db import transaction
from devtools.cognito import alg_none, hs256_with_public_key, tampered

SOME_ID = "3f1c7a52-8a51-4f43-9a43-5b0b1d7a9e10"
# (method, path, minimum role)
ROUTES = [
    ("POST", "/v1/tenants", "ADMIN"),
    ("POST", "/v1/plans", "ADMIN"),
    ("GET", "/v1/plans", "USER"),
    ("POST", "/v1/accounts", "USER"),
    ("GET", "/v1/accounts", "USER"),
    ("GET", f"/v1/accounts/{SOME_ID}", "USER"),
    ("GET", f"/v1/accounts/{SOME_ID}/ledger", "USER"),
    ("GET", f"/v1/accounts/{SOME_ID}/entitlements", "USER"),
    ("GET", f"/v1/accounts/{SOME_ID}/upcoming_invoice", "USER"),
    ("POST", f"/v1/accounts/{SOME_ID}/rebill", "ADMIN"),
    ("POST", f"/v1/accounts/{SOME_ID}/payment_methods/setup", "USER"),
    ("GET", "/v1/gateway", "ADMIN"),
    ("PUT", "/v1/gateway", "ADMIN"),
    ("POST", "/v1/subscriptions", "USER"),
    ("GET", "/v1/subscriptions", "USER"),
    ("GET", f"/v1/subscriptions/{SOME_ID}", "USER"),
    ("POST", f"/v1/subscriptions/{SOME_ID}/cancel", "USER"),
    ("POST", f"/v1/subscriptions/{SOME_ID}", "USER"),
    ("DELETE", f"/v1/subscriptions/{SOME_ID}/pending_change", "USER"),
    ("POST", f"/v1/subscriptions/{SOME_ID}/pause", "USER"),
    ("POST", f"/v1/subscriptions/{SOME_ID}/resume", "USER"),
    ("GET", "/v1/invoices", "USER"),
    ("GET", f"/v1/invoices/{SOME_ID}", "USER"),
    ("POST", f"/v1/invoices/{SOME_ID}/finalize", "USER"),
    ("POST", f"/v1/invoices/{SOME_ID}/void", "ADMIN"),
    ("POST", f"/v1/invoices/{SOME_ID}/mark_uncollectible", "ADMIN"),
    ("GET", f"/v1/invoices/{SOME_ID}/pdf", "USER"),
    ("POST", "/v1/invoices", "USER"),
    ("POST", "/v1/invoice_items", "USER"),
    ("GET", "/v1/invoice_items", "USER"),
    ("GET", f"/v1/invoice_items/{SOME_ID}", "USER"),
    ("DELETE", f"/v1/invoice_items/{SOME_ID}", "USER"),
    ("POST", "/v1/credit_notes", "ADMIN"),
    ("GET", "/v1/credit_notes", "USER"),
    ("GET", f"/v1/credit_notes/{SOME_ID}", "USER"),
    ("GET", "/v1/invoice_settings", "USER"),
    ("POST", "/v1/invoice_settings", "ADMIN"),
    ("POST", "/v1/events", "USER"),
    ("GET", "/v1/notifications", "USER"),
    ("GET", f"/v1/notifications/{SOME_ID}", "USER"),
    ("POST", "/v1/webhook_endpoints", "ADMIN"),
    ("GET", "/v1/webhook_endpoints", "ADMIN"),
    ("GET", f"/v1/webhook_endpoints/{SOME_ID}", "ADMIN"),
    ("POST", f"/v1/webhook_endpoints/{SOME_ID}", "ADMIN"),
    ("DELETE", f"/v1/webhook_endpoints/{SOME_ID}", "ADMIN"),
    ("POST", f"/v1/webhook_endpoints/{SOME_ID}/rotate", "ADMIN"),
    ("GET", f"/v1/webhook_endpoints/{SOME_ID}/deliveries", "ADMIN"),
    ("POST", f"/v1/webhook_endpoints/{SOME_ID}/deliveries/{SOME_ID}/retry", "ADMIN"),
    ("POST", "/v1/api_clients", "ADMIN"),
    ("GET", "/v1/api_clients", "ADMIN"),
    ("GET", f"/v1/api_clients/{SOME_ID}", "ADMIN"),
    ("DELETE", f"/v1/api_clients/{SOME_ID}", "ADMIN"),
    ("POST", f"/v1/accounts/{SOME_ID}", "USER"),
    ("POST", f"/v1/accounts/{SOME_ID}/discounts", "USER"),
    ("DELETE", f"/v1/accounts/{SOME_ID}/discounts", "USER"),
    ("POST", f"/v1/subscriptions/{SOME_ID}/discounts", "USER"),
    ("DELETE", f"/v1/subscriptions/{SOME_ID}/discounts", "USER"),
    ("POST", "/v1/tax_rates", "ADMIN"),
    ("GET", "/v1/tax_rates", "USER"),
    ("GET", f"/v1/tax_rates/{SOME_ID}", "USER"),
    ("POST", f"/v1/tax_rates/{SOME_ID}", "ADMIN"),
    ("POST", "/v1/coupons", "ADMIN"),
    ("GET", "/v1/coupons", "USER"),
    ("GET", f"/v1/coupons/{SOME_ID}", "USER"),
    ("POST", f"/v1/coupons/{SOME_ID}", "ADMIN"),
]
# Routes for people only: a machine client's token is refused there whatever its scopes.
PEOPLE_ONLY = {("POST", "/v1/tenants"), ("PUT", "/v1/gateway")} | {
    (method, path) for method, path, _ in ROUTES if path.startswith("/v1/api_clients")
}
# No token at all: a health check, hosted invoice pages (the signed link is the credential;
# tests/functional/test_invoice_corrections_api.py shows a tampered one is a 404), and Stripe's
# webhooks (the signature is; tests/functional/test_stripe_payments_api.py shows a bad one is a 400).
PUBLIC = (
    "/v1/health",
    "/v1/hosted_invoices/{link}",
    "/v1/hosted_invoices/{link}/pdf",
    "/v1/gateway/stripe/{tenant_id}",
)


def test_every_route_in_the_app_is_in_this_matrix():
    from app import app

    declared = {
        (method, re.sub(r"\{\w+\}", SOME_ID, path))
        for path, methods in app.routes.items()
        for method in methods
        if path not in PUBLIC and method != "OPTIONS"  # CORS preflights carry no token (chalicelib/cors.py)
    }
    assert declared == {(method, path) for method, path, _ in ROUTES}


FIGURE = (
    "token attacks: {attacks} requests ({kinds} kinds of bad token x {routes} routes):"
    " {refused} refused with 401, {server_errors} 5xx"
)


def _bad_tokens(cognito, tenant_id):
    now = int(time.time())
    genuine_user = cognito.token(tenant_id, "USER")
    claims = {
        "iss": cognito.issuer,
        "client_id": cognito.client_id,
        "token_use": "access",
        "scope": "billing/admin",
        "iat": now,
        "exp": now + 3600,
        "custom:tenant_id": tenant_id,
        "cognito:groups": ["ADMIN"],
    }
    return {
        "missing": None,
        "empty": "",
        "garbage": "not-a-token",
        "non-ascii": "tökén.\u2028.☃",
        "oversized": "a" * 8000 + "." + "b" * 8000 + "." + "c" * 8000,
        "truncated": cognito.forge(tenant_id)[:-20],
        "alg none": alg_none(claims),
        "HS256 with the public key": hs256_with_public_key(claims),
        "groups tampered USER -> ADMIN": tampered(genuine_user, **{"cognito:groups": ["ADMIN"]}),
        "tenant tampered": tampered(genuine_user, **{"custom:tenant_id": str(uuid.uuid4())}),
        "signature stripped": genuine_user.rsplit(".", 1)[0] + ".",
        "real ID token": cognito.token(tenant_id, "ADMIN", kind="IdToken"),
        "ID token forged": cognito.forge(tenant_id, token_use="id", aud=cognito.client_id, client_id=None),
        "expired": cognito.forge(tenant_id, exp=now - 3600, iat=now - 7200),
        "not yet valid": cognito.forge(tenant_id, nbf=now + 3600),
        "wrong issuer": cognito.forge(tenant_id, iss="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_evil"),
        "audience on an access token": cognito.forge(tenant_id, aud=cognito.client_id),
        "client of no tenant": cognito.forge(tenant_id, groups=(), client_id="unbound-client", sub="unbound-client"),
        "no client": cognito.forge(tenant_id, client_id=None),
        "unknown kid": cognito.forge(tenant_id, header={"alg": "RS256", "kid": "other"}),
        "no kid": cognito.forge(tenant_id, header={"alg": "RS256"}),
    }


@pytest.mark.parametrize("method,path,role", ROUTES)
def test_bad_tokens_are_401_on_every_route(api, tenant, cognito, method, path, role, figures):
    attacks = _bad_tokens(cognito, tenant.id)
    control = api.call(method, path, body=_valid_body(method, path), token=cognito.forge(tenant.id))
    # The forgery unaltered gets past authentication, so each attack below is refused for its one change.
    assert control.status != 401 and control.status < 500, control.body
    for label, token in attacks.items():
        reply = api.call(method, path, body=_valid_body(method, path), token=token)
        figures.add(
            "tokens",
            FIGURE,
            attacks=1,
            refused=reply.status == 401,
            server_errors=reply.status >= 500,
        )
        assert reply.status == 401, (label, reply.body)
        assert reply.body["error"]["type"] == "authentication_error", label
        assert set(reply.body) == {"error"}, label
    figures.add("tokens", FIGURE, routes=1)
    figures.set("tokens", FIGURE, kinds=len(attacks))


@pytest.mark.parametrize("method,path,role", [r for r in ROUTES if r[2] == "ADMIN"])
def test_user_role_is_403_on_admin_routes(api, tenant, method, path, role):
    reply = api.call(method, path, body={}, token=tenant.user)

    assert reply.status == 403
    assert reply.body["error"]["type"] == "permission_error"


@pytest.mark.parametrize("method,path,role", ROUTES)
def test_suspended_tenant_is_403_on_every_route(api, make_tenant, cognito, method, path, role):
    suspended = make_tenant("Suspended")
    token = cognito.token(suspended, "ADMIN")  # issued before the suspension (Cognito issues no more after)
    with transaction(tenant_id=suspended) as tx:
        tx.run("UPDATE tenants SET status = 'suspended'")

    reply = api.call(method, path, body=_valid_body(method, path), token=token)

    assert reply.status == 403, reply.body
    assert "suspended" in reply.body["error"]["message"]


def test_token_without_a_role_is_403(api, tenant, cognito):
    assert api.get("/v1/plans", token=cognito.token(tenant.id)).status == 403


def test_token_for_an_unprovisioned_tenant_is_403(api, cognito):
    with pytest.raises(identity.TokenRefused):  # Cognito's trigger issues none
        cognito.token(str(uuid.uuid4()), "ADMIN")
    assert api.get("/v1/plans", token=cognito.forge(str(uuid.uuid4()))).status == 403


# --- machine clients ----------------------------------------------------------------------


@pytest.fixture
def machines(api, tenant, other_tenant, cognito):
    """Access tokens of ``tenant``'s machine clients: every scope, one scope, a foreign scope; a client
    of ``other_tenant`` claiming ``tenant``; and a client deleted after its token was issued."""

    def client(owner, scopes):
        made = api.post("/v1/api_clients", {"name": "m", "scopes": scopes}, owner.admin).body
        return made, cognito.machine_token(made["client_id"], made["client_secret"])

    every_made, every = client(tenant, ["billing/read", "billing/write", "billing/usage.write", "billing/admin"])
    _, read = client(tenant, ["billing/read"])
    foreign_made, _ = client(other_tenant, ["billing/admin"])
    deleted_made, deleted = client(tenant, ["billing/admin"])
    assert api.call("DELETE", f"/v1/api_clients/{deleted_made['id']}", token=tenant.admin).status == 200
    machine = {"groups": (), "client_id": every_made["client_id"], "sub": every_made["client_id"]}
    return {
        "every": every,
        "read": read,
        "foreign scope": cognito.forge(tenant.id, **machine, scope="other/admin"),
        "another tenant's client": cognito.forge(
            tenant.id, groups=(), client_id=foreign_made["client_id"], sub=foreign_made["client_id"]
        ),
        "deleted": deleted,
    }


@pytest.mark.parametrize("method,path,role", ROUTES)
def test_machine_tokens_get_only_what_their_client_and_scopes_allow_on_every_route(
    api, tenant, machines, method, path, role
):
    body = _valid_body(method, path)
    people_only = (method, path) in PEOPLE_ONLY
    reply = api.call(method, path, body=body, token=machines["every"])
    if people_only:
        assert (reply.status, reply.body["error"]["code"]) == (403, "people_only"), reply.body
    else:
        assert reply.status not in (401, 403) and reply.status < 500, reply.body
    read_only = api.call(method, path, body=body, token=machines["read"])
    if people_only:
        assert read_only.status == 403
    elif method == "GET" and role == "USER":
        assert read_only.status not in (401, 403) and read_only.status < 500, read_only.body
    else:
        assert (read_only.status, read_only.body["error"]["code"]) == (403, "insufficient_scope"), read_only.body
    foreign = api.call(method, path, body=body, token=machines["foreign scope"])
    assert foreign.status == 403, foreign.body
    for label in ("another tenant's client", "deleted"):
        refused = api.call(method, path, body=body, token=machines[label])
        assert refused.status == 401 and refused.body["error"]["type"] == "authentication_error", (label, refused.body)


def test_token_with_no_tenant_claim_is_403(api, cognito):
    assert api.get("/v1/plans", token=cognito.forge(None)).status == 403


def test_health_needs_no_token(api):
    assert api.get("/v1/health").status == 200


def _valid_body(method, path):
    if method not in ("POST", "PUT"):
        return None
    return {
        "/v1/tenants": {"name": "N", "email": "n@x.test", "plan": "growth"},
        "/v1/plans": {"code": "p", "name": "P", "interval": "month", "amount": 1, "currency": "USD"},
        "/v1/accounts": {"email": "a@x.test", "name": "A", "currency": "USD"},
        "/v1/subscriptions": {"account_id": SOME_ID, "plan": "p"},
        "/v1/invoices": {"account_id": SOME_ID},
        "/v1/invoice_items": {"account_id": SOME_ID, "currency": "USD", "description": "d", "amount": 1},
        "/v1/credit_notes": {"invoice": SOME_ID, "reason": "duplicate"},
        "/v1/invoice_settings": {"grace_hours": 1},
        "/v1/gateway": {"provider": "stripe", "secret_key": "sk_test_12345678", "webhook_secret": "whsec_12345678"},
        "/v1/events": {
            "event_id": "e",
            "account_id": SOME_ID,
            "metric": "m",
            "quantity": 1,
            "timestamp": "2026-01-01T00:00:00Z",
        },
        "/v1/webhook_endpoints": {"url": "https://hooks.example.com/a", "enabled_events": ["*"]},
        "/v1/api_clients": {"name": "n", "scopes": ["billing/read"]},
        f"/v1/webhook_endpoints/{SOME_ID}": {"description": "x"},
        f"/v1/accounts/{SOME_ID}": {"default_tax_rates": []},
        f"/v1/accounts/{SOME_ID}/discounts": {"coupon": SOME_ID},
        f"/v1/subscriptions/{SOME_ID}/discounts": {"coupon": SOME_ID},
        "/v1/tax_rates": {"display_name": "VAT", "percentage": "19", "inclusive": True},
        f"/v1/tax_rates/{SOME_ID}": {"active": False},
        "/v1/coupons": {"percent_off": "10", "duration": "forever"},
        f"/v1/coupons/{SOME_ID}": {"active": False},
    }.get(path, {})
