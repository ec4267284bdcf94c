"""Tenants' machine clients: Cognito app clients with the client-credentials grant, each bound to one tenant.

A tenant's backend (sending usage, say) signs in as a client, not as a person: it asks the
pool's ``/oauth2/token`` for an access token with ``grant_type=client_credentials`` and its id
and secret, and gets the scopes it was given here. Cognito holds the client and its secret;
the ``api_clients`` row is the binding to the tenant, which the pre-token trigger and the app
both read (``identity``, ``auth``).

- **Create**: the Cognito client and the binding in one transaction; a client that does not end
  up bound (the transaction failed or was retried) is deleted again (``create_once``). The secret
  is shown once, in the answer to the create: an Idempotency-Key's replay answers without it.
  Machine clients have no sign-in flow for people.
- **Delete**: the binding ends first, so the client's tokens are refused from then on (at once
  here, within ``auth.BINDING_CACHE_S`` in other warm containers) and the trigger refuses
  to issue new ones; then the Cognito client is deleted (a failure there is logged: the client
  can obtain nothing without its binding).
- At most the tenant's plan allows (``tenant_limits``, code ``api_clients_limit_reached``).
"""

import logging
import re
from dataclasses import dataclass

from chalicelib import audit, auth, errors, user_pool
from chalicelib.billing import tenant_limits
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


def create_once(run, actor, command: NewClient):
    """``run(work)`` runs ``work(tx)`` in the request's transaction (retried by it, or replayed by an
    Idempotency-Key); every Cognito client made on the way that did not end up bound is deleted again,
    whatever failed (the binding, the key's completion, the commit). Returns what ``run`` returns."""
    made: list[str] = []
    try:
        outcome = run(lambda tx: create(tx, actor, command, made))
    except BaseException:
        for client_id in made:
            _delete_quietly(client_id)
        raise
    for client_id in made[:-1]:  # a transaction retried: only its last client is bound
        _delete_quietly(client_id)
    return outcome


def create(tx, actor, command: NewClient, made: list[str]) -> dict:
    """The Cognito client (its id appended to ``made`` at once) and its binding, in ``tx``."""
    tenant_limits.enforce(tx, "api_clients", lambda _cap: tx.scalar(Q["count"]))
    client = user_pool.call(
        "create_user_pool_client",
        ClientName=_cognito_name(actor.tenant_id, command.name),
        GenerateSecret=True,
        AllowedOAuthFlowsUserPoolClient=True,
        AllowedOAuthFlows=["client_credentials"],
        AllowedOAuthScopes=list(command.scopes),
        # No sign-in flow for people: a person holding this secret cannot sign in through it.
        ExplicitAuthFlows=["ALLOW_REFRESH_TOKEN_AUTH"],
        AccessTokenValidity=ACCESS_TOKEN_MINUTES,
        TokenValidityUnits={"AccessToken": "minutes"},
        EnableTokenRevocation=True,
        PreventUserExistenceErrors="ENABLED",
    )["UserPoolClient"]
    made.append(client["ClientId"])
    api_client_id = tx.scalar(
        Q["create"],
        client_id=client["ClientId"],
        name=command.name,
        scopes="{" + ",".join(command.scopes) + "}",
        created_by=audit.actor_name(actor),
    )
    audit.record(tx, actor, "api_client.created", "api_client", api_client_id, {"scopes": list(command.scopes)})
    return {**get(tx, api_client_id), "client_secret": client["ClientSecret"]}


def without_secret(body: dict) -> dict:
    """What an Idempotency-Key keeps of the answer: never the secret (a replay says it was shown once)."""
    return {**body, "client_secret": None}


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
        user_pool.call("delete_user_pool_client", expected=("ResourceNotFoundException",), ClientId=client_id)
    except Exception:  # noqa: BLE001 - without its binding the client obtains nothing; log and go on
        log.warning("could not delete Cognito app client %s", client_id, exc_info=True)


def _cognito_name(tenant_id: str, name: str) -> str:
    # Cognito allows [\w\s+=,.@-]{1,128} in ASCII; the name the tenant chose is kept as given in our row.
    return f"tenant-{tenant_id} " + re.sub(r"[^A-Za-z0-9 +=,.@_-]", "-", name)[:80]
