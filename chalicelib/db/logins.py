"""Passwords of the login roles that have one: the RDS Proxy's ``billing_proxy`` (migrations/0012).

The proxy logs in to Aurora with the username and password in its Secrets Manager secret; the
operator who runs the migrations sets the role's password from that secret:

    DB_SECRET_ARN=... DB_HOST=... python -m chalicelib.db.migrate --proxy-secret <db_proxy_secret_arn>

The password goes to the server as a SCRAM-SHA-256 verifier computed here, never in clear: the
cluster logs DDL (``log_statement = ddl``), and ALTER ROLE is DDL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

# What a login with a password may be: billing_runtime logs in with IAM only, the owner is RDS's.
PASSWORD_LOGINS = ("billing_proxy",)
SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """PostgreSQL's stored form of a SCRAM-SHA-256 password (RFC 5802/7677), as ``\\password`` makes it."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    encode = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{encode(salt)}${encode(stored_key)}:{encode(server_key)}"


def set_password(conn, login: dict) -> str:
    """Give ``login`` (a secret's ``{"username", "password"}``) its password; returns the role's name."""
    role = login.get("username")
    if role not in PASSWORD_LOGINS:
        raise ValueError(f"the secret names {role!r}: only {', '.join(PASSWORD_LOGINS)} logs in with a password")
    password = login.get("password") or ""
    if len(password) < 32:
        raise ValueError("the secret's password is shorter than 32 characters")
    from pg8000.native import identifier, literal

    conn.run(f"ALTER ROLE {identifier(role)} PASSWORD {literal(scram_verifier(password))}")
    return role
