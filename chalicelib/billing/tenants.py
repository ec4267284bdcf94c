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
