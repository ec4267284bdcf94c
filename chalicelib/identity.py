"""What Cognito writes into tokens: the pre-token-generation trigger.

``pre_token_generation`` is Cognito's pre-token-generation trigger, event version 3
(the version that also reaches access tokens of the client-credentials grant). Cognito calls it
before every token it issues: a person signing in or refreshing (``TokenGeneration_*``), and a
machine client (``TokenGeneration_ClientCredentials``). It reads the tenant in one indexed
lookup (``auth.subject``: by ``custom:tenant_id`` for a person, by the client's binding for a
machine) and adds ``custom:tenant_id``, ``plan_tier``, ``tenant_status`` and ``features`` (one
space-separated string, as ``scope`` is) to the access token (and the ID token of a person);
a person's access token gets the scopes of their groups (``SCOPES_OF_GROUP``) and loses any
other of ours they asked for. It refuses (raises, and Cognito issues nothing) for an unknown,
suspended or deleted tenant, an unbound or deleted client, a person without a tenant, and a
person signing in through a machine client. ``answer`` is the deployed entry point.

These claims are for clients (a single-page app shows the plan's features); the app trusts
them only from a verified token and never for anything money-related: the database stays the
authority (a suspended tenant's token that is still valid is refused by ``db.scope`` anyway).
"""

import logging
import uuid

from chalicelib import auth

log = logging.getLogger("billing.identity")
CLIENT_CREDENTIALS = "TokenGeneration_ClientCredentials"
SCOPES_OF_GROUP = {
    auth.ADMIN_GROUP: (auth.SCOPE_READ, auth.SCOPE_WRITE, auth.SCOPE_USAGE, auth.SCOPE_ADMIN),
    auth.USER_GROUP: (auth.SCOPE_READ, auth.SCOPE_WRITE, auth.SCOPE_USAGE),
}


class TokenRefused(Exception):
    """Cognito must not issue this token (the trigger's error fails the sign-in or the token request)."""


def answer(event: dict) -> dict:
    """The deployed trigger: ``pre_token_generation``, whose unexpected failures (the database away, say)
    are logged here and refused in general terms, as Cognito shows a trigger's error to the caller."""
    try:
        return pre_token_generation(event)
    except TokenRefused:
        raise
    except Exception as exc:
        log.exception("the pre-token trigger failed")
        raise TokenRefused("tokens cannot be issued right now, retry shortly") from exc


def pre_token_generation(event: dict, lookup=None) -> dict:
    """The V3 event with ``response.claimsAndScopeOverrideDetails`` filled in; raises TokenRefused.
    ``lookup(tenant_id, client_id)`` reads the tenant: ``auth.subject``, or another database's (a local
    stack's tokens)."""
    lookup = lookup or auth.subject
    machine = event.get("triggerSource") == CLIENT_CREDENTIALS
    subject = _subject(event, machine, lookup)
    if subject["status"] != "active":
        raise TokenRefused(f"this tenant is {subject['status']}")
    claims = {
        "custom:tenant_id": str(subject["tenant_id"]),
        "plan_tier": subject["plan_tier"],
        "tenant_status": subject["status"],
        "features": " ".join(_feature_names(subject["features"])),
    }
    details = {"accessTokenGeneration": {"claimsToAddOrOverride": claims}}
    if not machine:
        details["accessTokenGeneration"].update(_person_scopes(event.get("request") or {}))
        details["idTokenGeneration"] = {"claimsToAddOrOverride": claims}
    event["response"] = {"claimsAndScopeOverrideDetails": details}
    return event


def _subject(event: dict, machine: bool, lookup) -> dict:
    """The tenant the token is for: a machine's by its client's binding, a person's by their attribute
    (and never a person signing in through a machine client)."""
    client_id = (event.get("callerContext") or {}).get("clientId")
    client_id = client_id if isinstance(client_id, str) and client_id else None
    if machine:
        subject = lookup(None, client_id) if client_id else None
        if subject is None:
            raise TokenRefused("this client is not bound to a tenant")
        return subject
    attributes = (event.get("request") or {}).get("userAttributes") or {}
    subject = lookup(_uuid(attributes.get("custom:tenant_id")), None)
    if subject is None:
        raise TokenRefused("this user's tenant is not provisioned")
    if client_id and lookup(None, client_id) is not None:
        raise TokenRefused("people do not sign in through a machine client")
    return subject


def _person_scopes(request: dict) -> dict:
    """The scopes of the person's groups added, and any other of ours they asked for suppressed (the app
    client lets anyone ask for any scope in the code flow)."""
    groups = (request.get("groupConfiguration") or {}).get("groupsToOverride") or []
    granted = {scope for group in groups for scope in SCOPES_OF_GROUP.get(group, ())}
    asked = set(request.get("scopes") or ())
    return {
        "scopesToAdd": sorted(granted - asked),
        "scopesToSuppress": sorted(scope for scope in asked - granted if scope in auth.SCOPES),
    }


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
