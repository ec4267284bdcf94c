"""Hosted invoice links: a signed, expiring URL a tenant sends its customer to see (and download)
one invoice without signing in.

A link's token names the tenant, the invoice and when it expires, and carries an
HMAC-SHA256 of those under the tenant's own ``hosted_link_key`` (never returned by the API).
The tenant named in the token is used only to read that key; nothing else is read until the
signature checks, so the token is the verified source of the tenant, as a bearer token is.
A forged, altered or expired link is a 404, whatever was wrong, so it tells a prober nothing.
"""

import base64
import hashlib
import hmac
import uuid
from datetime import datetime, timedelta

from chalicelib import errors
from chalicelib.billing import tenants

LINK_DAYS = 30


def token(tx, tenant_id: str, invoice_id: str, now: datetime) -> str:
    """A link token for the invoice, valid LINK_DAYS from ``now`` (in the tenant's transaction)."""
    expires = int((now + timedelta(days=LINK_DAYS)).timestamp())
    claims = f"{uuid.UUID(tenant_id).hex}{uuid.UUID(invoice_id).hex}{expires:x}"
    return f"{claims}.{_sign(tenants.hosted_link_key(tx), claims)}"


def tenant_of(link: str) -> str:
    """The tenant a token names, unverified: only to open its scope and read its key. 404 if malformed."""
    claims, _, signature = link.partition(".")
    if len(claims) < 65 or not signature or len(link) > 200:
        raise errors.NotFound("no such invoice link")
    try:
        return str(uuid.UUID(claims[:32]))
    except ValueError:
        raise errors.NotFound("no such invoice link") from None


def verify(tx, link: str, now: datetime) -> str:
    """The invoice a token grants, in its tenant's transaction; 404 unless signed by that tenant and unexpired."""
    claims, _, signature = link.partition(".")
    if not hmac.compare_digest(_sign(tenants.hosted_link_key(tx), claims).encode(), signature.encode()):
        raise errors.NotFound("no such invoice link")
    try:
        invoice_id, expires = str(uuid.UUID(claims[32:64])), int(claims[64:], 16)
    except ValueError:
        raise errors.NotFound("no such invoice link") from None
    if now.timestamp() > expires:
        raise errors.NotFound("no such invoice link")
    return invoice_id


def _sign(key: str, claims: str) -> str:
    digest = hmac.new(key.encode(), claims.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
