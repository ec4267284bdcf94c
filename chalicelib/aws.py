"""boto3 clients, created on first use and cached for the life of the process; and the RDS login token.

Cold start pays for boto3 only in invocations that call AWS. AWS_ENDPOINT_URL
(honoured by boto3 itself) points every client at a local moto server.

The functions' database login (an RDS IAM token, a SigV4-presigned ``connect`` URL: no network
call) is signed here in the standard library from the credentials Lambda puts in the environment,
exactly as botocore's ``generate_db_auth_token`` signs it (tests/unit/test_rds_auth_token.py
compares them byte for byte): a connection need not import boto3 and botocore (~100 ms on a cold
start) to log in. Without credentials in the environment the caller falls back to botocore's
resolution (profiles, container and instance roles).
"""

import hashlib
import hmac
import os
import threading
from datetime import UTC, datetime
from urllib.parse import quote

from chalicelib import tracing

_clients: dict[str, object] = {}
_lock = threading.Lock()
RDS_TOKEN_EXPIRES_S = 900  # what botocore signs: the token logs in for 15 minutes


def client(service: str):
    found = _clients.get(service)
    if found is None:
        with _lock:
            found = _clients.get(service)
            if found is None:
                tracing.start()  # its calls are X-Ray subsegments when tracing is on
                import boto3

                found = _clients[service] = boto3.client(service)
    return found


def reset_clients() -> None:
    """Forget cached clients (tests switch between moto contexts)."""
    _clients.clear()


def environment_credentials() -> tuple[str, str, str | None] | None:
    """(access key, secret key, session token) as botocore's environment provider, first in its chain, reads
    them (AWS_SECURITY_TOKEN before AWS_SESSION_TOKEN); None unless both keys are set."""
    access_key, secret_key = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not (access_key and secret_key):
        return None
    token = os.environ.get("AWS_SECURITY_TOKEN") or os.environ.get("AWS_SESSION_TOKEN") or None
    return access_key, secret_key, token


def rds_auth_token_from_environment(host: str, port: int, user: str, region: str) -> str | None:
    """An RDS IAM token signed now with the environment's credentials; None without them, or for a host
    botocore would treat specially (an IPv6 literal): then botocore signs it."""
    credentials = environment_credentials()
    if credentials is None or ":" in host or "[" in host:
        return None
    return sign_rds_auth_token(host, port, user, region, credentials, datetime.now(UTC))


def _encode(value: str) -> str:
    return quote(value, safe="-_.~")


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def sign_rds_auth_token(
    host: str, port: int, user: str, region: str, credentials: tuple[str, str, str | None], now: datetime
) -> str:
    """SigV4 query signing of ``GET https://host:port/?Action=connect&DBUser=user`` for ``rds-db`` (AWS's
    "Create a signed URL" steps, in botocore's parameter order), without the scheme, as RDS takes it."""
    access_key, secret_key, token = credentials
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    scope = f"{stamp[:8]}/{region}/rds-db/aws4_request"
    params = [
        ("Action", "connect"),
        ("DBUser", user),
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", f"{access_key}/{scope}"),
        ("X-Amz-Date", stamp),
        ("X-Amz-Expires", str(RDS_TOKEN_EXPIRES_S)),
        ("X-Amz-SignedHeaders", "host"),
    ]
    if token is not None:
        params.append(("X-Amz-Security-Token", token))
    encoded = [(_encode(name), _encode(value)) for name, value in params]
    query = "&".join(f"{name}={value}" for name, value in encoded)
    signed_host = host.lower() if port == 443 else f"{host.lower()}:{port}"
    canonical = "\n".join(
        [
            "GET",
            "/",
            "&".join(f"{name}={value}" for name, value in sorted(encoded)),
            f"host:{signed_host}\n",
            "host",
            hashlib.sha256(b"").hexdigest(),  # the empty payload
        ]
    )
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = _hmac(f"AWS4{secret_key}".encode(), stamp[:8])
    for part in (region, "rds-db", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{host}:{port}/?{query}&X-Amz-Signature={signature}"
