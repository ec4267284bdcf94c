"""A local stand-in for the part of the Stripe API this app uses, on 127.0.0.1, for the real ``stripe`` SDK.

It owns in-memory Stripe accounts (a secret key and a webhook secret each) with their customers, setup
intents, payment methods, payment intents, charges, refunds, disputes and events, behind one lock. It
speaks Stripe's wire format: form-encoded requests with nested keys, JSON objects, Stripe's error bodies
and statuses, a Request-Id on every answer, idempotency keys (in progress -> 409, a finished key replays
its answer, reuse with other parameters -> 400) and signed webhooks. Stripe's test tokens (pm_card_visa,
pm_card_chargeDeclined, ...) decide outcomes as in test mode; script() and fail_next() add what no card
can (busy, 5xx, a slow answer). ``latency_seconds`` holds every API answer as long as Stripe's network and
work take (0 by default), and ``most_in_flight`` counts the most API requests it was answering at once.
The /_standin/... routes expose the control methods over HTTP.

Deliberately left out: minimum and maximum amounts, currency checks beyond three letters, manual capture,
asynchronous payment methods, API versions, rate limits, Connect, and pagination beyond limit and
starting_after. A parameter it does not model is refused as Stripe refuses an unknown one, so nothing is
silently ignored. Saving a card always succeeds (a declining card can be saved, then charged), and 5xx
answers are never stored under an idempotency key, so a retry runs for real.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import hmac
import json
import logging
import re
import secrets
import string
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOG = logging.getLogger("devtools.stripe_standin")
API_VERSION = "2026-10-28.endive"
Json = dict[str, Any]
TEST_CARDS = {  # Stripe's test tokens: token -> (brand, last4, what charging the card does)
    "pm_card_visa": ("visa", "4242", "succeed"),
    "pm_card_mastercard": ("mastercard", "4444", "succeed"),
    "pm_card_chargeDeclined": ("visa", "0002", "decline"),
    "pm_card_chargeDeclinedInsufficientFunds": ("visa", "9995", "insufficient_funds"),
    "pm_card_authenticationRequired": ("visa", "3184", "requires_action"),
    "pm_card_createDispute": ("visa", "0259", "dispute"),
    "pm_card_standin_timeout": ("visa", "0077", "timeout"),  # the stand-in's own: answered slow_seconds late
}
_3DS = "This transaction requires authentication."
SCRIPTED_OUTCOMES = ("succeed", "decline", "requires_action", "timeout", "busy", "error")
DECLINES = {  # kind -> (code, decline_code, message)
    "decline": ("card_declined", "generic_decline", "Your card was declined."),
    "insufficient_funds": ("card_declined", "insufficient_funds", "Your card has insufficient funds."),
    "requires_action": ("authentication_required", "authentication_required", "Your card was declined. " + _3DS),
}
KINDS = ("customer", "setup_intent", "payment_method", "payment_intent", "charge", "refund", "dispute", "event")
COLLECTIONS = {kind + "s": kind for kind in KINDS}
_COLLECTION = "(" + "|".join(COLLECTIONS) + ")"
CANCELABLE = ("requires_payment_method", "requires_capture", "requires_confirmation", "requires_action", "processing")
CONFIRMABLE = ("requires_payment_method", "requires_confirmation")
IN_USE = (
    "There is currently another in-progress request using this Stripe API key (that also used this idempotency "
    "key), which means you made two concurrent requests with the same idempotency key."
)
REUSED = "Keys for idempotent requests can only be used with the same parameters they were first used with. Key: "
API_ERROR: Json = {"type": "api_error", "message": "An unknown error occurred while processing your request."}
_CONFIRM = " payment_method off_session return_url"
_OBJECT = " metadata description"
ROUTES = [  # (method, path, handler, the parameters it takes besides expand[])
    ("GET", r"/v1/account", "_get_account", ""),
    ("POST", r"/v1/customers", "_create_customer", "email name" + _OBJECT),
    ("POST", r"/v1/customers/([^/]+)", "_update_customer", "email name invoice_settings" + _OBJECT),
    ("POST", r"/v1/setup_intents", "_create_setup_intent", "customer usage payment_method_types" + _OBJECT),
    ("POST", r"/v1/setup_intents/([^/]+)/confirm", "_confirm_setup_intent", "payment_method return_url"),
    ("POST", r"/v1/payment_intents", "_create_payment_intent", "amount currency customer confirm" + _CONFIRM + _OBJECT),
    ("POST", r"/v1/payment_intents/([^/]+)/confirm", "_confirm_payment_intent", _CONFIRM),
    ("POST", r"/v1/payment_intents/([^/]+)/cancel", "_cancel_payment_intent", "cancellation_reason"),
    ("POST", r"/v1/refunds", "_create_refund", "payment_intent charge amount reason metadata"),
    ("GET", "/v1/" + _COLLECTION, "_list", "customer payment_intent charge type limit starting_after"),
    ("GET", "/v1/" + _COLLECTION + "/([^/]+)", "_retrieve", ""),
]
_ALPHANUMERIC = string.ascii_letters + string.digits
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # webhooks go to 127.0.0.1, never a proxy


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "_" + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def secret_key_of(authorization: str) -> str:
    """The key of ``Bearer sk_...`` (the SDK) or ``Basic base64(sk_...:)`` (curl -u sk_...:), as Stripe takes both."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value).decode().partition(":")[0]
        except (ValueError, UnicodeDecodeError):
            return ""
    return value if scheme.lower() == "bearer" else ""


def signature_header(payload: bytes, secret: str) -> str:
    """Stripe-Signature for a webhook body: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<payload>" with the secret>."""
    t = int(time.time())
    return f"t={t},v1={hmac.new(secret.encode(), b'%d.%s' % (t, payload), hashlib.sha256).hexdigest()}"


def decode_form(text: str) -> Json:
    """Stripe's form encoding (a[b]=1, a[0]=x, a[]=x) as nested dicts and lists of strings."""
    root: Json = {}
    for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
        name, _, tail = key.partition("[")
        path = [name, *re.findall(r"([^\[\]]*)\]", "[" + tail)] if tail else [name]
        node = root
        for part in path[:-1]:
            node = node.setdefault(part or str(len(node)), {})
            if not isinstance(node, dict):
                raise invalid(f"Invalid array or hash for parameter: {key}", key)
        node[path[-1] or str(len(node))] = value
    return _listed(root)


def _listed(value: Any) -> Any:
    """Dicts keyed 0..n (Stripe's indexed arrays) as lists."""
    if not isinstance(value, dict):
        return value
    items = {key: _listed(item) for key, item in value.items()}
    if items and all(key.isdigit() for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items


class StripeFailure(Exception):
    """An answer in Stripe's error shape; `store`: may an idempotency key keep it (validation errors: no)."""

    def __init__(self, status: int, error: Json, store: bool = False) -> None:
        super().__init__(error["message"])
        self.status, self.error, self.store = status, error, store


class UnknownObject(KeyError):
    """A control operation named an id the stand-in does not hold (404 over HTTP)."""


def invalid(message: str, param: str | None = None, code: str | None = None, store: bool = False) -> StripeFailure:
    error = {"type": "invalid_request_error", "message": message, "param": param, "code": code}
    return StripeFailure(400, error, store)


def int_param(params: Json, name: str, default: int | None = None) -> int:
    """A positive integer parameter (amounts are minor units, taken as given)."""
    raw = params.get(name)
    if raw is None:
        if default is None:
            raise invalid(f"Missing required param: {name}.", name, "parameter_missing")
        return default
    if not (isinstance(raw, str) and raw.isdigit() and int(raw) > 0):
        raise invalid(f"Invalid {name}: {raw}. It must be an integer of at least 1.", name, "parameter_invalid_integer")
    return int(raw)


def currency_param(params: Json) -> str:
    raw = params.get("currency")
    if raw is None:
        raise invalid("Missing required param: currency.", "currency", "parameter_missing")
    if not (isinstance(raw, str) and re.fullmatch(r"[a-z]{3}", raw.lower())):
        raise invalid(f"Invalid currency: {raw}.", "currency", "parameter_invalid_string")
    return raw.lower()


def flag(params: Json, name: str) -> bool:
    """A boolean parameter; off_session also takes Stripe's "one_off" and "recurring"."""
    return params.get(name) in ("true", "one_off", "recurring")


def metadata(current: Json, params: Json) -> Json:
    """Stripe's metadata update: keys merge, an empty value removes its key, metadata="" clears all."""
    update = params.get("metadata", {})
    if not isinstance(update, dict):
        return {} if update == "" else current
    return {key: value for key, value in {**current, **update}.items() if value != ""}


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, body: Any, request_id: str) -> Reply:
    return Reply(status, json.dumps(body).encode(), {"Request-Id": request_id, "Stripe-Version": API_VERSION})


def error_reply(status: int, error: Json, request_id: str) -> Reply:
    shown = {key: value for key, value in error.items() if value is not None}
    shown["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
    return json_reply(status, {"error": shown}, request_id)


@dataclass
class KeyRecord:
    fingerprint: str
    request_id: str
    reply: Reply | None = None  # None while the first request with the key is in progress


@dataclass
class Account:
    id: str
    secret_key: str
    webhook_secret: str
    webhook_url: str | None
    objects: dict[str, Json] = field(default_factory=dict)  # every object by id, in creation order
    keys: dict[str, KeyRecord] = field(default_factory=dict)


@dataclass
class Call:
    """One API request: whose it is, what its events record, and how long its answer is held."""

    account: Account
    request_id: str | None = None
    idempotency_key: str | None = None
    hold_seconds: float = 0.0


class StripeStandin:
    """In-memory Stripe accounts behind Stripe's HTTP API; the module docstring says which subset."""

    def __init__(self) -> None:
        self.slow_seconds = 3.0  # how long a "timeout" outcome holds its answer
        self.latency_seconds = 0.0  # how long every API request takes before it is answered
        self.most_in_flight = 0  # the most API requests being answered at once (set it to 0 to count afresh)
        self._in_flight = 0
        self.refunds_pending = False  # new refunds start "pending" (settle_refund settles one later)
        self._lock = threading.Lock()
        self._accounts: dict[str, Account] = {}
        self._by_secret_key: dict[str, Account] = {}
        self._owner: dict[str, Account] = {}  # object id -> its account
        self._behaviour: dict[str, str] = {}  # payment method id -> what charging its card does
        self._scripts: dict[str, list[str]] = {}  # customer id -> its next confirmations' outcomes
        self._failures: list[int] = []  # statuses the next API requests answer
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stand-in is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self, port: int = 0) -> str:
        self._server = ThreadingHTTPServer(("127.0.0.1", port), type("Handler", (_Handler,), {"standin": self}))
        threading.Thread(target=self._server.serve_forever, name="stripe-standin", daemon=True).start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- control: what tests and `make run` do that Stripe's API cannot -------------------------

    def create_account(self, webhook_url: str | None = None) -> Json:
        account = Account(new_id("acct", 16), new_id("sk_test"), new_id("whsec", 32), webhook_url)
        with self._lock:
            self._accounts[account.id] = self._by_secret_key[account.secret_key] = account
        return {"id": account.id, "secret_key": account.secret_key, "webhook_secret": account.webhook_secret}

    def set_webhook_url(self, account_id: str, url: str | None) -> None:
        with self._lock:
            self._account(account_id).webhook_url = url

    def payment_intents(self, account_id: str) -> list[Json]:
        return self._objects(account_id, "payment_intent")

    def refunds(self, account_id: str) -> list[Json]:
        return self._objects(account_id, "refund")

    def events(self, account_id: str) -> list[Json]:
        return self._objects(account_id, "event")

    def signed(self, account_id: str, event: Json) -> tuple[bytes, str]:
        """(raw JSON payload, Stripe-Signature header) as a webhook delivery would carry them now."""
        with self._lock:
            secret = self._account(account_id).webhook_secret
        payload = json.dumps(event).encode()
        return payload, signature_header(payload, secret)

    def script(self, customer_id: str, outcomes: list[str]) -> None:
        if not set(outcomes) <= set(SCRIPTED_OUTCOMES):
            raise ValueError(f"outcomes are {SCRIPTED_OUTCOMES}, not {outcomes}")
        with self._lock:
            self._owned(customer_id, "customer")
            self._scripts.setdefault(customer_id, []).extend(outcomes)

    def authenticate(self, payment_intent_id: str, succeed: bool = True) -> Json:
        """The customer completes (or fails) 3-D Secure on a PaymentIntent in requires_action."""
        with self._lock:
            account, intent = self._owned(payment_intent_id, "payment_intent")
            if intent["status"] != "requires_action":
                raise ValueError(f"{payment_intent_id} is {intent['status']}, not requires_action")
            call, method = Call(account), account.objects[intent["payment_method"]]
            if succeed:
                self._succeed(call, intent, method)
            else:
                message = "The provided PaymentMethod has failed authentication. Provide a new one."
                error = {"type": "invalid_request_error", "code": "payment_intent_authentication_failure"}
                error.update(message=message, payment_method=copy.deepcopy(method))
                intent.update(status="requires_payment_method", next_action=None, last_payment_error=error)
                intent["payment_method"] = None
                self._emit(call, "payment_intent.payment_failed", intent)
            return copy.deepcopy(intent)

    def dispute(self, charge_id: str) -> Json:
        with self._lock:
            account, charge = self._owned(charge_id, "charge")
            if charge["status"] != "succeeded" or charge["disputed"]:
                raise ValueError(f"{charge_id} cannot be disputed")
            return copy.deepcopy(self._open_dispute(Call(account), charge))

    def close_dispute(self, dispute_id: str, status: str) -> Json:
        if status not in ("won", "lost"):
            raise ValueError("a dispute closes as won or lost")
        with self._lock:
            account, found = self._owned(dispute_id, "dispute")
            if found["status"] in ("won", "lost"):
                raise ValueError(f"{dispute_id} is already {found['status']}")
            found["status"] = status
            self._emit(Call(account), "charge.dispute.closed", found)
            if status == "won":  # the money comes back to the merchant's balance
                self._emit(Call(account), "charge.dispute.funds_reinstated", found)
            return copy.deepcopy(found)

    def settle_refund(self, refund_id: str, status: str = "succeeded") -> Json:
        """Stripe's later word on a refund: a pending one succeeds or fails; a succeeded one may still fail
        (an expired or closed card). Emits refund.updated, or refund.failed."""
        if status not in ("succeeded", "failed"):
            raise ValueError("a refund settles as succeeded or failed")
        with self._lock:
            account, refund = self._owned(refund_id, "refund")
            refund["status"] = status
            refund["failure_reason"] = "expired_or_canceled_card" if status == "failed" else None
            self._emit(Call(account), "refund.failed" if status == "failed" else "refund.updated", refund)
            return copy.deepcopy(refund)

    def expire_keys(self, account_id: str) -> None:
        """What 24 hours do at Stripe: every idempotency key of the account is forgotten."""
        with self._lock:
            account = self._account(account_id)
            account.keys = {k: r for k, r in account.keys.items() if r.reply is None}

    def fail_next(self, count: int, status: int = 500) -> None:
        if not 500 <= status <= 599:
            raise ValueError("fail_next takes a 5xx status")
        with self._lock:
            self._failures.extend([status] * count)

    def _account(self, account_id: str) -> Account:
        if account_id not in self._accounts:
            raise UnknownObject(f"no such account: {account_id}")
        return self._accounts[account_id]

    def _objects(self, account_id: str, kind: str) -> list[Json]:
        with self._lock:
            return copy.deepcopy([o for o in self._account(account_id).objects.values() if o["object"] == kind])

    def _owned(self, object_id: str, kind: str) -> tuple[Account, Json]:
        account = self._owner.get(object_id)
        if account is None or account.objects[object_id]["object"] != kind:
            raise UnknownObject(f"no such {kind}: {object_id}")
        return account, account.objects[object_id]

    # --- serving ----------------------------------------------------------------------------------

    def serve_api(self, method: str, path: str, params: Json, headers: dict[str, str]) -> Reply:
        """One /v1 request, counted in flight while it is answered, after ``latency_seconds``."""
        with self._lock:
            self._in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)
        try:
            if self.latency_seconds:
                time.sleep(self.latency_seconds)
            return self._serve_api(method, path, params, headers)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _serve_api(self, method: str, path: str, params: Json, headers: dict[str, str]) -> Reply:
        """An injected failure, then the API key, the idempotency key and the operation."""
        request_id = new_id("req", 14)
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
            account = self._by_secret_key.get(secret_key_of(headers.get("authorization", "")))
        if failure is not None:
            return error_reply(failure, API_ERROR, request_id)
        if account is None:
            return error_reply(401, self._unauthorized(headers.get("authorization", "")), request_id)
        key = headers.get("idempotency-key") if method == "POST" else None
        call = Call(account, request_id, key)
        early = self._claim_key(call, json.dumps([method, path, params], sort_keys=True)) if key else None
        if early is not None:
            return early
        reply, keep = self._execute(call, method, path, params)
        if call.hold_seconds:
            time.sleep(call.hold_seconds)  # Stripe is "still working": the key stays in progress meanwhile
        if key:
            self._settle_key(call, reply if keep else None)
        return reply

    @staticmethod
    def _unauthorized(authorization: str) -> Json:
        key = authorization.removeprefix("Bearer ").strip()
        if not key:
            return {"type": "invalid_request_error", "message": "You did not provide an API key."}
        return {"type": "invalid_request_error", "message": f"Invalid API Key provided: {key[:8]}****{key[-4:]}"}

    def _claim_key(self, call: Call, fingerprint: str) -> Reply | None:
        """None if the request may run; else Stripe's answer for its key (400 reused, 409 in use, or the replay)."""
        key, request_id = call.idempotency_key or "", call.request_id or ""
        with self._lock:
            record = call.account.keys.setdefault(key, KeyRecord(fingerprint, request_id))
            stored = record.reply
        if record.request_id == request_id:  # the key was free: this request now holds it
            return None
        if record.fingerprint != fingerprint:
            return error_reply(400, {"type": "idempotency_error", "message": REUSED + key}, request_id)
        if stored is None:
            error = {"type": "idempotency_error", "code": "idempotency_key_in_use", "message": IN_USE}
            return error_reply(409, error, request_id)
        headers = {**stored.headers, "Request-Id": request_id, "Original-Request": record.request_id}
        return Reply(stored.status, stored.body, {**headers, "Idempotent-Replayed": "true"})

    def _settle_key(self, call: Call, reply: Reply | None) -> None:
        with self._lock:
            if reply is None:
                del call.account.keys[call.idempotency_key or ""]
            else:
                call.account.keys[call.idempotency_key or ""].reply = reply

    def _execute(self, call: Call, method: str, path: str, params: Json) -> tuple[Reply, bool]:
        """(answer, may an idempotency key keep it); the operation runs under the lock."""
        request_id = call.request_id or ""
        with self._lock:
            try:
                handler, args = self._handler(method, path, params)
                body = copy.deepcopy(handler(call, params, *args))
                expand = params.get("expand", [])
                for expansion in [expand] if isinstance(expand, str) else expand:
                    self._expand(call.account, body, expansion)
                return json_reply(200, body, request_id), True
            except StripeFailure as failure:
                return error_reply(failure.status, failure.error, request_id), failure.store
            except Exception:
                LOG.exception("the stand-in failed on %s %s", method, path)
                return error_reply(500, API_ERROR, request_id), False

    def _handler(self, method: str, path: str, params: Json) -> tuple[Callable[..., Json], tuple[str, ...]]:
        for verb, pattern, name, allowed in ROUTES:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                unknown = sorted(set(params) - set(allowed.split()) - {"expand"})
                if unknown:
                    raise invalid(f"Received unknown parameter: {unknown[0]}", unknown[0])
                return getattr(self, name), match.groups()
        failure = invalid(f"Unrecognized request URL ({method}: {path}).")
        failure.status = 404
        raise failure

    def _expand(self, account: Account, obj: Json, path: str) -> None:
        """Stripe's expand[]: an id at `path` (dots for nesting, data.x in lists) becomes its object."""
        head, _, rest = path.partition(".")
        if head == "data" and obj.get("object") == "list":
            for item in obj["data"]:
                self._expand(account, item, rest)
            return
        value = obj.get(head)
        if isinstance(value, str) and value in account.objects:
            value = obj[head] = copy.deepcopy(account.objects[value])
        if rest and isinstance(value, dict):
            self._expand(account, value, rest)

    def serve_control(self, method: str, path: str, raw: bytes) -> Reply:
        """A /_standin operation with a JSON body: 404 for an unknown id, 400 for a bad request."""
        request_id = new_id("req", 14)
        try:
            body = json.loads(raw or b"{}")
            for verb, pattern, operation in CONTROL_ROUTES:
                match = re.fullmatch(pattern, path)
                if verb == method and match:
                    result = operation(self, body, *match.groups())
                    return json_reply(200, {"data": result} if isinstance(result, list) else result or {}, request_id)
            return json_reply(404, {"error": f"no stand-in operation {method} {path}"}, request_id)
        except UnknownObject as exc:
            return json_reply(404, {"error": exc.args[0]}, request_id)
        except (KeyError, ValueError, TypeError) as exc:
            return json_reply(400, {"error": f"{type(exc).__name__}: {exc}"}, request_id)

    # --- Stripe objects ---------------------------------------------------------------------------

    def _add(self, account: Account, prefix: str, fields: Json) -> Json:
        obj = {"id": new_id(prefix), **fields, "created": int(time.time()), "livemode": False}
        account.objects[obj["id"]] = obj
        self._owner[obj["id"]] = account
        return obj

    def _find(self, account: Account, object_id: Any, kind: str, param: str | None = None) -> Json:
        """An object of this account: 404 when its id came in the path, 400 when it came as `param`."""
        found = account.objects.get(object_id) if isinstance(object_id, str) else None
        if found is None or found["object"] != kind:
            failure = invalid(f"No such {kind}: '{object_id}'", param or "id", "resource_missing")
            failure.status = 400 if param else 404
            raise failure
        return found

    def _emit(self, call: Call, kind: str, obj: Json) -> None:
        account = call.account
        event = self._add(account, "evt", {"object": "event", "api_version": API_VERSION, "type": kind})
        event.update(data={"object": copy.deepcopy(obj)}, pending_webhooks=1 if account.webhook_url else 0)
        event["request"] = {"id": call.request_id, "idempotency_key": call.idempotency_key}
        if account.webhook_url:
            delivery = (account.webhook_url, account.webhook_secret, json.dumps(event).encode())
            threading.Thread(target=deliver_webhook, args=delivery, name=event["id"], daemon=True).start()

    def _get_account(self, call: Call, params: Json) -> Json:
        account = {"id": call.account.id, "object": "account", "email": None, "country": "US", "type": "standard"}
        account.update(default_currency="usd", charges_enabled=True, payouts_enabled=True, details_submitted=True)
        return account

    def _create_customer(self, call: Call, params: Json) -> Json:
        fields = {"object": "customer", "email": None, "name": None, "description": None, "metadata": {}}
        customer = self._add(call.account, "cus", {**fields, "balance": 0, "currency": None, "delinquent": False})
        customer["invoice_settings"] = {"default_payment_method": None}
        self._emit(call, "customer.created", self._apply_customer(call, customer, params))
        return customer

    def _update_customer(self, call: Call, params: Json, customer_id: str) -> Json:
        customer = self._apply_customer(call, self._find(call.account, customer_id, "customer"), params)
        self._emit(call, "customer.updated", customer)
        return customer

    def _apply_customer(self, call: Call, customer: Json, params: Json) -> Json:
        default = (params.get("invoice_settings") or {}).get("default_payment_method")
        param = "invoice_settings[default_payment_method]"
        if default and self._find(call.account, default, "payment_method", param)["customer"] != customer["id"]:
            raise invalid(f"The customer does not have a payment method with the ID {default}.", param)
        if default is not None:
            customer["invoice_settings"]["default_payment_method"] = default or None
        customer.update({name: params[name] for name in ("email", "name", "description") if name in params})
        customer["metadata"] = metadata(customer["metadata"], params)
        return customer

    def _behaviour_of(self, call: Call, method_id: Any) -> str:
        """What charging this payment method (a test token or a pm_ of this account) does."""
        if method_id in TEST_CARDS:
            return TEST_CARDS[method_id][2]
        return self._behaviour[self._find(call.account, method_id, "payment_method", "payment_method")["id"]]

    def _payment_method(self, call: Call, method_id: str, customer: str | None = None) -> Json:
        """The payment method to use: a test token becomes a new pm_, as in Stripe; attached if `customer`."""
        if method_id in TEST_CARDS:
            brand, last4, behaviour = TEST_CARDS[method_id]
            card = {"brand": brand, "last4": last4, "exp_month": 12, "exp_year": time.gmtime().tm_year + 3}
            card.update(country="US", funding="credit")
            fields = {"object": "payment_method", "type": "card", "card": card, "customer": None, "metadata": {}}
            method = self._add(call.account, "pm", fields)
            self._behaviour[method["id"]] = behaviour
        else:
            method = self._find(call.account, method_id, "payment_method", "payment_method")
        if customer and method["customer"] != customer:
            method["customer"] = customer
            self._emit(call, "payment_method.attached", method)
        return method

    def _create_setup_intent(self, call: Call, params: Json) -> Json:
        customer = params.get("customer")
        if customer is not None:
            self._find(call.account, customer, "customer", "customer")
        fields = {"object": "setup_intent", "customer": customer, "usage": params.get("usage", "off_session")}
        fields.update(payment_method_types=params.get("payment_method_types", ["card"]), payment_method=None)
        fields.update(status="requires_payment_method", description=params.get("description"), next_action=None)
        intent = self._add(call.account, "seti", {**fields, "metadata": metadata({}, params), "last_setup_error": None})
        intent["client_secret"] = f"{intent['id']}_secret_{new_id('x')[2:]}"
        return intent

    def _confirm_setup_intent(self, call: Call, params: Json, intent_id: str) -> Json:
        intent = self._find(call.account, intent_id, "setup_intent")
        if intent["status"] not in CONFIRMABLE:
            message = f"You cannot confirm this SetupIntent because it has a status of {intent['status']}."
            failure = invalid(message, None, "setup_intent_unexpected_state", store=True)
            failure.error["setup_intent"] = copy.deepcopy(intent)
            raise failure
        if not params.get("payment_method"):
            raise invalid("Missing required param: payment_method.", "payment_method", "parameter_missing")
        self._behaviour_of(call, params["payment_method"])
        method = self._payment_method(call, params["payment_method"], intent["customer"])
        intent.update(status="succeeded", payment_method=method["id"])
        self._emit(call, "setup_intent.succeeded", intent)
        return intent

    def _create_payment_intent(self, call: Call, params: Json) -> Json:
        amount, currency, customer = int_param(params, "amount"), currency_param(params), params.get("customer")
        if customer is not None:
            self._find(call.account, customer, "customer", "customer")
        method_id, confirm = params.get("payment_method"), flag(params, "confirm")
        if confirm and not method_id:
            message = "You cannot confirm this PaymentIntent because it's missing a payment method."
            raise invalid(message, "payment_method", "payment_intent_unexpected_state")
        outcome = self._next_outcome(customer, self._behaviour_of(call, method_id)) if confirm else ""
        method = self._payment_method(call, method_id) if method_id else None
        fields = {"object": "payment_intent", "amount": amount, "amount_capturable": 0, "amount_received": 0}
        fields.update(currency=currency, customer=customer, description=params.get("description"))
        fields.update(payment_method_types=params.get("payment_method_types", ["card"]), capture_method="automatic")
        fields.update(metadata=metadata({}, params), payment_method=method["id"] if method else None)
        fields.update(status="requires_confirmation" if method else "requires_payment_method", latest_charge=None)
        fields.update(last_payment_error=None, next_action=None, canceled_at=None, cancellation_reason=None)
        intent = self._add(call.account, "pi", fields)
        intent["client_secret"] = f"{intent['id']}_secret_{new_id('x')[2:]}"
        self._emit(call, "payment_intent.created", intent)
        if method is not None and confirm:
            self._settle(call, intent, method, outcome, flag(params, "off_session"))
        return intent

    def _confirm_payment_intent(self, call: Call, params: Json, intent_id: str) -> Json:
        intent = self._find(call.account, intent_id, "payment_intent")
        if intent["status"] not in CONFIRMABLE:
            message = f"You cannot confirm this PaymentIntent because it has a status of {intent['status']}."
            raise self._unexpected_state(intent, message)
        method_id = params.get("payment_method") or intent["payment_method"]
        if not method_id:
            message = "You cannot confirm this PaymentIntent because it's missing a payment method."
            raise invalid(message, "payment_method", "payment_intent_unexpected_state")
        outcome = self._next_outcome(intent["customer"], self._behaviour_of(call, method_id))
        method = self._payment_method(call, method_id)
        self._settle(call, intent, method, outcome, flag(params, "off_session"))
        return intent

    def _cancel_payment_intent(self, call: Call, params: Json, intent_id: str) -> Json:
        intent = self._find(call.account, intent_id, "payment_intent")
        if intent["status"] not in CANCELABLE:
            message = f"You cannot cancel this PaymentIntent because it has a status of {intent['status']}. "
            raise self._unexpected_state(intent, message + f"Only one of {', '.join(CANCELABLE)} may be canceled.")
        intent.update(status="canceled", canceled_at=int(time.time()), next_action=None)
        intent["cancellation_reason"] = params.get("cancellation_reason")
        self._emit(call, "payment_intent.canceled", intent)
        return intent

    @staticmethod
    def _unexpected_state(intent: Json, message: str) -> StripeFailure:
        failure = invalid(message, None, "payment_intent_unexpected_state", store=True)
        failure.error["payment_intent"] = copy.deepcopy(intent)
        return failure

    def _next_outcome(self, customer: str | None, behaviour: str) -> str:
        """The customer's next scripted outcome if one is queued, else the card's; busy and error refuse at once."""
        queue = self._scripts.get(customer or "")
        outcome = queue.pop(0) if queue else behaviour
        if outcome == "busy":
            error = {"type": "idempotency_error", "code": "idempotency_key_in_use", "message": IN_USE}
            raise StripeFailure(409, error)
        if outcome == "error":
            raise StripeFailure(500, API_ERROR)
        return outcome

    def _settle(self, call: Call, intent: Json, method: Json, outcome: str, off_session: bool) -> None:
        """A confirmation's outcome on the PaymentIntent; a decline raises Stripe's 402."""
        intent["payment_method"] = method["id"]
        if outcome == "requires_action" and not off_session:
            next_action = {"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect"}}
            intent.update(status="requires_action", next_action=next_action)
            self._emit(call, "payment_intent.requires_action", intent)
        elif outcome in DECLINES:
            self._decline(call, intent, method, outcome)
        else:
            charge = self._succeed(call, intent, method)
            call.hold_seconds = self.slow_seconds if outcome == "timeout" else 0.0
            if outcome == "dispute":
                self._open_dispute(call, charge)

    def _charge(self, call: Call, intent: Json, method: Json, failure: tuple[str, str] | None) -> Json:
        paid = failure is None
        fields = {name: intent[name] for name in ("amount", "currency", "customer", "description", "metadata")}
        fields.update(object="charge", amount_captured=intent["amount"] if paid else 0, amount_refunded=0)
        fields.update(payment_intent=intent["id"], payment_method=method["id"], refunded=False, disputed=False)
        fields.update(status="succeeded" if paid else "failed", paid=paid, captured=paid)
        fields.update(failure_code=failure and failure[0], failure_message=failure and failure[1])
        fields["payment_method_details"] = {"type": "card", "card": dict(method["card"])}
        charge = self._add(call.account, "ch", copy.deepcopy(fields))
        refunds_url = f"/v1/charges/{charge['id']}/refunds"
        charge["refunds"] = {"object": "list", "data": [], "has_more": False, "url": refunds_url}
        self._emit(call, "charge.succeeded" if paid else "charge.failed", charge)
        return charge

    def _succeed(self, call: Call, intent: Json, method: Json) -> Json:
        charge = self._charge(call, intent, method, None)
        intent.update(status="succeeded", amount_received=intent["amount"], latest_charge=charge["id"])
        intent.update(last_payment_error=None, next_action=None, payment_method=method["id"])
        self._emit(call, "payment_intent.succeeded", intent)
        return charge

    def _decline(self, call: Call, intent: Json, method: Json, kind: str) -> None:
        code, decline_code, message = DECLINES[kind]
        charge = self._charge(call, intent, method, (code, message))
        error = {"type": "card_error", "code": code, "decline_code": decline_code, "message": message}
        error.update(charge=charge["id"], payment_method=copy.deepcopy(method))
        error["doc_url"] = "https://stripe.com/docs/error-codes/" + code.replace("_", "-")
        intent.update(status="requires_payment_method", latest_charge=charge["id"], payment_method=None)
        intent["last_payment_error"] = error
        self._emit(call, "payment_intent.payment_failed", intent)
        raise StripeFailure(402, {**error, "payment_intent": copy.deepcopy(intent)}, store=True)

    def _open_dispute(self, call: Call, charge: Json) -> Json:
        fields = {"object": "dispute", "amount": charge["amount"], "currency": charge["currency"], "metadata": {}}
        fields.update(charge=charge["id"], payment_intent=charge["payment_intent"], is_charge_refundable=False)
        fields.update(status="needs_response", reason="fraudulent")
        fields["evidence_details"] = {"due_by": int(time.time()) + 7 * 86400, "has_evidence": False}
        dispute = self._add(call.account, "dp", fields)
        charge["disputed"] = True
        self._emit(call, "charge.dispute.created", dispute)
        self._emit(call, "charge.dispute.funds_withdrawn", dispute)  # not an inquiry: the money leaves at once
        return dispute

    def _create_refund(self, call: Call, params: Json) -> Json:
        charge = self._refundable_charge(call, params)
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining <= 0:
            raise invalid(f"Charge {charge['id']} has already been refunded.", None, "charge_already_refunded", True)
        amount = int_param(params, "amount", remaining)
        if amount > remaining:
            message = f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})"
            raise invalid(message, "amount", "amount_too_large", store=True)
        if params.get("reason") not in (None, "duplicate", "fraudulent", "requested_by_customer"):
            raise invalid(f"Invalid reason: {params['reason']}", "reason")
        status = "pending" if self.refunds_pending else "succeeded"  # Stripe holds some (a short balance)
        fields = {"object": "refund", "amount": amount, "currency": charge["currency"], "status": status}
        fields.update(charge=charge["id"], payment_intent=charge["payment_intent"], reason=params.get("reason"))
        refund = self._add(call.account, "re", {**fields, "metadata": metadata({}, params)})
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        charge["refunds"]["data"].insert(0, copy.deepcopy(refund))
        self._emit(call, "charge.refunded", charge)
        self._emit(call, "refund.created", refund)
        return refund

    def _refundable_charge(self, call: Call, params: Json) -> Json:
        if params.get("charge"):
            param, charge = "charge", self._find(call.account, params["charge"], "charge", "charge")
        elif params.get("payment_intent"):
            intent = self._find(call.account, params["payment_intent"], "payment_intent", "payment_intent")
            param, charge = "payment_intent", call.account.objects.get(intent["latest_charge"] or "")
        else:
            message = "One of the following params should be provided for this request: payment_intent or charge."
            raise invalid(message, None, "parameter_missing")
        if charge is None or charge["status"] != "succeeded":
            raise invalid(f"This {param} does not have a successful charge to refund.", param, store=True)
        return charge

    def _retrieve(self, call: Call, params: Json, collection: str, object_id: str) -> Json:
        if collection == "payment_methods" and object_id in TEST_CARDS:
            return self._payment_method(call, object_id)
        return self._find(call.account, object_id, COLLECTIONS[collection])

    def _list(self, call: Call, params: Json, collection: str) -> Json:
        """Stripe's list shape, newest first, filtered by the ids or event type given."""
        filters = {name: params[name] for name in ("customer", "payment_intent", "charge", "type") if name in params}
        items = [o for o in reversed(call.account.objects.values()) if o["object"] == COLLECTIONS[collection]]
        items = [o for o in items if all(o.get(name) == value for name, value in filters.items())]
        ids = [o["id"] for o in items]
        if params.get("starting_after") in ids:
            items = items[ids.index(params["starting_after"]) + 1 :]
        limit = min(int_param(params, "limit", 10), 100)
        return {"object": "list", "data": items[:limit], "has_more": len(items) > limit, "url": f"/v1/{collection}"}


def deliver_webhook(url: str, secret: str, payload: bytes) -> None:
    """POST one event as Stripe does; a failed delivery is logged and dropped (Stripe would retry later)."""
    headers = {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": signature_header(payload, secret)}
    request = urllib.request.Request(url, data=payload, headers=headers, method="POST")
    try:
        with _DIRECT.open(request, timeout=5) as response:
            response.read()
    except (OSError, ValueError) as exc:
        LOG.warning("webhook delivery to %s failed: %s", url, exc)


CONTROL_ROUTES: list[tuple[str, str, Callable[..., Any]]] = [  # (method, path, operation(standin, body, *ids))
    ("POST", r"/_standin/accounts", lambda s, b: s.create_account(b.get("webhook_url"))),
    ("POST", r"/_standin/accounts/([^/]+)/webhook_url", lambda s, b, a: s.set_webhook_url(a, b.get("url"))),
    ("GET", r"/_standin/accounts/([^/]+)/(payment_intents|refunds|events)", lambda s, b, a, k: getattr(s, k)(a)),
    ("POST", r"/_standin/script", lambda s, b: s.script(b["customer"], list(b["outcomes"]))),
    ("POST", r"/_standin/payment_intents/([^/]+)/authenticate", lambda s, b, i: s.authenticate(i, b.get("succeed", 1))),
    ("POST", r"/_standin/charges/([^/]+)/dispute", lambda s, b, c: s.dispute(c)),
    ("POST", r"/_standin/disputes/([^/]+)/close", lambda s, b, d: s.close_dispute(d, b["status"])),
    ("POST", r"/_standin/fail_next", lambda s, b: s.fail_next(int(b["count"]), int(b.get("status", 500)))),
    ("POST", r"/_standin/slow_seconds", lambda s, b: setattr(s, "slow_seconds", float(b["seconds"]))),
]


class _Handler(BaseHTTPRequestHandler):
    standin: StripeStandin  # set on the subclass start() builds

    def do_GET(self) -> None:
        self._answer(self._dispatch("GET"))

    def do_POST(self) -> None:
        self._answer(self._dispatch("POST"))

    def _dispatch(self, method: str) -> Reply:
        url = urllib.parse.urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if url.path.startswith("/_standin/"):
            return self.standin.serve_control(method, url.path, raw)
        try:
            params = decode_form(raw.decode() if method == "POST" else url.query)
        except StripeFailure as failure:
            return error_reply(failure.status, failure.error, new_id("req", 14))
        headers = {name.lower(): value for name, value in self.headers.items()}
        return self.standin.serve_api(method, url.path, params, headers)

    def _answer(self, reply: Reply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            LOG.debug("the client left before its answer (it timed out)")

    def log_message(self, fmt: str, *args: Any) -> None:
        LOG.debug(fmt, *args)


def main(argv: list[str] | None = None) -> None:
    """Serve in the foreground until Ctrl-C: python -m devtools.stripe_standin --port 12111."""
    parser = argparse.ArgumentParser(description="A local Stripe stand-in on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--slow-seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    standin = StripeStandin()
    standin.slow_seconds = args.slow_seconds
    print(f"stripe stand-in: {standin.start(args.port)}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()


if __name__ == "__main__":
    main()
