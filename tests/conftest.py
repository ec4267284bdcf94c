"""Test harness: a real PostgreSQL (embedded unless DATABASE_URL is set) and no real AWS.

The schema is migrated once into a template database; every test gets its own
copy (CREATE DATABASE ... TEMPLATE), so no test sees another's rows.
"""

import json
import os
import signal
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

# Before anything imports boto3: nothing in a test may reach real AWS or the
# instance-metadata endpoint.
os.environ.update(
    AWS_EC2_METADATA_DISABLED="true",
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
)
os.environ.setdefault("STAGE", "test")

from chalicelib.config import reset_settings  # noqa: E402
from chalicelib.db import migrate, reset_connection, transaction  # noqa: E402
from devtools import postgres  # noqa: E402
from devtools.local_aws import quiet_sdk_logs  # noqa: E402
from devtools.stack import Tenant  # noqa: E402

TEMPLATE_DB = "billing_test_template"

# boto3/botocore INFO (each client's endpoint and credentials) stays out of captured logs, even
# where a test lowers the root level before anything imported app.py.
quiet_sdk_logs()


def _terminated(_signum, _frame):
    raise KeyboardInterrupt


def pytest_configure(config):
    # A terminated run (CI cancelled, `timeout make test`) ends like Ctrl-C: fixtures torn down, and
    # the embedded PostgreSQL this run started stopped at exit (devtools.postgres) rather than left running.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminated)


class Figures:
    """What the hardening tests measured, summed per part and printed as one line each at the end of the run."""

    def __init__(self):
        self.parts: dict[str, tuple[str, Counter]] = {}

    def add(self, part: str, template: str, **counts: int) -> None:
        self.parts.setdefault(part, (template, Counter()))[1].update(counts)

    def set(self, part: str, template: str, **values: int) -> None:
        """Figures that are the same in every test of a part (how many kinds), rather than summed."""
        counts = self.parts.setdefault(part, (template, Counter()))[1]
        for name, value in values.items():
            counts[name] = value

    def lines(self) -> list[str]:
        return [template.format_map(counts) for template, counts in self.parts.values()]


FIGURES = Figures()


@pytest.fixture
def figures() -> Figures:
    return FIGURES


def pytest_terminal_summary(terminalreporter):
    if FIGURES.parts:
        terminalreporter.section("hardening figures")
        for line in FIGURES.lines():
            terminalreporter.write_line(line)


EVENTS_DIR = Path(__file__).parent / "events"


@pytest.fixture(scope="session")
def admin_url():
    """Admin URL of the test server (the superuser of the embedded one)."""
    if os.environ.get("DATABASE_URL"):
        os.environ["TEST_DATABASE_IS_EXTERNAL"] = "1"
    return postgres.ensure_server(postgres.LOCAL_DIR / "pg-test")


@pytest.fixture(scope="session")
def template_url(admin_url):
    conn = postgres.admin_connection(admin_url)
    try:
        conn.run(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
        conn.run(f"CREATE DATABASE {TEMPLATE_DB}")
    finally:
        conn.close()
    url = postgres.with_database(admin_url, TEMPLATE_DB)
    _use_database(url)
    migrate.migrate(log=lambda _msg: None)
    reset_connection()
    return url


def copy_of_template(admin_url: str) -> tuple[str, str]:
    """(name, URL) of a new database copied from the migrated template."""
    name = f"billing_test_{uuid.uuid4().hex[:12]}"
    conn = postgres.admin_connection(admin_url)
    try:
        conn.run(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB} STRATEGY FILE_COPY")
    finally:
        conn.close()
    return name, postgres.with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    conn = postgres.admin_connection(admin_url)
    try:
        conn.run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        conn.close()


@pytest.fixture
def database_url(admin_url, template_url):
    """A fresh, migrated database for this test; the app's settings point at it."""
    name, url = copy_of_template(admin_url)
    previous = os.environ.get("DATABASE_URL")
    _use_database(url)
    yield url
    reset_connection()
    if previous is None:
        os.environ.pop("DATABASE_URL", None)
    else:
        os.environ["DATABASE_URL"] = previous
    reset_settings()
    drop_database(admin_url, name)


def _use_database(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    reset_settings()
    reset_connection()


@pytest.fixture
def owner_conn(database_url):
    """A connection as the schema owner (no app role): for setting up and for proving triggers."""
    conn = postgres.admin_connection(database_url)
    yield conn
    conn.close()


@pytest.fixture
def round_trips(monkeypatch):
    """The count of round trips on every connection opened from now on (this thread's is opened anew):
    counted, never timed (devtools.round_trips)."""
    from chalicelib.db import connection
    from devtools.round_trips import counted_opener

    counter = [0]
    reset_connection()
    monkeypatch.setattr(connection, "open_connection", counted_opener(connection.open_connection, counter))
    yield counter
    reset_connection()


@pytest.fixture
def make_tenant(database_url):
    def make(name: str = "Acme", status: str = "active", operator: bool = False) -> str:
        tenant_id = str(uuid.uuid4())
        with transaction(tenant_id=tenant_id) as tx:
            tx.run(
                "INSERT INTO tenants (id, name, email, status, settings)"
                " VALUES (:id, :name, 'ops@example.test', :status, CAST(:settings AS jsonb))",
                id=tenant_id,
                name=name,
                status=status,
                settings='{"platform_operator": true}' if operator else "{}",
            )
        return tenant_id

    return make


@pytest.fixture
def aws(monkeypatch):
    """moto's AWS, in process, fresh for this test."""
    from moto import mock_aws

    with mock_aws():
        yield


@pytest.fixture
def cognito(aws, tmp_path, monkeypatch):
    from devtools.cognito import LocalPool

    pool = LocalPool(tmp_path / "cognito")
    for name, value in pool.env().items():
        monkeypatch.setenv(name, value)
    reset_settings()
    yield pool
    reset_settings()


@pytest.fixture
def gateway():
    """A fresh mock payment gateway for this test (scripted per account)."""
    from chalicelib.billing import payments

    mock = payments.MockGateway()
    payments.set_gateway(mock)
    yield mock
    payments.set_gateway(None)


@pytest.fixture(scope="session")
def stripe_standin():
    """The local Stripe stand-in (devtools/stripe_standin.py) on 127.0.0.1, for the whole run."""
    from devtools.stripe_standin import StripeStandin

    standin = StripeStandin()
    standin.start()
    yield standin
    standin.stop()


@pytest.fixture
def stripe(stripe_standin, cognito, monkeypatch):
    """The app's Stripe SDK pointed at the stand-in, tenants' keys kept in moto's Secrets Manager,
    and no gateway installed over them: each tenant is charged by its own (Stripe, once connected)."""
    from chalicelib.billing import gateway_credentials, payments

    monkeypatch.setenv("GATEWAY_CREDENTIALS_STORE", "secretsmanager")
    monkeypatch.setenv("STRIPE_API_BASE", stripe_standin.url)
    monkeypatch.setenv("STRIPE_TIMEOUT_S", "0.5")
    reset_settings()
    gateway_credentials.forget()
    payments.set_gateway(None)
    stripe_standin.slow_seconds = 1.0
    stripe_standin.latency_seconds, stripe_standin.most_in_flight = 0.0, 0
    yield stripe_standin
    stripe_standin.latency_seconds = 0.0
    gateway_credentials.forget()
    reset_settings()


@pytest.fixture
def messaging(cognito, monkeypatch, request):
    """The events topic, consumer queues with DLQs, the rebill queue and SES, in moto; the app pointed at them.

    Parametrize it indirectly with a visibility timeout (seconds) to make redelivery quicker than 10 s.
    """
    from chalicelib import aws
    from devtools import local_aws

    aws.reset_clients()
    provisioned = local_aws.provision_messaging(visibility_timeout=getattr(request, "param", 10))
    for name, value in provisioned.env().items():
        monkeypatch.setenv(name, value)
    reset_settings()
    yield provisioned
    aws.reset_clients()


# --- the API through chalice's test client -------------------------------------------


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

    def fetch(self, path, token=None, accept: str = "*/*"):
        """A non-JSON answer (a PDF, a page): (status, headers, body bytes)."""
        sent = {"Accept": accept, **({"Authorization": f"Bearer {token}"} if token else {})}
        response = self._client.http.request("GET", path, headers=sent)
        return response.status_code, dict(response.headers), response.body

    def post(self, path, body=None, token=None, **kw) -> Reply:
        return self.call("POST", path, body=body, token=token, **kw)


@pytest.fixture
def api(database_url, cognito):
    from chalice.test import Client

    from app import app

    with Client(app, stage_name="local") as client:  # the stage `make run` serves, as tests are local
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
