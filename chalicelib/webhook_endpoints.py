"""Tenants' webhook endpoints: where their events go, which types, and the secret that signs them.

An endpoint's signing secret (``whsec_`` + 24 random bytes, base64: the Standard Webhooks
format) is shown once, when it is made or rotated; after a rotation the previous one keeps
signing next to it for 24 hours. Secrets live in the database under row-level security,
as a webhook sender must be able to sign with them; they are never listed or logged.
A tenant has at most what its platform plan allows (``tenant_limits``). An endpoint is also a
delivery *lane*: one worker at a time delivers to it (``claim_lane``), so a slow or failing
endpoint holds only itself.
"""

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from chalicelib import errors, outbox, webhook_http
from chalicelib.billing import tenant_limits
from chalicelib.config import get_settings
from chalicelib.db import paging
from chalicelib.db.queries import load

Q = load("webhook_endpoints")


@dataclass(frozen=True)
class EndpointFields:
    url: str | None = None
    enabled_events: tuple[str, ...] | None = None
    description: str | None = None
    set_description: bool = False
    enabled: bool | None = None

    @classmethod
    def of(cls, body: dict) -> "EndpointFields":
        events = body.get("enabled_events")
        return cls(
            url=body.get("url"),
            enabled_events=tuple(events) if events is not None else None,
            description=body.get("description"),
            set_description="description" in body,
            enabled=body.get("enabled"),
        )


@dataclass(frozen=True)
class Lane:
    """An endpoint claimed for delivery: where to send, and the secrets that sign now."""

    id: str
    url: str
    secrets: tuple[str, ...]
    token: str


def create(tx, fields: EndpointFields) -> dict:
    _check_url(fields.url)
    tenant_limits.enforce(tx, "webhook_endpoints", lambda _cap: tx.scalar(Q["count"]))
    secret = new_secret()
    endpoint_id = tx.scalar(
        Q["create"],
        url=fields.url,
        event_types=_array(fields.enabled_events),
        description=fields.description,
        secret=secret,
    )
    return {**get(tx, endpoint_id), "secret": secret}


def get(tx, endpoint_id: str) -> dict:
    endpoint = tx.one(Q["list"], id=endpoint_id, after=None, limit=1)
    if endpoint is None:
        raise errors.NotFound("no such webhook endpoint")
    return endpoint


def list_page(tx, page: paging.PageRequest) -> dict:
    paging.check_cursor(tx, Q["exists"], page, "webhook endpoint")
    rows = tx.all(Q["list"], id=None, after=page.starting_after, limit=page.limit + 1)
    return paging.page(rows, page, "/v1/webhook_endpoints")


def update(tx, endpoint_id: str, fields: EndpointFields) -> dict:
    if fields.url is not None:
        _check_url(fields.url)
    updated = tx.scalar(
        Q["update"],
        id=endpoint_id,
        url=fields.url,
        event_types=_array(fields.enabled_events) if fields.enabled_events is not None else None,
        description=fields.description,
        set_description=fields.set_description,
        enabled=fields.enabled,
    )
    if updated is None:
        raise errors.NotFound("no such webhook endpoint")
    return get(tx, endpoint_id)


def delete(tx, endpoint_id: str) -> dict:
    """The endpoint and its delivery history are gone; events keep their place in the event log."""
    if tx.scalar(Q["delete"], id=endpoint_id) is None:
        raise errors.NotFound("no such webhook endpoint")
    return {"id": endpoint_id, "object": "webhook_endpoint", "deleted": True}


def rotate(tx, endpoint_id: str, now: datetime) -> dict:
    secret = new_secret()
    if tx.scalar(Q["rotate"], id=endpoint_id, secret=secret, now=now) is None:
        raise errors.NotFound("no such webhook endpoint")
    return {**get(tx, endpoint_id), "secret": secret}


def without_secret(body: dict) -> dict:
    """What an Idempotency-Key keeps of a create's or a rotation's answer: never the secret."""
    return {**body, "secret": None}


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def claim_lane(tx, endpoint_id: str, lease_s: int, now: datetime) -> Lane | None:
    """The endpoint's lane for ``lease_s`` seconds; None when another worker holds it (or it is disabled)."""
    row = tx.one(Q["claim_lane"], id=endpoint_id, lease_s=lease_s)
    if row is None:
        return None
    signing = [row["secret"]]
    if row["previous_secret"] and row["previous_secret_expires_at"] and row["previous_secret_expires_at"] > now:
        signing.append(row["previous_secret"])
    return Lane(str(row["id"]), row["url"], tuple(signing), str(row["lease_token"]))


def renew_lane(tx, lane: Lane, lease_s: int) -> bool:
    """Hold the lane ``lease_s`` more seconds; False when it is no longer this worker's (its lease ran
    out and another took it, or the endpoint was disabled or deleted): stop sending then."""
    return tx.scalar(Q["renew_lane"], id=lane.id, token=lane.token, lease_s=lease_s) is not None


def release_lane(tx, lane: Lane) -> None:
    tx.run(Q["release_lane"], id=lane.id, token=lane.token)


def forget_failures(tx, endpoint_id: str) -> None:
    tx.run(Q["forget_failures"], id=endpoint_id)


def answered(tx, endpoint_id: str, ok: bool, now: datetime) -> datetime | None:
    """Record an endpoint's answer; when it has failed every request since, the first failure's time."""
    row = tx.one(Q["answered"], id=endpoint_id, ok=ok, now=now)
    return None if row is None or not row["enabled"] else row["failing_since"]


def disable(tx, endpoint_id: str, failing_since: datetime) -> bool:
    """A failing endpoint is disabled; its admins hear of it through ``webhook_endpoint.disabled``."""
    if tx.scalar(Q["disable"], id=endpoint_id, reason="failing for 3 days") is None:
        return False
    endpoint = get(tx, endpoint_id)
    fields = {"endpointId": endpoint_id, "url": endpoint["url"], "failingSince": failing_since.isoformat()}
    outbox.add(tx, "webhook_endpoint.disabled", fields, _status(endpoint))
    return True


def _status(endpoint: dict) -> dict:
    """What an event shows of an endpoint: its state, not its URL or description (the event log is
    open to USER tokens; a webhook URL is often a credential, and the endpoints are ADMIN's)."""
    return {k: endpoint[k] for k in ("id", "object", "enabled", "disabled_reason", "failing_since", "updated_at")}


def _check_url(url: str) -> None:
    local = get_settings().runs_locally
    try:
        webhook_http.check_url(url, local=local)
    except webhook_http.UrlNotAllowed as exc:
        _refuse(exc.code, str(exc))
    if not local and urlsplit(url).port not in (None, 443):  # deployed functions reach out on 443 only
        _refuse("url_port_not_allowed", "only the https port, 443, is allowed")


def _refuse(code: str, issue: str):
    details = [{"field": "url", "issue": issue}]
    raise errors.InvalidRequest("this URL cannot receive webhooks", code=code, details=details)


def _array(values) -> str:
    """A text[] literal for the driver (event types are [a-z_.*] only: the request schema's enum)."""
    return "{" + ",".join(values) + "}"
