"""Who is calling: a verified Cognito access token -> Principal, and what each route lets in (Access).

Every API route takes **access tokens**, from people and machines alike: API Gateway's Cognito
authorizer accepts an ID token only on a method without OAuth scopes, and every method here
has the scopes of its ``Access``. So an ID token is refused everywhere.

- **A person** signs in through one of the pool's app clients for people (``COGNITO_CLIENT_IDS``).
  Their access token carries ``cognito:groups`` (ADMIN, USER) and, from the pre-token trigger
  (``identity``), ``custom:tenant_id`` and the scopes of their groups.
- **A machine** is a tenant's API client (``api_clients``) using the client-credentials grant. Its
  token carries the scopes it was given and, from the trigger, ``custom:tenant_id``; the app also
  checks that the client is still bound to that tenant (``client_tenant``: a deleted client's
  tokens are refused within ``BINDING_CACHE_S``). Machines have no groups.

The tenant comes only from the token's ``custom:tenant_id`` claim. Where API Gateway's authorizer
ran (deployed, VERIFY_JWT off), its verified claims are read from the request context; everywhere
else the app verifies the token itself. With neither, the request is refused.
"""

import re
import time
import uuid
from dataclasses import dataclass

from chalicelib import errors, jwt
from chalicelib.config import get_settings
from chalicelib.db import transaction
from chalicelib.db.queries import load

Q = load("auth")
# How long a warm container trusts a machine client's binding: a deleted client's tokens are refused
# within this window everywhere (at once in the container that deleted it: ``forget_client``).
BINDING_CACHE_S = 60
_bindings: dict[str, tuple[float, str | None]] = {}

ADMIN_GROUP = "ADMIN"
USER_GROUP = "USER"
RESOURCE_SERVER = "billing"  # the Cognito resource server whose scopes these are (infra/modules/cognito)
SCOPE_READ = f"{RESOURCE_SERVER}/read"
SCOPE_WRITE = f"{RESOURCE_SERVER}/write"
SCOPE_USAGE = f"{RESOURCE_SERVER}/usage.write"
SCOPE_ADMIN = f"{RESOURCE_SERVER}/admin"
SCOPES = (SCOPE_READ, SCOPE_WRITE, SCOPE_USAGE, SCOPE_ADMIN)
_key_sets: dict[str, jwt.KeySet] = {}


@dataclass(frozen=True)
class Access:
    """What a route lets in: a person in ``group`` (USER admits ADMIN too), a token carrying one of
    ``scopes`` (API Gateway checks the same list), and machine clients unless ``machines`` is False."""

    group: str
    scopes: tuple[str, ...]
    machines: bool = True


READ = Access(USER_GROUP, (SCOPE_READ, SCOPE_ADMIN))
WRITE = Access(USER_GROUP, (SCOPE_WRITE, SCOPE_ADMIN))
USAGE = Access(USER_GROUP, (SCOPE_USAGE, SCOPE_ADMIN))
ADMIN = Access(ADMIN_GROUP, (SCOPE_ADMIN,))
# Credentials and tenants: a leaked machine secret must not mint more machine secrets or rewire payments.
PEOPLE_ADMIN = Access(ADMIN_GROUP, (SCOPE_ADMIN,), machines=False)


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    user_id: str
    groups: frozenset[str]
    scopes: frozenset[str] = frozenset(SCOPES)
    client_id: str | None = None  # set for machine clients only

    @property
    def is_machine(self) -> bool:
        return self.client_id is not None

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.groups

    def require(self, access: Access) -> None:
        if self.is_machine:
            if not access.machines:
                raise errors.Forbidden("this action is for people signed in, not API clients", code="people_only")
        elif not (access.group == USER_GROUP and self.groups & {ADMIN_GROUP, USER_GROUP}) and (
            access.group not in self.groups
        ):
            raise errors.Forbidden(f"this action needs the {access.group} role")
        if not self.scopes & set(access.scopes):
            raise errors.Forbidden(
                f"this action needs a token with one of the scopes {', '.join(access.scopes)}",
                code="insufficient_scope",
            )


def authenticate(headers, request_context: dict | None) -> Principal:
    settings = get_settings()
    if settings.verify_jwt:
        claims = _verified_claims(_bearer_token(headers), settings)
    else:
        claims = ((request_context or {}).get("authorizer") or {}).get("claims")
        if not claims:
            raise errors.Unauthenticated("no verified identity on this request")
    return principal_from_claims(claims, settings.cognito_client_ids)


def principal_from_claims(claims: dict, people_clients: tuple[str, ...]) -> Principal:
    """The caller a verified access token describes; refused unless its kind, tenant and client agree."""
    if claims.get("token_use") != "access":
        raise errors.Unauthenticated("an access token is required (ID tokens are not accepted)")
    client_id = claims.get("client_id")
    if not isinstance(client_id, str) or not client_id:
        raise errors.Unauthenticated("the token names no client")
    tenant_id = _tenant(claims.get("custom:tenant_id"))
    scopes = frozenset(str(claims.get("scope") or "").split())
    if client_id in people_clients:
        groups = _groups(claims.get("cognito:groups"))
        if not groups & {ADMIN_GROUP, USER_GROUP}:
            raise errors.Forbidden("the token carries no role (ADMIN or USER)")
        return Principal(tenant_id, str(claims.get("sub", "")), groups, scopes)
    if client_tenant(client_id) != tenant_id:
        raise errors.Unauthenticated("this API client is unknown, deleted or bound to another tenant")
    return Principal(tenant_id, client_id, frozenset(), scopes, client_id)


def subject(tenant_id: str | None, client_id: str | None) -> dict | None:
    """Who a token is about, before any tenant scope: the tenant (id, status, plan_tier, features) of a
    person's ``tenant_id`` or of the tenant a live ``client_id`` is bound to; None for neither."""
    if tenant_id is None and client_id is None:
        return None
    with transaction() as tx:
        return tx.one(Q["token_subject"], tenant=tenant_id, client=client_id)


def client_tenant(client_id: str) -> str | None:
    """The tenant a live machine client is bound to (None: unknown or deleted), cached ``BINDING_CACHE_S``."""
    now = time.monotonic()
    cached = _bindings.get(client_id)
    if cached is not None and now - cached[0] < BINDING_CACHE_S:
        return cached[1]
    found = subject(None, client_id)
    tenant = str(found["tenant_id"]) if found is not None else None
    if len(_bindings) > 10_000:
        _bindings.clear()
    _bindings[client_id] = (now, tenant)
    return tenant


def forget_client(client_id: str) -> None:
    """This container stops trusting the client at once (the others within ``BINDING_CACHE_S``)."""
    _bindings.pop(client_id, None)


def _tenant(raw) -> str:
    try:
        return str(uuid.UUID(str(raw)))
    except ValueError as exc:
        raise errors.Forbidden("the token carries no valid tenant") from exc


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
        return jwt.verify(token, keys, issuer=settings.cognito_issuer, leeway=settings.jwt_leeway_s)
    except jwt.InvalidToken as exc:
        raise errors.Unauthenticated(f"invalid token: {exc}") from exc
    except OSError as exc:
        raise errors.ServiceUnavailable("signing keys are unreachable, retry shortly") from exc
