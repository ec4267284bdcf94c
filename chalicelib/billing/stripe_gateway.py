"""Stripe as a payment gateway, through the official SDK, with one tenant's own credentials.

The ``stripe`` package (~80 ms to import) is imported only when a Stripe tenant is charged,
refunded, connected or heard from, so no other cold start pays for it. Every call that moves
money carries our key as Stripe's Idempotency-Key and our ids in ``metadata``.

Amounts: ours are ISO 4217 minor units; Stripe's mostly are too, but not always, so every
amount crosses in ``to_stripe`` / ``from_stripe`` (the one place): MGA is zero-decimal at
Stripe (ours: 2), ISK is two-decimal at Stripe (ours: 0), and three-decimal currencies (BHD,
JOD, KWD, OMR, TND) must end in 0. An amount Stripe cannot represent exactly is never
rounded: the request is refused (``RequestRefused``), and the attempt waits for a person.

What Stripe answers, as our outcomes:
- ``succeeded``: the PaymentIntent succeeded.
- ``declined`` (``decline_code``): a card error, Stripe's decline of this card.
- ``requires_action``: the bank wants the customer (``authentication_required`` off-session,
  or status ``requires_action``): the attempt waits for them.
- retryable, never a second charge: 409 key in flight and 429 (``GatewayBusy``), no answer in
  ``STRIPE_TIMEOUT_S`` (``GatewayTimeout``), 5xx (``GatewayUnavailable``), refused credentials
  (``CredentialsRefused``), and any request Stripe refuses as invalid (``RequestRefused``,
  logged with Stripe's request id and alarmed: it fails this record, not the batch, and is
  never taken for the customer's decline).
"""

import logging
import threading

from chalicelib import errors
from chalicelib.billing import currencies, payments
from chalicelib.config import get_settings

log = logging.getLogger("billing.stripe")

# Stripe's zero-decimal currencies, and its exceptions to ISO 4217 (docs.stripe.com/currencies).
ZERO_DECIMAL = frozenset("BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split())
TWO_DECIMAL_AT_STRIPE = frozenset({"ISK"})  # zero-decimal, sent as two-decimal (a multiple of 100)
THREE_DECIMAL_ENDING_IN_0 = frozenset("BHD JOD KWD OMR TND".split())
# An attempt older than this may be past Stripe's memory of its key (24 h): look it up before creating it.
KEY_MEMORY_S = 23 * 3600
LOOKUP_PAGES = 10  # of 100 PaymentIntents each

_clients: dict[tuple, "StripeGateway"] = {}
_lock = threading.Lock()


def for_credentials(credentials) -> "StripeGateway":
    """One gateway (and HTTP connection pool) per tenant and key, per warm function."""
    key = (credentials.tenant_id, credentials.secret_key)
    found = _clients.get(key)
    if found is None:
        with _lock:
            found = _clients.setdefault(key, StripeGateway(credentials.secret_key, credentials.account_id))
    return found


def _sdk():
    import stripe

    return stripe


def _stripe_exponent(currency: str) -> int:
    if currency in ZERO_DECIMAL:
        return 0
    if currency in TWO_DECIMAL_AT_STRIPE:
        return 2
    return currencies.exponent(currency)


def to_stripe(amount: int, currency: str) -> int:
    """Our minor units as Stripe's; RequestRefused when Stripe cannot take this amount exactly."""
    shift = _stripe_exponent(currency) - currencies.exponent(currency)
    converted = amount * 10**shift if shift >= 0 else amount // 10**-shift
    if shift < 0 and amount % 10**-shift or currency in THREE_DECIMAL_ENDING_IN_0 and converted % 10:
        raise payments.RequestRefused(f"Stripe cannot charge {amount} minor units of {currency} exactly")
    return converted


def from_stripe(amount: int, currency: str) -> int:
    """Stripe's minor units as ours (exact: Stripe's unit is never finer than ours but for ISK, a multiple of 100)."""
    shift = _stripe_exponent(currency.upper()) - currencies.exponent(currency.upper())
    return amount // 10**shift if shift >= 0 else amount * 10**-shift


def result_of(intent: dict) -> payments.PaymentResult:
    """A PaymentIntent's state as our outcome (an API answer or a webhook's object alike)."""
    status = intent["status"]
    error = intent.get("last_payment_error") or {}
    if status == "succeeded":
        return payments.PaymentResult("succeeded", reference=intent["id"])
    if status == "requires_action" or error.get("code") == "authentication_required":
        return payments.PaymentResult("requires_action", reference=intent["id"], decline_code="authentication_required")
    if status == "processing":  # not offered (cards only), but never a decline: the webhook settles it
        raise payments.GatewayTimeout(f"payment intent {intent['id']} is processing")
    code = error.get("decline_code") or error.get("code") or status
    return payments.PaymentResult("declined", reference=intent["id"], decline_code=code)


class StripeGateway:
    needs_payer = True
    remote = True  # each call waits on the network: a round's charges are made several at a time

    def __init__(self, secret_key: str, account_id: str | None = None):
        stripe = _sdk()
        settings = get_settings()
        base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
        self.account_id = account_id
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
        elsewhere = payer.gateway_account not in (None, self.account_id)
        if elsewhere and not payer.first_send:  # sent to the tenant's previous Stripe account: it may be charged there
            raise payments.RequestRefused(
                f"attempt sent to Stripe account {payer.gateway_account}, not {self.account_id}"
            )
        if not (payer.customer and payer.payment_method) or elsewhere:
            return payments.PaymentResult("declined", decline_code="no_payment_method")
        metadata = {"account_id": str(account_id), **(metadata or {})}
        if payer.sent_before_s is not None and payer.sent_before_s > KEY_MEMORY_S:
            found = self._already_made(payer.customer, metadata.get("attempt_id"))
            if found is not None:
                return result_of(found)
        params = {
            "amount": to_stripe(amount, currency),
            "currency": currency.lower(),
            "customer": payer.customer,
            "payment_method": payer.payment_method,
            "confirm": True,
            "off_session": True,
            "metadata": metadata,
        }
        try:
            return result_of(self._call(lambda: self._client.v1.payment_intents.create(params, _key(idempotency_key))))
        except _sdk().CardError as exc:
            return _card_error(exc)

    def _already_made(self, customer: str, attempt_id: str | None) -> dict | None:
        """The PaymentIntent an old attempt made, found by its attempt id (Stripe forgets keys after 24 h).
        Absence must be proven: past LOOKUP_PAGES pages of the customer's intents, RequestRefused."""
        params = {"customer": customer, "limit": 100}
        for _ in range(LOOKUP_PAGES):
            page = self._call(lambda p=dict(params): self._client.v1.payment_intents.list(p))
            found = next(
                (pi for pi in page["data"] if (pi.get("metadata") or {}).get("attempt_id") == attempt_id), None
            )
            if found is not None or not page.get("has_more"):
                return found
            params["starting_after"] = page["data"][-1]["id"]
        raise payments.RequestRefused(f"attempt {attempt_id} not found in {LOOKUP_PAGES * 100} intents: not made again")

    def refund(
        self,
        *,
        account_id,
        amount: int,
        currency: str,
        idempotency_key: str,
        charge_reference,
        metadata=None,
        sent_before_s: int | None = None,
    ) -> payments.PaymentResult:
        if not charge_reference:
            return payments.PaymentResult("declined", decline_code="no_charge_to_refund")
        metadata = dict(metadata or {})
        if sent_before_s is not None and sent_before_s > KEY_MEMORY_S:  # Stripe may have forgotten the key
            found = self._refund_made(charge_reference, metadata.get("refund_id"))
            if found is not None:
                return refund_result(found)
        params = {"payment_intent": charge_reference, "amount": to_stripe(amount, currency), "metadata": metadata}
        return refund_result(self._call(lambda: self._client.v1.refunds.create(params, _key(idempotency_key))))

    def _refund_made(self, payment_intent: str, refund_id: str | None) -> dict | None:
        """A refund an old request made, found by our refund id among the charge's (a charge has few)."""
        page = self._call(lambda: self._client.v1.refunds.list({"payment_intent": payment_intent, "limit": 100}))
        return next((r for r in page["data"] if (r.get("metadata") or {}).get("refund_id") == refund_id), None)

    def withdraw(self, *, reference: str, idempotency_key: str) -> payments.PaymentResult:
        """Cancel a PaymentIntent that waits for the customer; ``succeeded`` if they completed it first.
        (Cancelling is idempotent at Stripe: no key, so a refusal is never replayed to a later try.)"""
        try:
            self._call(lambda: self._client.v1.payment_intents.cancel(reference))
        except payments.RequestRefused:
            pass  # not cancelable: it succeeded, or was canceled already
        try:
            intent = self._call(lambda: self._client.v1.payment_intents.retrieve(reference))
        except payments.RequestRefused:  # not at this Stripe account: it may still be live at the previous one
            log.error("payment intent %s is not at Stripe account %s: withdraw it there", reference, self.account_id)
            raise
        if intent["status"] in ("succeeded", "canceled"):
            return payments.PaymentResult(intent["status"], reference=intent["id"])
        raise payments.GatewayBusy(f"payment intent {reference} is {intent['status']}: try again")

    def confirmation(self, reference: str) -> dict | None:
        """The client secret and card of a PaymentIntent the customer can still confirm, or None."""
        intent = self.fetch(lambda client: client.v1.payment_intents.retrieve(reference))
        if intent["status"] not in ("requires_payment_method", "requires_action", "requires_confirmation"):
            return None
        method = intent.get("payment_method") or (intent.get("last_payment_error") or {}).get("payment_method")
        method_id = method.get("id") if isinstance(method, dict) else method
        return {"client_secret": intent["client_secret"], "payment_method": method_id}

    # --- customers and payment methods -------------------------------------------------------

    def account(self) -> str:
        """The Stripe account these credentials belong to: one harmless call that proves them."""
        return self._call(lambda: self._client.v1.accounts.retrieve_current())["id"]

    def create_customer(self, account: dict, idempotency_key: str) -> str:
        params = {"email": account["email"], "name": account["name"], "metadata": {"account_id": str(account["id"])}}
        return self.fetch(lambda client: client.v1.customers.create(params, _key(idempotency_key)))["id"]

    def setup_intent(self, customer: str, account_id: str) -> dict:
        """Cards only: a card answers at once (an asynchronous debit would sit ``processing`` for days)."""
        params = {
            "customer": customer,
            "usage": "off_session",
            "payment_method_types": ["card"],
            "metadata": {"account_id": account_id},
        }
        intent = self.fetch(lambda client: client.v1.setup_intents.create(params))
        return {"id": intent["id"], "client_secret": intent["client_secret"], "customer": customer}

    def payment_method(self, payment_method_id: str) -> dict:
        """Id, brand, last4 and expiry of a card (nothing that could charge it)."""
        method = self.fetch(lambda client: client.v1.payment_methods.retrieve(payment_method_id))
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

    def fetch(self, request):
        """A call for a person waiting on it (an API request, a page): Stripe's trouble as our errors
        (503 to retry, 422 for refused credentials or a refused request)."""
        try:
            return self._call(lambda: request(self._client))
        except payments.CredentialsRefused as exc:
            raise errors.UnprocessableState(
                "Stripe refused the tenant's keys", code="gateway_credentials_refused"
            ) from exc
        except payments.RequestRefused as exc:
            raise errors.UnprocessableState(f"Stripe refused the request: {exc}", code="gateway_refused") from exc
        except payments.RetryableGatewayError as exc:
            raise errors.ServiceUnavailable("Stripe did not answer; try again") from exc

    def _call(self, request) -> dict:
        """One SDK call, its answer as plain data; Stripe's errors as ours (a card error stays the SDK's)."""
        stripe = _sdk()
        try:
            return request().to_dict()
        except stripe.CardError:
            raise
        except stripe.RateLimitError as exc:
            raise payments.GatewayBusy(f"Stripe: rate limited or locked ({exc.request_id})") from exc
        except stripe.APIConnectionError as exc:
            raise payments.GatewayTimeout(f"Stripe did not answer: {exc.user_message}") from exc
        except (stripe.AuthenticationError, stripe.PermissionError) as exc:
            log.error("Stripe refused the tenant's key: %s (request %s)", exc.http_status, exc.request_id)
            raise payments.CredentialsRefused(f"Stripe answered {exc.http_status} ({exc.request_id})") from exc
        except (stripe.InvalidRequestError, stripe.IdempotencyError) as exc:
            log.error("Stripe refused a request: %s %s (request %s)", exc.code, exc.user_message, exc.request_id)
            raise payments.RequestRefused(f"{exc.code or 'invalid_request'} ({exc.request_id})") from exc
        except stripe.APIError as exc:
            if exc.http_status == 409:  # the SDK raises a key still in flight (idempotency_key_in_use) as this
                raise payments.GatewayBusy(f"Stripe: a request with this key is in flight ({exc.request_id})") from exc
            log.error("Stripe error %s (request %s)", exc.http_status, exc.request_id)
            raise payments.GatewayUnavailable(f"Stripe answered {exc.http_status} ({exc.request_id})") from exc


def _key(idempotency_key: str) -> dict:
    return {"idempotency_key": idempotency_key}


def refund_result(refund: dict) -> payments.PaymentResult:
    """A Refund's state as our outcome; ``pending`` (Stripe settles it later, by webhook) keeps its id."""
    if refund["status"] in ("succeeded", "pending"):
        return payments.PaymentResult(refund["status"], reference=refund["id"])
    return payments.PaymentResult("declined", reference=refund["id"], decline_code=refund.get("failure_reason"))


def _card_error(exc) -> payments.PaymentResult:
    error = (exc.json_body or {}).get("error") or {}
    intent = error.get("payment_intent")
    if intent:
        return result_of({**intent, "last_payment_error": {**error, **(intent.get("last_payment_error") or {})}})
    return payments.PaymentResult("declined", decline_code=error.get("decline_code") or exc.code or "card_declined")


def verify_event(payload: bytes, signature: str | None, webhook_secret: str) -> dict:
    """A Stripe event from a webhook's raw body, verified (5-minute tolerance); ValueError if not."""
    stripe = _sdk()
    try:
        event = stripe.Webhook.construct_event(payload, signature, webhook_secret, tolerance=300)
    except stripe.SignatureVerificationError as exc:
        raise ValueError("the Stripe-Signature header does not verify") from exc
    return event.to_dict()
