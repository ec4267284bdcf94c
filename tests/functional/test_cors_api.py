"""Browsers on other origins (the seed's single-page app): CORS per stage, answered by the app.

The stage here allows two exact origins, as a production stage would (chalicelib/cors.py).
"""

import pytest

from chalicelib.config import get_settings, reset_settings

APP = "https://app.example.com"
ADMIN_APP = "https://admin.example.com"
ELSEWHERE = "https://evil.example.net"


@pytest.fixture
def browsers(api, monkeypatch):
    """The stage's allowed origins, loaded into the settings now: the test client's stage environment
    (.chalice/config.json "local") does not replace settings the app has already read."""
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", f"{APP},{ADMIN_APP}")
    reset_settings()
    assert get_settings().cors_allowed_origins == (APP, ADMIN_APP)
    yield api
    reset_settings()


def _preflight(api, path, origin, method="POST", headers="authorization,content-type,idempotency-key"):
    sent = {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}
    return api.call("OPTIONS", path, headers=sent)


def test_a_preflight_from_an_allowed_origin_without_a_token_gets_the_paths_methods_and_the_apis_headers(browsers):
    reply = _preflight(browsers, "/v1/accounts", APP)

    assert reply.status == 204
    assert reply.headers["Access-Control-Allow-Origin"] == APP
    assert reply.headers["Vary"] == "Origin"
    assert reply.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
    allowed_headers = {h.strip().lower() for h in reply.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key"} <= allowed_headers
    assert reply.headers["Access-Control-Max-Age"] == "7200"
    assert "Access-Control-Allow-Credentials" not in reply.headers  # bearer tokens, never cookies


def test_a_preflight_on_a_path_with_an_id_names_that_paths_methods(browsers):
    reply = _preflight(browsers, "/v1/invoice_items/5b4e5c62-7d1c-4c0e-9f3a-0c5d0b1e2f3a", ADMIN_APP, "DELETE")

    assert reply.status == 204
    assert reply.headers["Access-Control-Allow-Origin"] == ADMIN_APP
    assert reply.headers["Access-Control-Allow-Methods"] == "DELETE, GET, OPTIONS"


def test_a_preflight_from_an_origin_not_allowed_is_a_403_without_any_allow_header(browsers):
    reply = _preflight(browsers, "/v1/accounts", ELSEWHERE)

    assert reply.status == 403
    assert reply.body["error"]["code"] == "cors_origin_not_allowed"
    assert ELSEWHERE not in str(reply.body)
    assert not [name for name in reply.headers if name.lower().startswith("access-control-")]
    assert reply.headers["Vary"] == "Origin"


def test_an_origin_that_only_starts_like_an_allowed_one_is_not_allowed(browsers):
    for origin in (f"{APP}.evil.example.net", "http://app.example.com", f"{APP}:8443", "null"):
        reply = _preflight(browsers, "/v1/plans", origin, "GET")
        assert reply.status == 403, origin
        assert "Access-Control-Allow-Origin" not in reply.headers, origin


def test_an_options_request_that_is_no_preflight_lists_the_methods(browsers):
    reply = browsers.call("OPTIONS", "/v1/plans")

    assert reply.status == 204
    assert reply.headers["Allow"] == "GET, POST, OPTIONS"
    assert "Access-Control-Allow-Origin" not in reply.headers


def test_an_authenticated_get_from_an_allowed_origin_echoes_that_origin_and_no_other(browsers, tenant):
    for origin in (APP, ADMIN_APP):
        reply = browsers.get("/v1/plans", tenant.user, headers={"Origin": origin})
        assert reply.status == 200
        assert reply.headers["Access-Control-Allow-Origin"] == origin
        assert reply.headers["Vary"] == "Origin"
        exposed = {h.strip() for h in reply.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"Retry-After", "Idempotent-Replayed", "WWW-Authenticate"} <= exposed


def test_a_401_from_an_allowed_origin_carries_the_origin_so_the_browser_can_read_the_error(browsers):
    reply = browsers.get("/v1/plans", headers={"Origin": APP})

    assert reply.status == 401
    assert reply.body["error"]["type"] == "authentication_error"
    assert reply.headers["Access-Control-Allow-Origin"] == APP
    assert "WWW-Authenticate" in reply.headers["Access-Control-Expose-Headers"]


def test_every_kind_of_error_from_an_allowed_origin_carries_the_origin(browsers, tenant, monkeypatch):
    from chalicelib.billing import plans

    def boom(*_args, **_kwargs):
        raise RuntimeError("an unexpected failure")

    forbidden = browsers.post("/v1/plans", {"code": "x"}, tenant.user, headers={"Origin": APP})  # USER, not ADMIN
    missing = browsers.get("/v1/accounts/5b4e5c62-7d1c-4c0e-9f3a-0c5d0b1e2f3a", tenant.user, headers={"Origin": APP})
    invalid = browsers.post("/v1/accounts", {"email": 1}, tenant.user, headers={"Origin": APP, "Idempotency-Key": "k"})
    not_allowed = browsers.call("PUT", "/v1/plans", {}, tenant.user, headers={"Origin": APP})  # chalice's own 405
    monkeypatch.setattr(plans, "list_page", boom)
    failed = browsers.get("/v1/plans", tenant.user, headers={"Origin": APP})

    statuses = [r.status for r in (forbidden, missing, invalid, not_allowed, failed)]
    assert statuses == [403, 404, 400, 405, 500]
    for reply in (forbidden, missing, invalid, not_allowed, failed):
        assert reply.body["error"]["request_id"]
        assert reply.headers["Access-Control-Allow-Origin"] == APP, reply.status
        assert reply.headers["Vary"] == "Origin"


def test_a_request_from_an_origin_not_allowed_is_answered_but_without_allow_origin(browsers, tenant):
    reply = browsers.get("/v1/plans", tenant.user, headers={"Origin": ELSEWHERE})

    assert reply.status == 200  # not a browser rule to enforce on the server: the browser withholds it
    assert "Access-Control-Allow-Origin" not in reply.headers
    assert "Access-Control-Expose-Headers" not in reply.headers
    assert reply.headers["Vary"] == "Origin"


def test_a_stage_that_names_no_origin_sends_no_cors_headers_at_all(api, tenant, monkeypatch):
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "")
    reset_settings()
    get_settings()
    try:
        preflight = _preflight(api, "/v1/plans", APP, "GET")
        reply = api.get("/v1/plans", tenant.user, headers={"Origin": APP})
    finally:
        reset_settings()

    assert preflight.status == 403
    assert reply.status == 200
    assert not [name for name in {**preflight.headers, **reply.headers} if name.lower().startswith("access-control-")]


def test_every_path_of_the_app_has_an_options_route_without_authorizer():
    """A route declared after ``cors.answer_preflights(app)`` in app.py would have none: this says so."""
    from app import app

    for path, methods in app.routes.items():
        assert "OPTIONS" in methods, f"{path}: declare it above cors.answer_preflights(app) in app.py"
        assert methods["OPTIONS"].authorizer is None, path
        assert methods["OPTIONS"].view_name == "cors_preflight", path
