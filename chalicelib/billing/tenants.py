"""Tenants: the SaaS teams on the platform. The scope a request runs in is ``db.scope``'s."""

import uuid
from dataclasses import dataclass

from chalicelib import audit, errors
from chalicelib.db.queries import load

Q = load("tenants")


@dataclass(frozen=True)
class NewTenant:
    name: str
    email: str
    plan: str


def create(tx, actor, command: NewTenant) -> dict:
    """Provision a new tenant: an ADMIN of the platform operator's tenant only.

    ADMIN is a role inside a tenant; letting every customer's admin mint tenants
    would be a privilege escalation, so the caller's tenant must carry
    ``settings.platform_operator = true``. The caller's scope is restored afterwards.
    """
    if not tx.scalar(Q["is_operator"]):
        raise errors.Forbidden("only the platform operator's admins may provision tenants")
    new_id = str(uuid.uuid4())
    tx.run(Q["switch"], tenant_id=new_id)
    tenant = tx.one(Q["create"], id=new_id, name=command.name, email=command.email, plan=command.plan)
    tx.run(Q["switch"], tenant_id=actor.tenant_id)
    audit.record(tx, actor, "tenant.created", "tenant", new_id, {"name": command.name})
    return tenant


def invoice_settings(tx) -> dict:
    """How the tenant's invoices are numbered (``{prefix}-000001``) and how long renewals stay drafts."""
    return tx.one(Q["invoice_settings"])


def update_invoice_settings(tx, actor, changes: dict) -> dict:
    """A new prefix starts its own gapless series at 000001; a new grace applies to later bills."""
    tx.run(Q["update_invoice_settings"], prefix=changes.get("prefix"), grace_hours=changes.get("grace_hours"))
    audit.record(tx, actor, "invoice_settings.updated", "tenant", actor.tenant_id, changes)
    return invoice_settings(tx)


def seller(tx) -> dict:
    """Who the tenant's invoices are from."""
    return tx.one(Q["seller"])


def hosted_link_key(tx) -> str:
    """The key the tenant's hosted invoice links are signed with (``hosted``); never returned by the API."""
    return tx.scalar(Q["hosted_link_key"])


def exists(tx) -> bool:
    """Whether the transaction's tenant exists (suspended or not)."""
    return bool(tx.scalar(Q["exists"]))
