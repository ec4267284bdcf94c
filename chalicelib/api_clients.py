"""Tenants' machine clients: Cognito app clients with the client-credentials grant, each bound to one tenant.

A tenant's backend (sending usage, say) signs in as a client, not as a person: it asks the
pool's ``/oauth2/token`` for an access token with ``grant_type=client_credentials`` and its id
and secret, and gets the scopes it was given here. Cognito holds the client and its secret;
the ``api_clients`` row is the binding to the tenant, which the pre-token trigger and the app
both read (``identity``, ``auth``).

- **Create**: the Cognito client and the binding in one transaction (a binding that cannot be
  written deletes the client again). The secret is shown once, in the answer to the create.
- **Delete**: the binding ends first, so the client's tokens are refused from then on (at once
  here, within ``auth.BINDING_CACHE_S`` in other warm containers) and the trigger refuses
  to issue new ones; then the Cognito client is deleted (a failure there is logged: the client
  can obtain nothing without its binding).
- At most the tenant's plan allows (``tenant_limits``, code ``api_clients_limit_reached``).
"""

import logging
import re
from dataclasses import dataclass

from chalicelib import audit, auth, aws, errors
from chalicelib.billing import tenant_limits
from chalicelib.config import get_settings
from chalicelib.db import paging
from chalicelib.db.queries import load

log = logging.getLogger("billing.api_clients")
Q = load("api_clients")
ACCESS_TOKEN_MINUTES = 60


@dataclass(frozen=True)
class NewClient:
    name: str
    scopes: tuple[str, ...]

    @classmethod
    def of(cls, body: dict) -> "NewClient":
        return cls(name=body["name"], scopes=tuple(dict.fromkeys(body["scopes"])))


def create(tx, actor, command: NewClient) -> dict:
    tenant_limits.enforce(tx, "api_clients", lambda _cap: tx.scalar(Q["count"]))
    cognito = _cognito()
    made = _call(
        cognito.create_user_pool_client,
        UserPoolId=_pool_id(),
        ClientName=_cognito_name(actor.tenant_id, command.name),
        GenerateSecret=True,
        AllowedOAuthFlowsUserPoolClient=True,
        AllowedOAuthFlows=["client_credentials"],
        AllowedOAuthScopes=list(command.scopes),
        AccessTokenValidity=ACCESS_TOKEN_MINUTES,
        TokenValidityUnits={"AccessToken": "minutes"},
        EnableTokenRevocation=True,
        PreventUserExistenceErrors="ENABLED",
    )["UserPoolClient"]
    try:
        api_client_id = tx.scalar(
            Q["create"],
            client_id=made["ClientId"],
            name=command.name,
            scopes="{" + ",".join(command.scopes) + "}",
            created_by=audit.actor_name(actor),
        )
        audit.record(tx, actor, "api_client.created", "api_client", api_client_id, {"scopes": list(command.scopes)})
    except BaseException:
        _delete_quietly(made["ClientId"])
        raise
    return {**get(tx, api_client_id), "client_secret": made["ClientSecret"]}


def get(tx, api_client_id: str) -> dict:
    found = tx.one(Q["list"], id=api_client_id, after=None, limit=1)
    if found is None:
        raise errors.NotFound("no such API client")
    return found


def list_page(tx, page: paging.PageRequest) -> dict:
    paging.check_cursor(tx, Q["exists"], page, "API client")
    rows = tx.all(Q["list"], id=None, after=page.starting_after, limit=page.limit + 1)
    return paging.page(rows, page, "/v1/api_clients")


def delete(tx, actor, api_client_id: str) -> dict:
    client_id = tx.scalar(Q["delete"], id=api_client_id)
    if client_id is None:
        raise errors.NotFound("no such API client")
    audit.record(tx, actor, "api_client.deleted", "api_client", api_client_id)
    auth.forget_client(client_id)
    return {"id": api_client_id, "object": "api_client", "deleted": True, "client_id": client_id}


def retire(client_id: str) -> None:
    """After the binding's end is committed: the Cognito client goes too."""
    _delete_quietly(client_id)


def _delete_quietly(client_id: str) -> None:
    try:
        _cognito().delete_user_pool_client(UserPoolId=_pool_id(), ClientId=client_id)
    except Exception:  # noqa: BLE001 - without its binding the client obtains nothing; log and go on
        log.warning("could not delete Cognito app client %s", client_id, exc_info=True)


def _cognito_name(tenant_id: str, name: str) -> str:
    # Cognito allows [\w\s+=,.@-]{1,128}; the name the tenant chose is kept as given in our row.
    return f"tenant-{tenant_id} " + re.sub(r"[^\w\s+=,.@-]", "-", name)[:80]


def _pool_id() -> str:
    pool = get_settings().cognito_user_pool_id
    if not pool:
        raise errors.ServiceUnavailable("machine clients are not configured on this stage")
    return pool


def _cognito():
    return aws.client("cognito-idp")


def _call(operation, **params) -> dict:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return operation(**params)
    except (ClientError, BotoCoreError) as exc:
        log.warning("Cognito refused %s: %s", operation.__name__, exc)
        raise errors.ServiceUnavailable(
            "the identity provider did not answer, retry shortly", code="identity_provider_unavailable"
        ) from exc
