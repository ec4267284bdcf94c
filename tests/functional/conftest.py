import json
from dataclasses import dataclass

import pytest
from chalice.test import Client

from app import app


@dataclass
class Reply:
    status: int
    body: dict
    headers: dict


class Api:
    """chalice.test.Client with JSON in and out and a bearer token."""

    def __init__(self, client):
        self._client = client

    def call(self, method, path, body=None, token=None, headers=None, raw: bytes | None = None) -> Reply:
        sent = {"Content-Type": "application/json"}
        if token:
            sent["Authorization"] = f"Bearer {token}"
        sent.update(headers or {})
        payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        response = self._client.http.request(method, path, headers=sent, body=payload)
        text = response.body.decode() if response.body else ""
        return Reply(response.status_code, json.loads(text) if text else {}, dict(response.headers))

    def get(self, path, token=None, **kw) -> Reply:
        return self.call("GET", path, token=token, **kw)

    def post(self, path, body=None, token=None, **kw) -> Reply:
        return self.call("POST", path, body=body, token=token, **kw)


@dataclass
class Tenant:
    id: str
    admin: str
    user: str


@pytest.fixture
def api(database_url, cognito):
    with Client(app) as client:
        yield Api(client)


@pytest.fixture
def tenant(make_tenant, cognito) -> Tenant:
    tenant_id = make_tenant("Acme")
    return Tenant(tenant_id, cognito.token(tenant_id, "ADMIN"), cognito.token(tenant_id, "USER"))


@pytest.fixture
def other_tenant(make_tenant, cognito) -> Tenant:
    tenant_id = make_tenant("Globex")
    return Tenant(tenant_id, cognito.token(tenant_id, "ADMIN"), cognito.token(tenant_id, "USER"))


@pytest.fixture
def catalog(api, tenant):
    """A monthly and a yearly price for "pro", and a EUR "basic"."""
    for plan in (
        {"code": "pro", "name": "Pro", "interval": "month", "amount": 4900, "currency": "USD"},
        {"code": "pro", "name": "Pro yearly", "interval": "year", "amount": 49000, "currency": "USD"},
        {"code": "basic", "name": "Basic", "interval": "month", "amount": 900, "currency": "EUR"},
    ):
        reply = api.post("/v1/plans", plan, tenant.admin)
        assert reply.status == 201, reply.body
    return tenant


@pytest.fixture
def account(api, catalog) -> dict:
    reply = api.post(
        "/v1/accounts", {"email": "ada@customer.test", "name": "Ada", "plan": "pro", "currency": "USD"}, catalog.user
    )
    assert reply.status == 201, reply.body
    return reply.body
