"""Stripe as a payment gateway, through the official SDK, with one tenant's own credentials.

The ``stripe`` package (~80 ms to import) is imported only when a Stripe tenant is charged,
refunded, connected or heard from, so no other cold start pays for it. Every call carries
our key as Stripe's Idempotency-Key and our ids in ``metadata``; amounts go over as they
are stored, in the currency's minor units, which is what Stripe expects (zero-decimal
currencies such as JPY included; our ISO 4217 exponents agree with Stripe's for every
currency we accept).

What Stripe answers, as our outcomes:
- ``succeeded``: the PaymentIntent succeeded.
- ``declined`` (``decline_code``): a card error; also a request Stripe refuses as invalid (a
  4xx that retrying cannot fix), logged with Stripe's request id: it fails this record, not
  the batch.
- ``requires_action``: the bank wants the customer (``authentication_required`` off-session,
  or status ``requires_action``): the attempt waits for them.
- retryable, never a second charge: 409 ``idempotency_error`` and 429 lock/rate errors
  (``GatewayBusy``), no answer in ``STRIPE_TIMEOUT_S`` (``GatewayTimeout``), 5xx and refused
  credentials (``GatewayUnavailable``). The retry presents the same key.
"""

import logging
import threading

from chalicelib import errors
from chalicelib.billing import payments
from chalicelib.config import get_settings

log = logging.getLogger("billing.stripe")

_clients: dict[tuple, "StripeGateway"] = {}
_lock = threading.Lock()


def for_credentials(credentials) -> "StripeGateway":
    """One gateway (and HTTP connection pool) per tenant and key, per warm function."""
    key = (credentials.tenant_id, credentials.secret_key)
    found = _clients.get(key)
    if found is None:
        with _lock:
            found = _clients.setdefault(key, StripeGateway(credentials.secret_key))
    return found


def _sdk():
    import stripe

    return stripe


class StripeGateway:
    needs_payer = True

    def __init__(self, secret_key: str):
        stripe = _sdk()
        settings = get_settings()
        base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses=base,
            max_network_retries=0,  # we retry, later, with the same key
            http_client=stripe.RequestsClient(timeout=settings.stripe_timeout_s),
        )

    # --- money -----------------------------------------------------------------------------

    def charge(
        self, *, account_id, amount: int, currency: str, idempotency_key: str, payer=payments.NO_PAYER, metadata=None
    ) -> payments.PaymentResult:
        if not (payer.customer and payer.payment_method):
            return payments.PaymentResult("declined", decline_code="no_payment_method")
        params = {
            "amount": amount,
            "currency": currency.lower(),
            "customer": payer.customer,
            "payment_method": payer.payment_method,
            "confirm": True,
            "off_session": True,
            "metadata": {"account_id": str(account_id), **(metadata or {})},
        }
        intent = self._call(lambda: self._client.v1.payment_intents.create(params, _key(idempotency_key)))
        return intent if isinstance(intent, payments.PaymentResult) else _intent_result(intent)

    def refund(
        self, *, account_id, amount: int, currency: str, idempotency_key: str, charge_reference, metadata=None
    ) -> payments.PaymentResult:
        if not charge_reference:
            return payments.PaymentResult("declined", decline_code="no_charge_to_refund")
        params = {"payment_intent": charge_reference, "amount": amount, "metadata": dict(metadata or {})}
        refund = self._call(lambda: self._client.v1.refunds.create(params, _key(idempotency_key)))
        if isinstance(refund, payments.PaymentResult):
            return refund
        if refund["status"] in ("succeeded", "pending"):
            return payments.PaymentResult("succeeded", reference=refund["id"])
        return payments.PaymentResult("declined", reference=refund["id"], decline_code=refund.get("failure_reason"))

    def withdraw(self, *, reference: str, idempotency_key: str) -> payments.PaymentResult:
        """Cancel a PaymentIntent that waits for the customer; ``succeeded`` if they completed it first."""
        stripe = _sdk()
        try:
            self._call(lambda: self._client.v1.payment_intents.cancel(reference, {}, _key(idempotency_key)))
        except stripe.InvalidRequestError:
            pass  # not cancelable: it succeeded, or was canceled already
        intent = self._call(lambda: self._client.v1.payment_intents.retrieve(reference))
        if intent["status"] == "succeeded":
            return payments.PaymentResult("succeeded", reference=intent["id"])
        if intent["status"] == "canceled":
            return payments.PaymentResult("canceled", reference=intent["id"])
        raise payments.GatewayBusy(f"payment intent {reference} is {intent['status']}: try again")

    def confirmation(self, reference: str) -> dict | None:
        """The client secret and card of a PaymentIntent the customer can still confirm, or None."""
        intent = self._fetch(lambda: self._client.v1.payment_intents.retrieve(reference))
        if intent["status"] not in ("requires_payment_method", "requires_action", "requires_confirmation"):
            return None
        method = intent.get("payment_method") or (intent.get("last_payment_error") or {}).get("payment_method")
        method_id = method.get("id") if isinstance(method, dict) else method
        return {"client_secret": intent["client_secret"], "payment_method": method_id}

    # --- customers and payment methods -------------------------------------------------------

    def account_id(self) -> str:
        """The Stripe account these credentials belong to: one harmless call that proves them."""
        return self._fetch(lambda: self._client.v1.accounts.retrieve_current())["id"]

    def create_customer(self, account: dict, idempotency_key: str) -> str:
        params = {"email": account["email"], "name": account["name"], "metadata": {"account_id": str(account["id"])}}
        return self._fetch(lambda: self._client.v1.customers.create(params, _key(idempotency_key)))["id"]

    def setup_intent(self, customer: str, account_id: str) -> dict:
        params = {"customer": customer, "usage": "off_session", "metadata": {"account_id": account_id}}
        intent = self._fetch(lambda: self._client.v1.setup_intents.create(params))
        return {"id": intent["id"], "client_secret": intent["client_secret"], "customer": customer}

    def payment_method(self, payment_method_id: str) -> dict:
        """Id, brand, last4 and expiry of a card (nothing that could charge it)."""
        method = self._fetch(lambda: self._client.v1.payment_methods.retrieve(payment_method_id))
        card = method.get("card") or {}
        return {
            "id": method["id"],
            "type": method["type"],
            "brand": card.get("brand"),
            "last4": card.get("last4"),
            "exp_month": card.get("exp_month"),
            "exp_year": card.get("exp_year"),
        }

    # --- errors ------------------------------------------------------------------------------

    def _fetch(self, request):
        """A call that moves no money: Stripe's refusal is a 422 ``gateway_refused`` for the caller."""
        answer = self._call(request)
        if isinstance(answer, payments.PaymentResult):
            message = f"Stripe refused the request ({answer.decline_code})"
            raise errors.UnprocessableState(message, code="gateway_refused")
        return answer

    def _call(self, request):
        """Stripe's errors as ours: a card error or an invalid request is an answer (a declined
        result), the rest retryable exceptions."""
        stripe = _sdk()
        try:
            return request().to_dict()  # plain data: nothing past here depends on the SDK's objects
        except stripe.CardError as exc:
            return _card_error(exc)
        except stripe.IdempotencyError as exc:  # 400: the key was first used with other parameters
            log.error("Stripe refused an idempotency key reused differently (request %s)", exc.request_id)
            return payments.PaymentResult("declined", decline_code="idempotency_error")
        except stripe.RateLimitError as exc:
            raise payments.GatewayBusy(f"Stripe: rate limited or locked ({exc.request_id})") from exc
        except stripe.APIConnectionError as exc:
            raise payments.GatewayTimeout(f"Stripe did not answer: {exc.user_message}") from exc
        except (stripe.AuthenticationError, stripe.PermissionError) as exc:
            log.error("Stripe refused the tenant's key: %s (request %s)", exc.http_status, exc.request_id)
            raise payments.CredentialsRefused(f"Stripe answered {exc.http_status} ({exc.request_id})") from exc
        except stripe.APIError as exc:
            if exc.http_status == 409:  # the SDK raises a key still in flight (idempotency_key_in_use) as this
                raise payments.GatewayBusy(f"Stripe: a request with this key is in flight ({exc.request_id})") from exc
            log.error("Stripe error %s (request %s)", exc.http_status, exc.request_id)
            raise payments.GatewayUnavailable(f"Stripe answered {exc.http_status} ({exc.request_id})") from exc
        except stripe.InvalidRequestError as exc:
            if exc.code == "payment_intent_unexpected_state":
                raise
            log.error("Stripe refused a request: %s %s (request %s)", exc.code, exc.user_message, exc.request_id)
            return payments.PaymentResult("declined", decline_code=exc.code or "invalid_request")


def _key(idempotency_key: str) -> dict:
    return {"idempotency_key": idempotency_key}


def _intent_result(intent) -> payments.PaymentResult:
    status = intent["status"]
    if status == "succeeded":
        return payments.PaymentResult("succeeded", reference=intent["id"])
    if status == "requires_action":
        return payments.PaymentResult("requires_action", reference=intent["id"], decline_code="authentication_required")
    if status == "processing":  # an asynchronous method: the webhook settles it
        raise payments.GatewayTimeout(f"payment intent {intent['id']} is processing")
    error = intent.get("last_payment_error") or {}
    return payments.PaymentResult(
        "declined", reference=intent["id"], decline_code=error.get("decline_code") or error.get("code") or status
    )


def _card_error(exc) -> payments.PaymentResult:
    error = (exc.json_body or {}).get("error") or {}
    intent = error.get("payment_intent") or {}
    code = error.get("decline_code") or exc.code or "card_declined"
    if exc.code == "authentication_required" or intent.get("status") == "requires_action":
        return payments.PaymentResult(
            "requires_action", reference=intent.get("id"), decline_code="authentication_required"
        )
    return payments.PaymentResult("declined", reference=intent.get("id"), decline_code=code)


def verify_event(payload: bytes, signature: str | None, webhook_secret: str) -> dict:
    """A Stripe event from a webhook's raw body, verified (5-minute tolerance); ValueError if not."""
    stripe = _sdk()
    try:
        event = stripe.Webhook.construct_event(payload, signature, webhook_secret, tolerance=300)
    except stripe.SignatureVerificationError as exc:
        raise ValueError("the Stripe-Signature header does not verify") from exc
    return event.to_dict()
