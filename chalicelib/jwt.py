"""RS256 JSON Web Token verification against a JWKS, in the standard library only.

Cognito signs with RS256 (RSASSA-PKCS1-v1_5 over SHA-256). Verification encodes the
expected padded digest and compares it in constant time with the signature raised
to the public exponent, which is the encode-and-compare check RFC 8017 (8.2.2)
prescribes: there is no ASN.1 parsing of attacker-controlled bytes to get wrong.
Keeping this here instead of shipping a crypto wheel keeps cold start and the
package small. Only ``alg: RS256`` with a ``kid`` found in the key set passes.
"""

import base64
import hashlib
import hmac
import json
import time
import urllib.parse

# DER prefix of DigestInfo for SHA-256 (RFC 8017, section 9.2, note 1).
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
_JWKS_TTL_S = 3600
_JWKS_MIN_REFRESH_S = 60


class InvalidToken(Exception):
    """The token is malformed, unsigned, signed by an unknown key, or its claims do not hold."""


def b64url_decode(segment: str) -> bytes:
    if not isinstance(segment, str) or not segment or len(segment) > 16384:
        raise InvalidToken("malformed token segment")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (ValueError, TypeError) as exc:
        raise InvalidToken("malformed token segment") from exc


def _json_segment(segment: str) -> dict:
    try:
        value = json.loads(b64url_decode(segment))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidToken("malformed token segment") from exc
    if not isinstance(value, dict):
        raise InvalidToken("malformed token segment")
    return value


def rsa_pkcs1v15_sha256_verify(n: int, e: int, message: bytes, signature: bytes) -> bool:
    k = (n.bit_length() + 7) // 8
    if len(signature) != k or k < 256:  # 2048-bit keys at least
        return False
    s = int.from_bytes(signature, "big")
    if s >= n:
        return False
    recovered = pow(s, e, n).to_bytes(k, "big")
    digest_info = _SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    expected = b"\x00\x01" + b"\xff" * (k - len(digest_info) - 3) + b"\x00" + digest_info
    return hmac.compare_digest(recovered, expected)


class KeySet:
    """A JWKS fetched on first use and cached; an unknown ``kid`` triggers one rate-limited refresh."""

    def __init__(self, url: str, fetch=None):
        self.url = url
        self._fetch = fetch or _fetch_json
        self._keys: dict[str, tuple[int, int]] = {}
        self._fetched_at: float | None = None

    def key(self, kid: str) -> tuple[int, int]:
        now = time.monotonic()
        if self._fetched_at is None:
            self._load()
        elif now - self._fetched_at > _JWKS_TTL_S or (
            kid not in self._keys and now - self._fetched_at > _JWKS_MIN_REFRESH_S
        ):
            try:
                self._load()
            except OSError:
                if not self._keys:
                    raise
                self._fetched_at = now  # keep serving the keys we have; try again later
        if kid not in self._keys:
            raise InvalidToken("unknown signing key")
        return self._keys[kid]

    def _load(self) -> None:
        try:
            document = self._fetch(self.url)
        except (ValueError, KeyError) as exc:
            raise OSError(f"signing keys at {self.url} are unreadable") from exc
        keys = {}
        for jwk in document.get("keys", []):
            if jwk.get("kty") == "RSA" and jwk.get("kid") and jwk.get("alg", "RS256") == "RS256":
                n = int.from_bytes(b64url_decode(jwk["n"]), "big")
                e = int.from_bytes(b64url_decode(jwk["e"]), "big")
                keys[jwk["kid"]] = (n, e)
        self._keys = keys
        self._fetched_at = time.monotonic()


def _fetch_json(url: str) -> dict:
    parts = urllib.parse.urlsplit(url)
    local_http = parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost") and not parts.username
    if not (parts.scheme in ("https", "file") or local_http):
        raise OSError("refusing to fetch signing keys over plain http from a remote host")
    from urllib.request import urlopen  # ~9 ms of imports (http.client, email) that only a key fetch needs

    with urlopen(url, timeout=3) as response:  # noqa: S310 - scheme checked above
        return json.loads(response.read())


def verify(token: str, keys: KeySet, *, issuer: str, leeway: int, now=None) -> dict:
    """An access token's claims, once signature, expiry, issuer and token_use hold (``auth`` checks its client)."""
    if not isinstance(token, str) or token.count(".") != 2 or len(token) > 16384:
        raise InvalidToken("malformed token")
    header_segment, payload_segment, signature_segment = token.split(".")
    header = _json_segment(header_segment)
    if header.get("alg") != "RS256":
        raise InvalidToken("unsupported signing algorithm")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("token has no key id")
    n, e = keys.key(kid)
    signed = f"{header_segment}.{payload_segment}".encode("ascii", "replace")
    if not rsa_pkcs1v15_sha256_verify(n, e, signed, b64url_decode(signature_segment)):
        raise InvalidToken("bad signature")
    claims = _json_segment(payload_segment)
    _check_claims(claims, issuer=issuer, leeway=leeway, now=time.time() if now is None else now)
    return claims


def _check_claims(claims: dict, *, issuer: str, leeway: int, now: float) -> None:
    exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
    if not isinstance(exp, int | float) or isinstance(exp, bool) or exp + leeway < now:
        raise InvalidToken("token expired")
    if nbf is not None and (not isinstance(nbf, int | float) or nbf - leeway > now):
        raise InvalidToken("token not yet valid")
    if iat is not None and (not isinstance(iat, int | float) or iat - leeway > now):
        raise InvalidToken("token issued in the future")
    if claims.get("iss") != issuer:
        raise InvalidToken("wrong issuer")
    # API Gateway's authorizer, with OAuth scopes on every method, takes access tokens only;
    # an ID token (which has an audience instead of a client_id) is refused here as there.
    if claims.get("token_use") != "access":
        raise InvalidToken("not an access token")
    if not isinstance(claims.get("client_id"), str) or "aud" in claims:
        raise InvalidToken("not an access token")
