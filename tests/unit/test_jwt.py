"""Token verification in isolation: the RS256 check and every claim rule."""

import base64
import time

import pytest

from chalicelib import jwt
from devtools import cognito
from devtools.cognito import moto_jwks

ISSUER = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_test"
CLIENT = "client-1"


def _sign(claims: dict, header: dict | None = None) -> str:
    from joserfc import jwk
    from joserfc import jwt as jose

    key = jwk.RSAKey.import_key(moto_jwks(private=True))
    return jose.encode(header or {"alg": "RS256", "kid": "dummy"}, claims, key)


def _claims(**overrides) -> dict:
    now = int(time.time())
    claims = {"iss": ISSUER, "client_id": CLIENT, "token_use": "access", "exp": now + 600, "iat": now, "sub": "u1"}
    claims.update(overrides)
    return claims


def _b64(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


@pytest.fixture
def keys():
    return jwt.KeySet("memory://", fetch=lambda _url: moto_jwks())


def _verify(token, keys):
    return jwt.verify(token, keys, issuer=ISSUER, leeway=30)


def test_a_genuine_token_verifies_and_yields_its_claims(keys):
    claims = _verify(_sign(_claims(**{"custom:tenant_id": "t1"})), keys)
    assert claims["custom:tenant_id"] == "t1"


def test_alg_none_is_rejected(keys):
    with pytest.raises(jwt.InvalidToken, match="algorithm"):
        _verify(cognito.alg_none(_claims()), keys)


def test_hs256_signed_with_the_public_key_is_rejected(keys):
    with pytest.raises(jwt.InvalidToken, match="algorithm"):
        _verify(cognito.hs256_with_public_key(_claims()), keys)


def test_a_tampered_payload_fails_the_signature(keys):
    genuine = _sign(_claims(**{"cognito:groups": ["USER"]}))
    with pytest.raises(jwt.InvalidToken, match="signature"):
        _verify(cognito.tampered(genuine, **{"cognito:groups": ["ADMIN"]}), keys)


@pytest.mark.parametrize(
    "overrides,reason",
    [
        # seconds from when the test runs (not from collection: a long suite outlives 600 s)
        ({"exp": -120}, "expired"),
        ({"nbf": 600}, "not yet valid"),
        ({"iat": 600}, "future"),
        ({"iss": ISSUER + "x"}, "issuer"),
        ({"token_use": "id"}, "not an access token"),
        ({"aud": CLIENT}, "not an access token"),
        ({"client_id": None}, "not an access token"),
        ({"exp": "tomorrow"}, "expired"),
    ],
)
def test_claims_that_do_not_hold_are_rejected(keys, overrides, reason):
    now = int(time.time())
    overrides = {k: now + v if k in ("exp", "nbf", "iat") and isinstance(v, int) else v for k, v in overrides.items()}
    with pytest.raises(jwt.InvalidToken, match=reason):
        _verify(_sign(_claims(**overrides)), keys)


def test_expiry_within_leeway_is_accepted(keys):
    assert _verify(_sign(_claims(exp=int(time.time()) - 10)), keys)["sub"] == "u1"


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "....", "x" * 20000, "%%%.%%%.%%%", "e30.e30.e30"])
def test_malformed_tokens_are_rejected_not_crashed(keys, token):
    with pytest.raises(jwt.InvalidToken):
        _verify(token, keys)


def test_unknown_kid_refreshes_the_key_set_at_most_once_a_minute():
    calls = []

    def fetch(_url):
        calls.append(1)
        return moto_jwks()

    keys = jwt.KeySet("memory://", fetch=fetch)
    token = _sign(_claims(), header={"alg": "RS256", "kid": "rotated"})
    for _ in range(3):
        with pytest.raises(jwt.InvalidToken, match="unknown signing key"):
            _verify(token, keys)
    assert len(calls) == 1


def test_keys_load_on_first_use_even_right_after_boot(monkeypatch):
    monkeypatch.setattr(jwt.time, "monotonic", lambda: 30.0)  # a sandbox 30 s after boot
    keys = jwt.KeySet("memory://", fetch=lambda _url: moto_jwks())
    assert _verify(_sign(_claims()), keys)["sub"] == "u1"


def test_a_failed_refresh_keeps_serving_the_cached_keys(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(jwt.time, "monotonic", lambda: clock[0])
    answers = [moto_jwks()]

    def fetch(_url):
        if not answers:
            raise OSError("keys endpoint down")
        return answers.pop()

    keys = jwt.KeySet("memory://", fetch=fetch)
    _verify(_sign(_claims()), keys)
    clock[0] += 7200
    assert _verify(_sign(_claims()), keys)["sub"] == "u1"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1.evil.com/jwks.json", "http://localhost@evil.com/jwks.json", "http://example.com/jwks"]
)
def test_signing_keys_are_never_fetched_over_remote_plain_http(url):
    with pytest.raises(OSError):
        jwt._fetch_json(url)
