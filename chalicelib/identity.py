"""What Cognito writes into tokens: the pre-token-generation trigger.

``pre_token_generation`` is Cognito's pre-token-generation trigger, event version 3
(the version that also reaches access tokens of the client-credentials grant). Cognito calls it
before every token it issues: a person signing in or refreshing (``TokenGeneration_*``), and a
machine client (``TokenGeneration_ClientCredentials``). It reads the tenant in one indexed
lookup (``auth.subject``: by ``custom:tenant_id`` for a person, by the client's binding for a
machine) and adds ``custom:tenant_id``, ``plan_tier``, ``tenant_status`` and ``features`` (one
space-separated string, as ``scope`` is) to the access token (and the ID token of a person);
a person's access token also gets the scopes of their group (``SCOPES_OF_GROUP``). It refuses
(raises, and Cognito issues nothing) for an unknown, suspended or deleted tenant, an unbound or
deleted client, and a person without a tenant.

These claims are for clients (a single-page app shows the plan's features); the app trusts
them only from a verified token and never for anything money-related: the database stays the
authority (a suspended tenant's token that is still valid is refused by ``db.scope`` anyway).
"""

import uuid

from chalicelib import auth

CLIENT_CREDENTIALS = "TokenGeneration_ClientCredentials"
SCOPES_OF_GROUP = {
    auth.ADMIN_GROUP: (auth.SCOPE_READ, auth.SCOPE_WRITE, auth.SCOPE_USAGE, auth.SCOPE_ADMIN),
    auth.USER_GROUP: (auth.SCOPE_READ, auth.SCOPE_WRITE, auth.SCOPE_USAGE),
}


class TokenRefused(Exception):
    """Cognito must not issue this token (the trigger's error fails the sign-in or the token request)."""


def pre_token_generation(event: dict, lookup=auth.subject) -> dict:
    """The V3 event with ``response.claimsAndScopeOverrideDetails`` filled in; raises TokenRefused.
    ``lookup(tenant_id, client_id)`` reads the tenant (another database's, for a local stack's tokens)."""
    request = event.get("request") or {}
    machine = event.get("triggerSource") == CLIENT_CREDENTIALS
    if machine:
        client_id = (event.get("callerContext") or {}).get("clientId")
        subject = lookup(None, client_id) if isinstance(client_id, str) and client_id else None
        if subject is None:
            raise TokenRefused("this client is not bound to a tenant")
    else:
        subject = lookup(_uuid((request.get("userAttributes") or {}).get("custom:tenant_id")), None)
        if subject is None:
            raise TokenRefused("this user's tenant is not provisioned")
    if subject["status"] != "active":
        raise TokenRefused(f"this tenant is {subject['status']}")
    claims = {
        "custom:tenant_id": str(subject["tenant_id"]),
        "plan_tier": subject["plan_tier"],
        "tenant_status": subject["status"],
        "features": " ".join(_feature_names(subject["features"])),
    }
    access = {"claimsToAddOrOverride": claims}
    details = {"accessTokenGeneration": access}
    if not machine:
        groups = (request.get("groupConfiguration") or {}).get("groupsToOverride") or []
        granted = {scope for group in groups for scope in SCOPES_OF_GROUP.get(group, ())}
        access["scopesToAdd"] = sorted(granted - set(request.get("scopes") or ()))
        details["idTokenGeneration"] = {"claimsToAddOrOverride": claims}
    event["response"] = {"claimsAndScopeOverrideDetails": details}
    return event


def _uuid(value) -> str | None:
    try:
        return str(uuid.UUID(str(value))) if value else None
    except ValueError:
        return None


def _feature_names(features) -> list[str]:
    """A plan's features as names: a list of names, or an object whose true-valued keys are the names."""
    if isinstance(features, dict):
        return sorted(str(k) for k, v in features.items() if v)
    if isinstance(features, list):
        return [str(f) for f in features if isinstance(f, str)]
    return []
