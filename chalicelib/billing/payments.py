"""Payment gateways, and collecting an invoice through one.

A gateway charges ``amount`` minor units of ``currency`` to a ``Payer`` under an
idempotency key; the same key always yields the same result and never a second
charge (the contract of Stripe's Idempotency-Key). A timeout is not a decline: the
caller retries later with the same key, and the gateway answers with what really
happened. A charge the customer must authenticate (``requires_action``) waits for
them; before a later attempt at the same invoice, ``withdraw`` cancels it at the
gateway, or finds that the customer completed it.

``gateways.of(tenant_id)`` chooses each tenant's gateway. ``MockGateway`` is the
gateway for local runs, tests and benchmarks: it logs each call and succeeds,
declines, waits or times out, deterministically per account.
"""

import hashlib
import logging
import threading
from dataclasses import dataclass

from chalicelib.config import get_settings

log = logging.getLogger("billing.payments")


@dataclass(frozen=True)
class Payer:
    """Who an attempt charges at the gateway, fixed the first time it was sent: the account's customer
    there, its default payment method and the gateway account they belong to (None: none yet)."""

    customer: str | None = None
    payment_method: str | None = None
    gateway_account: str | None = None
    sent_before_s: int | None = None  # how long ago the attempt was opened (a gateway's keys expire)
    first_send: bool = True  # never sent before: nothing of it can exist at any gateway yet


NO_PAYER = Payer()


@dataclass(frozen=True)
class PaymentResult:
    outcome: str  # "succeeded" | "declined" | "requires_action" (waits for the customer) | "canceled"
    reference: str | None = None
    decline_code: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.outcome == "succeeded"


class RetryableGatewayError(Exception):
    """The gateway gave no final answer; the charge may or may not have happened. Retry with the same key."""


class GatewayTimeout(RetryableGatewayError):
    """No answer in time."""


class GatewayBusy(RetryableGatewayError):
    """A request with this key is still in flight at the gateway (Stripe: 409 ``idempotency_error``)."""


class GatewayUnavailable(RetryableGatewayError):
    """The gateway failed (5xx), refused our credentials, or the tenant has none in production."""


class CredentialsRefused(GatewayUnavailable):
    """The gateway refused the tenant's credentials (Stripe 401/403): nothing the customer did."""


class RequestRefused(GatewayUnavailable):
    """The gateway refused our request as invalid (a 4xx other than a card's decline): a defect or a
    limit of ours, never the customer's decline. The attempt stays pending and an alarm goes off."""


class MockGateway:
    """In-memory gateway. Outcomes come from ``script(account, [...])``, then the default.

    A scripted ``"timeout"`` performs the charge and then loses the answer, the
    worst case a real network produces; the retry with the same key finds it. A
    scripted ``"busy"`` answers as Stripe does a concurrent request with the same
    key (409 ``idempotency_error``): nothing charged, try again. A scripted
    ``"requires_action"`` waits for the customer: ``complete(reference)`` is the
    customer authenticating it (then it is charged).
    """

    needs_payer = False
    remote = False  # answers in process: its charges are made inline (collection._charge_all)

    def __init__(self, default: str = "succeed", decline_percent: int = 0):
        self.default = default
        self.decline_percent = decline_percent
        self._scripts: dict[str, list[str]] = {}
        self._results: dict[str, PaymentResult] = {}
        self.charges: list[tuple[str, str, int, str]] = []  # (key, account, amount, currency) actually charged
        self.calls: list[str] = []  # the key of every call, answered or not
        self.refunds: list[tuple] = []  # (key, account, amount, currency, charge reference) actually refunded
        self.waiting: dict[str, tuple] = {}  # reference -> the charge that waits for the customer
        self._completed: set[str] = set()
        self._lock = threading.Lock()

    def script(self, account_id, outcomes: list[str]) -> None:
        self._scripts[str(account_id)] = list(outcomes)

    def charge(
        self, *, account_id, amount: int, currency: str, idempotency_key: str, payer=NO_PAYER, metadata=None
    ) -> PaymentResult:
        log.info("mock gateway: charge %s %s to %s (key %s)", amount, currency, account_id, idempotency_key)
        done = (idempotency_key, str(account_id), amount, currency)
        return self._answer(str(account_id), idempotency_key, "card_declined", "mock_", self.charges, done)

    def refund(
        self,
        *,
        account_id,
        amount: int,
        currency: str,
        idempotency_key: str,
        charge_reference: str | None,
        metadata=None,
        sent_before_s: int | None = None,
    ) -> PaymentResult:
        """Return ``amount`` of an earlier charge; scripted like a charge (``decline``: the refund failed)."""
        log.info("mock gateway: refund %s %s of %s (key %s)", amount, currency, charge_reference, idempotency_key)
        done = (idempotency_key, str(account_id), amount, currency, charge_reference)
        return self._answer(str(account_id), idempotency_key, "charge_already_refunded", "mock_re_", self.refunds, done)

    def _answer(self, account_id: str, key: str, decline_code: str, prefix: str, record: list, done: tuple):
        """One call under ``key``: the same answer for the same key, else the account's next scripted outcome
        (a success is appended to ``record``)."""
        with self._lock:
            self.calls.append(key)
            if key in self._results:
                return self._results[key]
            outcome = self._next_outcome(account_id)
            if outcome == "busy":  # another request with this key is in flight: nothing happened
                raise GatewayBusy(f"a request with key {key} is in progress")
            if outcome == "decline":
                result = PaymentResult("declined", decline_code=decline_code)
            elif outcome == "requires_action":
                result = PaymentResult("requires_action", f"{prefix}{key}", "authentication_required")
                self.waiting[result.reference] = done
            else:
                result = PaymentResult("succeeded", reference=f"{prefix}{key}")
                record.append(done)
            self._results[key] = result
        if outcome == "timeout":
            raise GatewayTimeout(f"no answer for {key}")
        return result

    def complete(self, reference: str) -> None:
        """The customer authenticates a waiting charge: it is charged."""
        with self._lock:
            self.charges.append(self.waiting.pop(reference))
            self._completed.add(reference)

    def withdraw(self, *, reference: str, idempotency_key: str) -> PaymentResult:
        """Cancel a charge that waits for the customer, unless they completed it (then: succeeded)."""
        with self._lock:
            self.calls.append(idempotency_key)
            if reference in self._completed:
                return PaymentResult("succeeded", reference=reference)
            self.waiting.pop(reference, None)
            return PaymentResult("canceled", reference=reference)

    def _next_outcome(self, account_id: str) -> str:
        script = self._scripts.get(account_id)
        if script:
            return script.pop(0)
        if (
            self.decline_percent
            and int(hashlib.sha256(account_id.encode()).hexdigest(), 16) % 100 < self.decline_percent
        ):
            return "decline"
        return self.default


_installed = None  # a gateway tests put in place of every tenant's
_mock = None


def installed():
    """The gateway installed for every tenant (tests), or None: each tenant's own (``gateways.of``)."""
    return _installed


def mock_gateway():
    """The process's one mock gateway (local runs), made from the settings on first use."""
    global _mock
    if _mock is None:
        settings = get_settings()
        _mock = MockGateway(settings.mock_payment_outcome, settings.mock_payment_decline_percent)
    return _mock


def set_gateway(gateway) -> None:
    """Install one gateway for every tenant (tests script the mock; None: each tenant's own again)."""
    global _installed
    _installed = gateway
