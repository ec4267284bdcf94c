"""Who is calling: a verified Cognito ID token -> Principal(tenant_id, user_id, groups).

The tenant comes only from the token's ``custom:tenant_id`` claim. Where API
Gateway's Cognito authorizer ran (deployed, VERIFY_JWT off), its verified claims
are read from the request context; everywhere else (chalice local, tests, and dev
as defence in depth) the app verifies the token itself. With neither, the request
is refused: a missing authorizer fails closed.
"""

import re
import uuid
from dataclasses import dataclass

from chalicelib import errors, jwt
from chalicelib.config import get_settings

ADMIN = "ADMIN"
USER = "USER"
_key_sets: dict[str, jwt.KeySet] = {}


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    user_id: str
    groups: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.groups

    def require(self, group: str) -> None:
        if group == USER and (self.groups & {ADMIN, USER}):
            return
        if group not in self.groups:
            raise errors.Forbidden(f"this action needs the {group} role")


def authenticate(headers, request_context: dict | None) -> Principal:
    settings = get_settings()
    if settings.verify_jwt:
        claims = _verified_claims(_bearer_token(headers), settings)
    else:
        claims = ((request_context or {}).get("authorizer") or {}).get("claims")
        if not claims:
            raise errors.Unauthenticated("no verified identity on this request")
    return principal_from_claims(claims)


def principal_from_claims(claims: dict) -> Principal:
    tenant = claims.get("custom:tenant_id")
    try:
        tenant_id = str(uuid.UUID(str(tenant)))
    except ValueError as exc:
        raise errors.Forbidden("the token carries no valid tenant") from exc
    groups = _groups(claims.get("cognito:groups"))
    if not groups & {ADMIN, USER}:
        raise errors.Forbidden("the token carries no role (ADMIN or USER)")
    return Principal(tenant_id=tenant_id, user_id=str(claims.get("sub", "")), groups=groups)


def _groups(raw) -> frozenset[str]:
    # Verified tokens carry a list; API Gateway flattens it to "[A B]" or "A,B".
    if isinstance(raw, list):
        return frozenset(g for g in raw if isinstance(g, str))
    if isinstance(raw, str):
        return frozenset(g for g in re.split(r"[\s,\[\]]+", raw) if g)
    return frozenset()


def _bearer_token(headers) -> str:
    value = (headers or {}).get("authorization") or ""
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        value = token.strip()
    if not value:
        raise errors.Unauthenticated("missing bearer token")
    return value


def _verified_claims(token: str, settings) -> dict:
    if not settings.cognito_issuer or not settings.cognito_client_ids:
        raise errors.Unauthenticated("token verification is not configured")
    keys = _key_sets.get(settings.jwks_url)
    if keys is None:
        keys = _key_sets[settings.jwks_url] = jwt.KeySet(settings.jwks_url)
    try:
        return jwt.verify(
            token,
            keys,
            issuer=settings.cognito_issuer,
            audiences=settings.cognito_client_ids,
            leeway=settings.jwt_leeway_s,
        )
    except jwt.InvalidToken as exc:
        raise errors.Unauthenticated(f"invalid token: {exc}") from exc
    except OSError as exc:
        raise errors.ServiceUnavailable("signing keys are unreachable, retry shortly") from exc
