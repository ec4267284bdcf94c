"""Which gateway charges a tenant's customers: the one place that chooses.

Stripe, with the credentials the tenant connected (``gateway_credentials``); without any,
the mock outside production, and in production an error the operator sees (metric
``gateway_not_connected``, alarmed) that leaves the payment pending, to be charged under
the same key once the tenant connects one. Tests install one gateway for every tenant
(``payments.set_gateway``).
"""

import logging

from chalicelib import errors
from chalicelib.billing import payments
from chalicelib.config import get_settings
from chalicelib.observability import emit_metric

log = logging.getLogger("billing.gateways")


def of(tenant_id: str):
    """The tenant's gateway (``payments.GatewayUnavailable`` in production when it has none)."""
    installed = payments.installed()
    if installed is not None:
        return installed
    from chalicelib.billing import gateway_credentials  # imported when a payment is made, not at cold start

    credentials = gateway_credentials.get(tenant_id)
    if credentials is not None:
        from chalicelib.billing import stripe_gateway

        return stripe_gateway.for_credentials(credentials)
    settings = get_settings()
    if settings.is_production or settings.payment_gateway != "mock":
        # One series for the alarm (no tenant dimension); the log line names the tenant.
        log.error("tenant %s has no payment gateway connected: its payment stays pending", tenant_id)
        emit_metric("gateway_not_connected", 1)
        raise payments.GatewayUnavailable(f"tenant {tenant_id} has no payment gateway connected")
    return payments.mock_gateway()


def stripe_of(tenant_id: str):
    """The tenant's own Stripe (for what only Stripe does: cards, webhooks, confirmations); 422
    ``gateway_not_connected`` if it connected none."""
    from chalicelib.billing import gateway_credentials

    credentials = gateway_credentials.get_for_request(tenant_id)
    if credentials is None:
        message = "connect a payment gateway first (PUT /v1/gateway)"
        raise errors.UnprocessableState(message, code="gateway_not_connected")
    from chalicelib.billing import stripe_gateway

    return stripe_gateway.for_credentials(credentials)


def note_unanswered(exc: Exception, what: str) -> None:
    """A gateway call left without a final answer: a refusal of our request (ours to fix, never the
    customer's decline) is logged and alarmed (``gateway_refused``); the rest is retried quietly."""
    if isinstance(exc, payments.RequestRefused):
        log.error("the gateway refused %s: %s", what, exc)
        emit_metric("gateway_refused", 1)
