"""How the app logs in to the database in each mode, without a database: DATABASE_URL's libpq sslmodes,
and the deployed modes (an IAM token, or the owner's secret) that verify the server or do not connect."""

import os
import ssl
from urllib.parse import parse_qs, urlsplit

import pytest

from chalicelib.config import get_settings, reset_settings
from chalicelib.db import connection, errors
from chalicelib.db.connection import PACKAGE_ROOT, connection_params
from devtools.certs import Authority

DB_ENV = (
    "DATABASE_URL",
    "DB_SECRET_ARN",
    "DB_IAM_AUTH",
    "DB_USER",
    "DB_HOST",
    "DB_PORT",
    "DB_NAME",
    "DB_SSL_ROOT_CERT",
    "DB_SSL_TRUST_SYSTEM",
)
HOST = "billing.cluster-abc123.us-east-1.rds.amazonaws.com"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return Authority.make("Test RDS CA").write(tmp_path_factory.mktemp("ca") / "rds-ca-bundle.pem")


@pytest.fixture
def params(monkeypatch):
    """connection_params for an environment of dummy AWS credentials (nothing may reach AWS) plus ``values``."""
    for name in DB_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "dummy-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "dummy-session")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_REGION", "us-east-1")

    def read(**values) -> dict:
        for name, value in values.items():
            monkeypatch.setenv(name, str(value))
        reset_settings()
        return connection_params(get_settings())

    yield read
    monkeypatch.undo()
    reset_settings()


def test_the_iam_mode_logs_in_as_billing_runtime_with_a_token_signed_for_its_host_port_and_user(params, ca):
    got = params(DB_IAM_AUTH="true", DB_HOST=HOST, DB_PORT="5432", DB_NAME="billing", DB_SSL_ROOT_CERT=ca)

    assert (got["user"], got["host"], got["port"], got["database"]) == ("billing_runtime", HOST, 5432, "billing")
    token = urlsplit("//" + got["password"])
    query = parse_qs(token.query)
    assert (token.hostname, token.port) == (HOST, 5432)
    assert query["Action"] == ["connect"] and query["DBUser"] == ["billing_runtime"]
    assert query["X-Amz-Credential"][0].endswith("/us-east-1/rds-db/aws4_request")  # a token for rds-db:connect
    assert "Action=connect" in got["password"] and "DBUser=billing_runtime" in got["password"]
    assert got["ssl_context"].verify_mode == ssl.CERT_REQUIRED and got["ssl_context"].check_hostname is True


def test_the_iam_mode_names_the_login_db_user_gives_and_signs_for_it(params, ca):
    got = params(DB_IAM_AUTH="true", DB_USER="billing_other", DB_HOST=HOST, DB_PORT="6432", DB_SSL_ROOT_CERT=ca)

    assert got["user"] == "billing_other" and got["port"] == 6432
    assert "DBUser=billing_other" in got["password"] and got["password"].startswith(f"{HOST}:6432/?")


def test_behind_an_rds_proxy_the_system_roots_are_trusted_beside_the_rds_bundle_and_not_otherwise(params, ca):
    alone = params(DB_IAM_AUTH="true", DB_HOST=HOST, DB_SSL_ROOT_CERT=ca)["ssl_context"]
    proxied = params(DB_IAM_AUTH="true", DB_HOST=HOST, DB_SSL_ROOT_CERT=ca, DB_SSL_TRUST_SYSTEM="true")["ssl_context"]
    assert len(alone.get_ca_certs()) == 1  # the bundle only: Aurora's chain
    assert len(proxied.get_ca_certs()) > 1 and proxied.check_hostname  # and the system's (ACM, Amazon's roots)
    assert proxied.verify_mode == ssl.CERT_REQUIRED


def test_a_deployed_mode_without_db_ssl_root_cert_is_refused_rather_than_left_unverified(params):
    with pytest.raises(errors.DatabaseUnavailable, match="DB_SSL_ROOT_CERT is unset"):
        params(DB_IAM_AUTH="true", DB_HOST=HOST)
    # The secret is never read: the refusal comes first (no AWS is reachable here anyway).
    with pytest.raises(errors.DatabaseUnavailable, match="DB_SSL_ROOT_CERT is unset"):
        params(
            DB_IAM_AUTH="false", DB_SECRET_ARN=f"arn:aws:secretsmanager:us-east-1:{'1' * 12}:secret:db", DB_HOST=HOST
        )


def test_the_iam_mode_without_db_host_is_refused(params, ca):
    with pytest.raises(errors.DatabaseUnavailable, match="needs DB_HOST"):
        params(DB_IAM_AUTH="true", DB_SSL_ROOT_CERT=ca)


def test_a_relative_db_ssl_root_cert_is_found_in_the_package_beside_app_py(params, ca, tmp_path, monkeypatch):
    assert (PACKAGE_ROOT / "app.py").is_file()
    monkeypatch.chdir(tmp_path)  # not the working directory's
    relative = os.path.relpath(ca, PACKAGE_ROOT)

    got = params(DB_IAM_AUTH="true", DB_HOST=HOST, DB_SSL_ROOT_CERT=relative)
    assert got["ssl_context"].verify_mode == ssl.CERT_REQUIRED

    with pytest.raises(errors.DatabaseUnavailable, match=f"no CA bundle at {PACKAGE_ROOT}/certs/rds-ca-bundle.pem"):
        params(DB_SSL_ROOT_CERT="certs/rds-ca-bundle.pem")


def test_a_file_that_is_no_ca_bundle_is_refused_clearly(params, tmp_path):
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("not a certificate\n")
    with pytest.raises(errors.DatabaseUnavailable, match="cannot load the CA bundle"):
        params(DB_IAM_AUTH="true", DB_HOST=HOST, DB_SSL_ROOT_CERT=bundle)


def test_every_connection_signs_a_fresh_token_and_reuses_one_tls_context_per_ca_file_and_mode(params, ca, monkeypatch):
    signed = []
    sign = connection._iam_token
    monkeypatch.setattr(connection, "_iam_token", lambda *args: signed.append(args) or sign(*args))

    first = params(DB_IAM_AUTH="true", DB_HOST=HOST, DB_SSL_ROOT_CERT=ca)
    second = params()
    assert len(signed) == 2  # valid 15 minutes, used once: to log in
    assert parse_qs(urlsplit("//" + second["password"]).query)["X-Amz-Expires"] == ["900"]
    assert second["ssl_context"] is first["ssl_context"]

    by_url = params(DATABASE_URL=f"postgresql://u@{HOST}/billing?sslmode=verify-full&sslrootcert={ca}")
    assert by_url["ssl_context"] is first["ssl_context"]
    verify_ca = params(DATABASE_URL=f"postgresql://u@{HOST}/billing?sslmode=verify-ca&sslrootcert={ca}")
    assert verify_ca["ssl_context"] is not first["ssl_context"]


def test_database_url_keeps_libpqs_sslmodes(params, ca):
    def context(query: str):
        return params(DATABASE_URL=f"postgresql://u:p@{HOST}:5432/billing?{query}").get("ssl_context", "pg8000's")

    require = context("sslmode=require")
    assert (require.verify_mode, require.check_hostname) == (ssl.CERT_NONE, False)
    verify_ca = context(f"sslmode=verify-ca&sslrootcert={ca}")
    assert (verify_ca.verify_mode, verify_ca.check_hostname) == (ssl.CERT_REQUIRED, False)
    verify_full = context(f"sslmode=verify-full&sslrootcert={ca}")
    assert (verify_full.verify_mode, verify_full.check_hostname) == (ssl.CERT_REQUIRED, True)
    system = context("sslmode=verify-full&sslrootcert=system")
    assert (system.verify_mode, system.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert context("sslmode=disable") is False
    assert context("sslmode=prefer") == context("") == "pg8000's"  # TLS if offered, as libpq's default

    with pytest.raises(errors.DatabaseUnavailable, match="sslmode=verify_full is not one of"):
        context("sslmode=verify_full")
    with pytest.raises(errors.DatabaseUnavailable, match="cannot load the CA bundle"):
        context("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")


def test_database_url_wins_over_the_deployed_modes(params, ca):
    got = params(DATABASE_URL="postgresql://app@/billing?host=/tmp/sockets", DB_IAM_AUTH="true", DB_HOST=HOST)
    assert got["user"] == "app" and got["unix_sock"] == "/tmp/sockets/.s.PGSQL.5432" and "password" not in got
