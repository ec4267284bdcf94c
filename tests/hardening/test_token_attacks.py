"""Token attacks on every route: a missing, broken, forged, expired, confused or tampered
token is a 401; a genuine one with too little role, no tenant or a suspended tenant is a
403; never a 500, and never the data the route would have served."""

import re
import time
import uuid

import pytest

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
]
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
        if path not in PUBLIC
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
        "aud": cognito.client_id,
        "token_use": "id",
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
        "real access token": cognito.token(tenant_id, "ADMIN", kind="AccessToken"),
        "expired": cognito.forge(tenant_id, exp=now - 3600, iat=now - 7200),
        "not yet valid": cognito.forge(tenant_id, nbf=now + 3600),
        "wrong issuer": cognito.forge(tenant_id, iss="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_evil"),
        "wrong audience": cognito.forge(tenant_id, aud="someone-else"),
        "access token": cognito.forge(tenant_id, token_use="access"),
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
    suspended = make_tenant("Suspended", status="suspended")
    token = cognito.token(suspended, "ADMIN")

    reply = api.call(method, path, body=_valid_body(method, path), token=token)

    assert reply.status == 403, reply.body
    assert "suspended" in reply.body["error"]["message"]


def test_token_without_a_role_is_403(api, tenant, cognito):
    assert api.get("/v1/plans", token=cognito.token(tenant.id)).status == 403


def test_token_for_an_unprovisioned_tenant_is_403(api, cognito):
    assert api.get("/v1/plans", token=cognito.token(str(uuid.uuid4()), "ADMIN")).status == 403


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
        f"/v1/webhook_endpoints/{SOME_ID}": {"description": "x"},
    }.get(path, {})
