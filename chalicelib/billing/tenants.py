"""Tenants: the SaaS teams on the platform, and the scope every request runs in."""

import uuid
from contextlib import contextmanager

from chalicelib import audit, errors
from chalicelib.db import transaction
from chalicelib.db.queries import load

Q = load("tenants")


@contextmanager
def active(tenant_id: str):
    """A transaction scoped to ``tenant_id``, refused (403) unless the tenant exists and is active."""
    with transaction(tenant_id=tenant_id) as tx:
        status = tx.scalar(Q["status"])
        if status is None:
            raise errors.Forbidden("this tenant is not provisioned")
        if status != "active":
            raise errors.Forbidden("this tenant is suspended")
        yield tx


def create(tx, request) -> tuple[int, dict]:
    """Provision a new tenant: an ADMIN of the platform operator's tenant only.

    ADMIN is a role inside a tenant; letting every customer's admin mint tenants
    would be a privilege escalation, so the caller's tenant must carry
    ``settings.platform_operator = true``. The caller's scope is restored afterwards.
    """
    if not tx.scalar(Q["is_operator"]):
        raise errors.Forbidden("only the platform operator's admins may provision tenants")
    body = request.body
    new_id = str(uuid.uuid4())
    tx.run(Q["switch"], tenant_id=new_id)
    tenant = tx.one(Q["create"], id=new_id, name=body["name"], email=body["email"], plan=body["plan"])
    tx.run(Q["switch"], tenant_id=request.principal.tenant_id)
    audit.record(tx, request.principal, "tenant.created", "tenant", new_id, {"name": body["name"]})
    return 201, tenant
