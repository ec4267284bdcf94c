"""CORS over real HTTP: chalice local as `make run` serves it (devtools.stack), with the "local" stage's
CORS_ALLOWED_ORIGINS from .chalice/config.json (localhost and 127.0.0.1, any port)."""

import pytest

from devtools.stack import Stack
from tests.conftest import copy_of_template, drop_database

SPA = "http://localhost:5173"  # a single-page app's dev server


@pytest.fixture(scope="module")
def stack(admin_url, template_url, tmp_path_factory):
    name, url = copy_of_template(admin_url)
    try:
        with Stack(url, tmp_path_factory.mktemp("stack")) as running:
            yield running
    finally:
        drop_database(admin_url, name)


def _preflight(stack, path, origin, method="POST"):
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
    }
    return stack.session.options(f"{stack.url}{path}", headers=headers, timeout=30)


def test_chalice_local_answers_a_local_spas_preflight_without_a_token_and_its_requests_with_its_origin(stack):
    preflight = _preflight(stack, "/v1/accounts", SPA)
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == SPA
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
    assert "Idempotency-Key" in preflight.headers["Access-Control-Allow-Headers"]
    assert preflight.headers["Vary"] == "Origin"

    status, _body, headers = stack.call("GET", "/v1/plans", stack.operator.user, headers={"Origin": SPA})
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == SPA

    status, body, headers = stack.call("GET", "/v1/plans", None, headers={"Origin": SPA})
    assert status == 401 and body["error"]["type"] == "authentication_error"
    assert headers["Access-Control-Allow-Origin"] == SPA
    assert "WWW-Authenticate" in headers["Access-Control-Expose-Headers"]


def test_chalice_local_refuses_a_preflight_from_an_origin_the_stage_does_not_name(stack):
    refused = _preflight(stack, "/v1/accounts", "https://evil.example.net")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "cors_origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in refused.headers

    status, _body, headers = stack.call("GET", "/v1/plans", None, headers={"Origin": "https://evil.example.net"})
    assert status == 401
    assert "Access-Control-Allow-Origin" not in headers
