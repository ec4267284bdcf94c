"""Tenants: the SaaS teams on the platform. The scope a request runs in is ``db.scope``'s."""

import uuid
from dataclasses import dataclass

from chalicelib import audit, errors, outbox
from chalicelib.db.queries import load

Q = load("tenants")


@dataclass(frozen=True)
class NewTenant:
    name: str
    email: str
    plan: str
    admin_email: str | None = None

    @property
    def first_admin(self) -> str:
        return self.admin_email or self.email


def create(tx, actor, command: NewTenant) -> dict:
    """Provision a new tenant: an ADMIN of the platform operator's tenant only.

    ADMIN is a role inside a tenant; letting every customer's admin mint tenants
    would be a privilege escalation, so the caller's tenant must carry
    ``settings.platform_operator = true``: ``onboarding.provision``, the one caller, checks it
    first (``require_operator``). The caller's scope is restored afterwards.
    """
    new_id = str(uuid.uuid4())
    tx.run(Q["switch"], tenant_id=new_id)
    tenant = tx.one(Q["create"], id=new_id, name=command.name, email=command.email, plan=command.plan)
    tx.run(Q["switch"], tenant_id=actor.tenant_id)
    audit.record(tx, actor, "tenant.created", "tenant", new_id, {"name": command.name})
    # The operator's event (its webhooks hear of new tenants); its consumer invites the first admin.
    outbox.add(tx, "tenant.created", {"createdTenantId": new_id, "adminEmail": command.first_admin}, tenant)
    return {**tenant, "admin": {"email": command.first_admin, "status": "pending"}}


def operator_tenant(tx, name: str, email: str, vet) -> tuple[str, bool]:
    """The platform operator's tenant and whether this call made it: found if it exists, else made (one
    at a time: concurrent bootstraps wait on a lock) once ``vet()`` has not refused. Leaves the scope set
    to it when made; the caller's transaction has no tenant scope of its own."""
    tx.run(Q["lock_operator"])
    found = tx.scalar(Q["operator_tenant"])
    if found is not None:
        return str(found), False
    vet()
    new_id = str(uuid.uuid4())
    tx.run(Q["switch"], tenant_id=new_id)
    tx.run(Q["create_operator"], id=new_id, name=name, email=email)
    return new_id, True


def require_operator(tx) -> None:
    """Refuse (Forbidden) anyone but the platform operator's tenant."""
    if not tx.scalar(Q["is_operator"]):
        raise errors.Forbidden("only the platform operator's admins may provision tenants")


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
