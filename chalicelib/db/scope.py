"""The tenant scope every request's unit of work runs in: the tenant from the verified token only.

``tenant_transaction`` is a transaction with ``app.tenant_id`` set (row-level security
shows that tenant's rows and nothing else), refused unless the tenant exists and is
active. Refusals are ``errors.Forbidden``: a token for a tenant that is not provisioned
or is suspended may do nothing.
"""

from contextlib import contextmanager

from chalicelib import errors
from chalicelib.db.connection import transaction
from chalicelib.db.queries import load

Q = load("scope")


@contextmanager
def tenant_transaction(tenant_id: str):
    """A transaction scoped to ``tenant_id``, refused (Forbidden) unless the tenant exists and is active."""
    with transaction(tenant_id=tenant_id) as tx:
        check(tx)
        yield tx


def check(tx) -> None:
    """Refuse (Forbidden) unless the tenant ``tx`` is scoped to exists and is active."""
    status = tx.scalar(Q["tenant_status"])
    if status is None:
        raise errors.Forbidden("this tenant is not provisioned")
    if status != "active":
        raise errors.Forbidden("this tenant is suspended")


def require_active(tenant_id: str) -> None:
    """Refuse (Forbidden) an unknown or suspended tenant before work that starts outside the database."""
    with tenant_transaction(tenant_id):
        pass
