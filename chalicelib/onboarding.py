"""Onboarding: a new tenant's first ADMIN in the user pool, and the platform operator's bootstrap.

``POST /v1/tenants`` commits the tenant and its ``tenant.created`` event, then invites the first
admin (``invite_admin``: Cognito's AdminCreateUser, which emails a temporary password, and the
ADMIN group). The same invitation is the ``tenant.created`` consumer's job (``handlers``), so an
invitation that failed after the commit is finished from the outbox. Every step is idempotent: a
user already made for this tenant is found (AdminGetUser) and kept, never made twice; an email
that already signs in to *another* tenant is refused before anything is stored (one person, one
tenant: ``custom:tenant_id`` is immutable).

``bootstrap_operator`` makes the platform operator's tenant (the one whose admins may create
tenants) and its first admin in a freshly deployed stage, once: run again, it finds both.
"""

from chalicelib import errors, user_pool
from chalicelib.auth import ADMIN_GROUP
from chalicelib.billing import tenant_limits, tenants
from chalicelib.db import transaction


def provision(tx, actor, command: tenants.NewTenant) -> dict:
    """A new tenant (``tenants.create``), refused first to anyone but the operator (so nobody else learns
    whether an email has an account), then for a tier the platform does not sell or an admin email
    that already signs in; its first admin is invited after the commit (``welcome``)."""
    tenants.require_operator(tx)
    tenant_limits.require_tier(tx, command.plan)
    check_admin_free(None, command.first_admin)
    return tenants.create(tx, actor, command)


def welcome(tenant: dict, email: str) -> dict:
    """After the commit: the first admin invited. Refused (the email went to another tenant meanwhile),
    the answer says ``failed``: an operator must pick another email; nothing will retry it."""
    try:
        admin = invite_admin(tenant["id"], email)
    except errors.Conflict:
        admin = {"email": email, "status": "failed"}
    return {**tenant, "admin": admin}


def check_admin_free(tenant_id: str | None, email: str) -> None:
    """Refuse (Conflict, ``admin_email_taken``) an email that already signs in: to another tenant, or
    at all for a tenant not yet made (``tenant_id`` None)."""
    user = _user(email)
    if user is not None and (tenant_id is None or _tenant_of(user) != tenant_id):
        raise errors.Conflict("this email already signs in to another tenant", code="admin_email_taken")


def invite_admin(tenant_id: str, email: str) -> dict:
    """The tenant's first ADMIN, invited by email; found and kept if a retry already made it. The
    username is the email in lower case (one person, one user, whatever case they type)."""
    tenant_id, username = str(tenant_id), email.strip().lower()
    user = _user(username)
    if user is None:
        # UsernameExists: a concurrent invitation won; checked below like any other existing user.
        user_pool.call(
            "admin_create_user",
            expected=("UsernameExistsException",),
            Username=username,
            UserAttributes=[
                {"Name": "email", "Value": email},
                {"Name": "email_verified", "Value": "true"},
                {"Name": "custom:tenant_id", "Value": tenant_id},
            ],
            DesiredDeliveryMediums=["EMAIL"],
        )
        user = _user(username)
    if user is None or _tenant_of(user) != tenant_id:
        raise errors.Conflict("this email already signs in to another tenant", code="admin_email_taken")
    if user.get("UserStatus") == "FORCE_CHANGE_PASSWORD":  # not yet signed in: a demoted admin stays demoted
        user_pool.call("admin_add_user_to_group", Username=username, GroupName=ADMIN_GROUP)
    return {"email": email, "status": "invited" if user.get("UserStatus") == "FORCE_CHANGE_PASSWORD" else "active"}


def bootstrap_operator(name: str, email: str) -> dict:
    """The platform operator's tenant and first admin: made the first time, found every time after."""
    with transaction() as tx:
        tenant_id, created = tenants.operator_tenant(tx, name, email, vet=lambda: check_admin_free(None, email))
    return {"tenant_id": tenant_id, "created": created, "admin": invite_admin(tenant_id, email)}


def _user(email: str) -> dict | None:
    found = user_pool.call("admin_get_user", expected=("UserNotFoundException",), Username=email.strip().lower())
    return None if found == "UserNotFoundException" else found


def _tenant_of(user: dict) -> str | None:
    attributes = {a["Name"]: a["Value"] for a in user.get("UserAttributes", [])}
    return attributes.get("custom:tenant_id")
