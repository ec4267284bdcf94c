"""The functions' login, billing_runtime (migration 0012), is not the schema owner: through the app's
path it is billing_app under row-level security, and a RESET ROLE leaves it with nothing at all.

It logs in here with a password the test gives it and takes back (the test server trusts its unix
socket anyway); deployed, it logs in with an IAM token and has no password.
"""

import base64
import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from chalicelib.config import reset_settings
from chalicelib.db import errors, reset_connection, transaction
from chalicelib.db.connection import open_connection
from tests.billing import TENANT_TABLES


def _as_login(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


@pytest.fixture
def runtime_login(database_url, owner_conn):
    """The app's settings point at this test's database, logged in as billing_runtime."""
    password = uuid.uuid4().hex
    owner_conn.run(f"ALTER ROLE billing_runtime PASSWORD '{password}'")
    os.environ["DATABASE_URL"] = _as_login(database_url, "billing_runtime", password)
    reset_settings()
    reset_connection()
    yield
    reset_connection()
    os.environ["DATABASE_URL"] = database_url
    reset_settings()
    owner_conn.run("ALTER ROLE billing_runtime PASSWORD NULL")


def _refused(conn, sql: str) -> errors.DatabaseError:
    """The error ``sql`` fails with on ``conn`` (outside any transaction, so each statement stands alone)."""
    try:
        conn.run(sql)
    except Exception as exc:  # noqa: BLE001 - the driver's error, translated and returned
        return errors.translate(exc)
    raise AssertionError(f"{sql!r} was allowed")


@pytest.fixture
def reset_session(runtime_login):
    """A connection opened the app's way (SET ROLE billing_app), then RESET ROLE: the login alone."""
    conn = open_connection()
    assert conn.run("SELECT session_user::text, current_user::text") == [["billing_runtime", "billing_app"]]
    conn.run("RESET ROLE")
    assert conn.run("SELECT current_user::text") == [["billing_runtime"]]
    yield conn
    conn.close()


def test_the_runtime_login_works_through_the_apps_path_as_billing_app_under_rls(runtime_login, make_tenant):
    a, b = make_tenant("A"), make_tenant("B")

    with transaction(tenant_id=a) as tx:
        assert tx.one("SELECT session_user::text AS login, current_user::text AS role") == {
            "login": "billing_runtime",
            "role": "billing_app",
        }
        assert [str(row[0]) for row in tx.run("SELECT id FROM tenants")] == [a]
    with transaction() as tx:
        assert tx.scalar("SELECT count(*) FROM tenants") == 0  # no tenant set: nothing
        assert tx.scalar("SELECT count(*) FROM tenants WHERE id = :b", b=b) == 0


def test_after_reset_role_the_runtime_login_reads_no_table_and_cannot_turn_rls_off(reset_session, make_tenant):
    make_tenant("A")
    tables = [row[0] for row in reset_session.run("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")]
    assert set(TENANT_TABLES) | {"schema_migrations", "platform_plans"} <= set(tables)

    for table in tables:
        assert isinstance(_refused(reset_session, f"SELECT 1 FROM {table} LIMIT 1"), errors.InsufficientPrivilege)
    reset_session.run("SET row_security = off")
    assert isinstance(_refused(reset_session, "SELECT count(*) FROM tenants"), errors.InsufficientPrivilege)
    assert isinstance(
        _refused(reset_session, "INSERT INTO tenants (name, email) VALUES ('X', 'x@x.test')"),
        errors.InsufficientPrivilege,
    )

    privileged = reset_session.run(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm', 'S', 'p')"
        " AND has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')"
    )
    definers = reset_session.run(
        "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'public' AND p.prosecdef AND has_function_privilege(p.oid, 'EXECUTE')"
    )
    login = reset_session.run(
        "SELECT rolsuper, rolbypassrls, rolinherit, rolcreaterole, rolcreatedb FROM pg_roles"
        " WHERE rolname = current_user"
    )
    assert (privileged, definers, login) == ([], [], [[False, False, False, False, False]])


def test_the_runtime_login_cannot_become_the_owner_or_billing_system(reset_session):
    owner = reset_session.run("SELECT tableowner::text FROM pg_tables WHERE tablename = 'tenants'")[0][0]
    assert owner != "billing_runtime"

    for statement in (
        "SET ROLE billing_system",
        f'SET ROLE "{owner}"',
        f'SET SESSION AUTHORIZATION "{owner}"',
    ):
        assert isinstance(_refused(reset_session, statement), errors.InsufficientPrivilege), statement
    assert reset_session.run("SELECT current_user::text") == [["billing_runtime"]]


def test_after_reset_role_the_runtime_login_may_still_become_billing_app_and_nothing_more(reset_session):
    reset_session.run("SET ROLE billing_app")
    assert reset_session.run("SELECT current_user::text") == [["billing_app"]]
    assert reset_session.run("SELECT count(*) FROM tenants") == [[0]]  # no tenant set: RLS shows nothing
    assert isinstance(_refused(reset_session, "SET ROLE billing_system"), errors.InsufficientPrivilege)


def test_the_proxy_login_is_given_its_secrets_password_only_as_a_scram_verifier_and_works_as_billing_app(
    database_url, owner_conn
):
    from chalicelib.db import logins, migrate

    password = uuid.uuid4().hex + uuid.uuid4().hex  # as the proxy's secret holds it: 40+ characters
    assert migrate.set_proxy_password({"username": "billing_proxy", "password": password}) == "billing_proxy"
    try:
        stored = owner_conn.run("SELECT rolpassword FROM pg_authid WHERE rolname = 'billing_proxy'")[0][0]
        assert stored.startswith("SCRAM-SHA-256$4096:") and password not in stored  # never in clear, so never logged
        os.environ["DATABASE_URL"] = _as_login(database_url, "billing_proxy", password)
        reset_settings()
        # The app's way, SET ROLE included (this server trusts its socket, so the password itself is proven by
        # the verifier test below, against PostgreSQL's own).
        conn = open_connection()
        try:
            assert conn.run("SELECT session_user::text, current_user::text") == [["billing_proxy", "billing_app"]]
        finally:
            conn.close()
    finally:
        os.environ["DATABASE_URL"] = database_url
        reset_settings()
        owner_conn.run("ALTER ROLE billing_proxy PASSWORD NULL")
    with pytest.raises(ValueError, match="only billing_proxy"):
        logins.set_password(None, {"username": "billing_owner", "password": password})
    with pytest.raises(ValueError, match="shorter than 32"):
        logins.set_password(None, {"username": "billing_proxy", "password": "short"})


def test_the_scram_verifier_is_the_one_postgresql_itself_stores_for_that_password_and_salt(owner_conn):
    """The test server trusts its socket, so a login cannot prove the verifier: PostgreSQL's own can."""
    from chalicelib.db import logins

    password = uuid.uuid4().hex
    owner_conn.run("SET password_encryption = 'scram-sha-256'")
    owner_conn.run(f"ALTER ROLE billing_proxy PASSWORD '{password}'")  # the server hashes it, with its own salt
    try:
        stored = owner_conn.run("SELECT rolpassword FROM pg_authid WHERE rolname = 'billing_proxy'")[0][0]
    finally:
        owner_conn.run("ALTER ROLE billing_proxy PASSWORD NULL")
    iterations, salt = stored.split("$")[1].split(":")
    assert logins.scram_verifier(password, base64.b64decode(salt), int(iterations)) == stored
