"""A tenant's connection to its own payment gateway (Stripe): connect, describe, reach it.

``connect`` proves the secret key with one harmless call (Stripe's account of that key),
then stores the keys in Secrets Manager (``gateway_credentials``) and writes an audit row
that names the account and the keys' last 4 characters, never the keys.
"""

import logging
from dataclasses import dataclass

from chalicelib import audit, errors
from chalicelib.billing import gateway_credentials, gateways, payments

log = logging.getLogger("billing.gateway_accounts")


@dataclass(frozen=True)
class Connection:
    provider: str
    secret_key: str
    webhook_secret: str
    publishable_key: str = ""  # for Stripe.js on the hosted invoice page (not a secret)

    def __repr__(self) -> str:  # never the keys, whatever logs it
        return f"Connection(provider={self.provider!r})"


def connect(tenant_id: str, actor, command: Connection, at, transaction) -> dict:
    """Validate and store the tenant's credentials; what ``describe`` shows of them."""
    if not gateway_credentials.enabled():
        message = "this stage keeps no gateway credentials (GATEWAY_CREDENTIALS_STORE is none)"
        raise errors.UnprocessableState(message, code="gateway_store_disabled")
    from chalicelib.billing import stripe_gateway

    try:
        account_id = stripe_gateway.StripeGateway(command.secret_key).account()
    except payments.CredentialsRefused as exc:
        raise errors.InvalidRequest(
            "Stripe refused this secret key",
            code="gateway_credentials_invalid",
            details=[{"field": "secret_key", "issue": "Stripe did not accept it"}],
        ) from exc
    except payments.RequestRefused as exc:
        details = [{"field": "secret_key", "issue": "Stripe refused it"}]
        raise errors.InvalidRequest(
            "Stripe refused this key", code="gateway_credentials_invalid", details=details
        ) from exc
    except payments.RetryableGatewayError as exc:
        raise errors.ServiceUnavailable("Stripe did not answer; try again") from exc
    stored = gateway_credentials.store(
        tenant_id,
        gateway_credentials.Credentials(
            tenant_id,
            command.provider,
            command.secret_key,
            command.webhook_secret,
            account_id,
            at.isoformat(),
            command.publishable_key,
        ),
    )
    with transaction(tenant_id) as tx:
        audit.record(tx, actor, "gateway.connected", "tenant", tenant_id, stored.describe())
    return stored.describe()


def describe(tenant_id: str) -> dict:
    """The tenant's gateway as the API shows it: provider, account, the keys' last 4 characters."""
    credentials = gateway_credentials.get_for_request(tenant_id)
    if credentials is None:
        return {"object": "gateway", "provider": None, "connected": False}
    return credentials.describe()


def confirmation(tenant_id: str, reference: str | None) -> dict | None:
    """What Stripe.js needs to let the customer confirm a payment that waits for them (the
    PaymentIntent's client secret, read from Stripe now), or None: no publishable key, or the
    payment no longer waits."""
    try:
        credentials = gateway_credentials.get_for_request(tenant_id)
        if credentials is None or not credentials.publishable_key or not reference:
            return None
        confirm = gateways.stripe_of(tenant_id).confirmation(reference)
    except errors.BillingError:
        log.warning("no confirmation for payment %s: Stripe did not give it", reference)
        return None  # the page still shows the invoice
    return {"publishable_key": credentials.publishable_key, **confirm} if confirm else None
