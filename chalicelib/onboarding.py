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

from chalicelib import aws, errors
from chalicelib.auth import ADMIN_GROUP
from chalicelib.billing import tenants
from chalicelib.config import get_settings
from chalicelib.db import transaction


def check_admin_free(tenant_id: str | None, email: str) -> None:
    """Refuse (Conflict, ``admin_email_taken``) an email that already signs in to another tenant."""
    user = _user(email)
    if user is not None and _tenant_of(user) != tenant_id:
        raise errors.Conflict("this email already signs in to another tenant", code="admin_email_taken")


def invite_admin(tenant_id: str, email: str) -> dict:
    """The tenant's first ADMIN, invited by email; found and kept if a retry already made it."""
    cognito, pool, tenant_id = aws.client("cognito-idp"), _pool_id(), str(tenant_id)
    user = _user(email)
    if user is None:
        try:
            cognito.admin_create_user(
                UserPoolId=pool,
                Username=email,
                UserAttributes=[
                    {"Name": "email", "Value": email},
                    {"Name": "email_verified", "Value": "true"},
                    {"Name": "custom:tenant_id", "Value": tenant_id},
                ],
                DesiredDeliveryMediums=["EMAIL"],
            )
        except cognito.exceptions.UsernameExistsException:
            pass  # a concurrent invitation won; checked below like any other existing user
        user = _user(email)
    if user is None or _tenant_of(user) != tenant_id:
        raise errors.Conflict("this email already signs in to another tenant", code="admin_email_taken")
    cognito.admin_add_user_to_group(UserPoolId=pool, Username=email, GroupName=ADMIN_GROUP)
    return {"email": email, "status": "invited" if user.get("UserStatus") == "FORCE_CHANGE_PASSWORD" else "active"}


def bootstrap_operator(name: str, email: str) -> dict:
    """The platform operator's tenant and first admin: made the first time, found every time after."""
    with transaction() as tx:
        tenant_id, created = tenants.operator_tenant(tx, name, email, vet=lambda: check_admin_free(None, email))
    return {"tenant_id": tenant_id, "created": created, "admin": invite_admin(tenant_id, email)}


def _user(email: str) -> dict | None:
    cognito = aws.client("cognito-idp")
    try:
        return cognito.admin_get_user(UserPoolId=_pool_id(), Username=email)
    except cognito.exceptions.UserNotFoundException:
        return None


def _tenant_of(user: dict) -> str | None:
    attributes = {a["Name"]: a["Value"] for a in user.get("UserAttributes", [])}
    return attributes.get("custom:tenant_id")


def _pool_id() -> str:
    pool = get_settings().cognito_user_pool_id
    if not pool:
        raise errors.ServiceUnavailable("the user pool is not configured on this stage")
    return pool
