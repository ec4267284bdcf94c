"""Test harness: a real PostgreSQL (embedded unless DATABASE_URL is set) and no real AWS.

The schema is migrated once into a template database; every test gets its own
copy (CREATE DATABASE ... TEMPLATE), so no test sees another's rows.
"""

import os
import uuid
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

TEMPLATE_DB = "billing_test_template"
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


@pytest.fixture
def database_url(admin_url, template_url):
    """A fresh, migrated database for this test; the app's settings point at it."""
    name = f"billing_test_{uuid.uuid4().hex[:12]}"
    conn = postgres.admin_connection(admin_url)
    try:
        conn.run(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB} STRATEGY FILE_COPY")
    finally:
        conn.close()
    url = postgres.with_database(admin_url, name)
    previous = os.environ.get("DATABASE_URL")
    _use_database(url)
    yield url
    reset_connection()
    if previous is None:
        os.environ.pop("DATABASE_URL", None)
    else:
        os.environ["DATABASE_URL"] = previous
    reset_settings()
    conn = postgres.admin_connection(admin_url)
    try:
        conn.run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        conn.close()


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


@pytest.fixture
def messaging(cognito, monkeypatch):
    """The events topic, consumer queues with DLQs, the rebill queue and SES, in moto; the app pointed at them."""
    from chalicelib import aws
    from devtools import local_aws

    aws.reset_clients()
    provisioned = local_aws.provision_messaging()
    for name, value in provisioned.env().items():
        monkeypatch.setenv(name, value)
    reset_settings()
    yield provisioned
    aws.reset_clients()
