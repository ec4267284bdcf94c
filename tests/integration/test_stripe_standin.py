"""The local Stripe stand-in, driven by the real ``stripe`` SDK exactly as the app drives it.

Each test gets its own stand-in account (its own secret key), so tests share one server but no state.
"""

import json
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe

from devtools.stripe_standin import StripeStandin

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def standin() -> Iterator[StripeStandin]:
    server = StripeStandin()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def account(standin: StripeStandin) -> Iterator[dict]:
    yield standin.create_account()
    standin.slow_seconds = 3.0


def client_for(standin: StripeStandin, secret_key: str, timeout: float = 5.0) -> stripe.StripeClient:
    bases = {"api": standin.url, "files": standin.url, "connect": standin.url}
    http = stripe.RequestsClient(timeout=timeout)
    return stripe.StripeClient(secret_key, base_addresses=bases, max_network_retries=0, http_client=http)  # type: ignore[arg-type]


@pytest.fixture
def client(standin: StripeStandin, account: dict) -> stripe.StripeClient:
    return client_for(standin, account["secret_key"])


@pytest.fixture
def customer(client: stripe.StripeClient) -> stripe.Customer:
    return client.v1.customers.create(params={"email": "bo@customer.test", "name": "Bo"})


def charge(client: stripe.StripeClient, customer: stripe.Customer, card: str, key: str, **extra: Any):
    params = {"amount": 1500, "currency": "usd", "customer": customer.id, "payment_method": card, "confirm": True}
    return client.v1.payment_intents.create(params={**params, **extra}, options={"idempotency_key": key})


def event_types(standin: StripeStandin, account: dict) -> list[str]:
    return [event["type"] for event in standin.events(account["id"])]


def http(standin: StripeStandin, method: str, path: str, body: bytes | None = None, **headers: str):
    """(status, headers, JSON body) of one raw request, for what the SDK does not show."""
    request = urllib.request.Request(standin.url + path, data=body, method=method, headers=headers)
    try:
        with DIRECT.open(request, timeout=5) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


def test_the_account_is_the_one_the_secret_key_belongs_to(client, account):
    found = client.v1.accounts.retrieve_current()

    assert (found.id, found.object, found.country, found.default_currency) == (account["id"], "account", "US", "usd")
    assert found.charges_enabled is True


def test_an_unknown_secret_key_is_refused_as_an_authentication_error(standin):
    with pytest.raises(stripe.AuthenticationError) as refused:
        client_for(standin, "sk_test_notarealkey1234").v1.accounts.retrieve_current()

    assert refused.value.http_status == 401
    assert "Invalid API Key provided: sk_test_****1234" in refused.value.user_message
    assert refused.value.request_id.startswith("req_")


def test_a_confirmed_setup_intent_saves_the_card_on_the_customer(standin, account, client, customer):
    intent = client.v1.setup_intents.create(params={"customer": customer.id, "metadata": {"account_id": "a-1"}})
    assert (intent.status, intent.usage) == ("requires_payment_method", "off_session")
    assert intent.metadata["account_id"] == "a-1"
    assert intent.client_secret.startswith(f"{intent.id}_secret_")

    confirmed = client.v1.setup_intents.confirm(intent.id, params={"payment_method": "pm_card_visa"})
    method = client.v1.payment_methods.retrieve(confirmed.payment_method)
    params = {"invoice_settings": {"default_payment_method": method.id}}
    updated = client.v1.customers.update(customer.id, params=params)

    assert confirmed.status == "succeeded" and method.id.startswith("pm_") and method.id != "pm_card_visa"
    assert (method.type, method.card.brand, method.card.last4, method.customer) == ("card", "visa", "4242", customer.id)
    assert updated.invoice_settings.default_payment_method == method.id
    succeeded = [e for e in standin.events(account["id"]) if e["type"] == "setup_intent.succeeded"]
    assert [e["data"]["object"]["id"] for e in succeeded] == [intent.id]


def test_a_default_payment_method_must_be_attached_to_the_customer(client, customer):
    params = {"invoice_settings": {"default_payment_method": "pm_nosuchmethod"}}
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.customers.update(customer.id, params=params)

    assert (refused.value.http_status, refused.value.code) == (400, "resource_missing")
    assert refused.value.param == "invoice_settings[default_payment_method]"


def test_a_good_card_succeeds_with_a_charge_and_the_events_name_the_request(standin, account, client, customer):
    intent = charge(client, customer, "pm_card_visa", "k-ok", off_session=True, metadata={"invoice_id": "inv-1"})

    assert (intent.status, intent.amount_received, intent.metadata["invoice_id"]) == ("succeeded", 1500, "inv-1")
    found = client.v1.charges.retrieve(intent.latest_charge)
    assert (found.amount, found.amount_refunded, found.paid, found.payment_intent) == (1500, 0, True, intent.id)
    events = standin.events(account["id"])
    succeeded = next(e for e in events if e["type"] == "payment_intent.succeeded")
    assert succeeded["request"]["idempotency_key"] == "k-ok" and succeeded["request"]["id"].startswith("req_")
    assert {"payment_intent.succeeded", "charge.succeeded"} <= set(event_types(standin, account))


def test_expand_replaces_an_id_with_its_object(client, customer):
    intent = charge(client, customer, "pm_card_mastercard", "k-expand", expand=["latest_charge"])

    assert intent.latest_charge.object == "charge"
    assert intent.latest_charge.payment_method_details.card.last4 == "4444"


@pytest.mark.parametrize(
    ("card", "decline_code"),
    [("pm_card_chargeDeclined", "generic_decline"), ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds")],
)
def test_a_declined_card_raises_a_card_error_carrying_the_payment_intent(
    standin, account, client, customer, card, decline_code
):
    with pytest.raises(stripe.CardError) as declined:
        charge(client, customer, card, f"k-{card}", off_session=True)

    error = declined.value.error
    assert (declined.value.http_status, declined.value.code, error.decline_code) == (402, "card_declined", decline_code)
    assert error.charge.startswith("ch_")
    assert error.payment_intent.status == "requires_payment_method"
    assert error.payment_intent.last_payment_error.decline_code == decline_code
    assert "payment_intent.payment_failed" in event_types(standin, account)


def test_an_off_session_charge_needing_authentication_is_declined_as_authentication_required(client, customer):
    with pytest.raises(stripe.CardError) as declined:
        charge(client, customer, "pm_card_authenticationRequired", "k-3ds-off", off_session=True)

    assert (declined.value.code, declined.value.error.decline_code) == ("authentication_required",) * 2
    assert declined.value.error.payment_intent.status == "requires_payment_method"


def test_an_on_session_charge_needing_authentication_waits_for_the_customer(standin, account, client, customer):
    intent = charge(client, customer, "pm_card_authenticationRequired", "k-3ds-on")
    assert (intent.status, intent.next_action.type) == ("requires_action", "use_stripe_sdk")
    assert "payment_intent.requires_action" in event_types(standin, account)

    standin.authenticate(intent.id)
    authenticated = client.v1.payment_intents.retrieve(intent.id)

    assert authenticated.status == "succeeded" and authenticated.latest_charge.startswith("ch_")
    assert event_types(standin, account)[-1] == "payment_intent.succeeded"


def test_a_failed_authentication_leaves_the_payment_intent_needing_a_payment_method(standin, account, client, customer):
    intent = charge(client, customer, "pm_card_authenticationRequired", "k-3ds-fail")

    failed = standin.authenticate(intent.id, succeed=False)

    assert failed["status"] == "requires_payment_method"
    assert failed["last_payment_error"]["code"] == "payment_intent_authentication_failure"
    assert event_types(standin, account)[-1] == "payment_intent.payment_failed"


def test_a_replayed_idempotency_key_returns_the_first_answer_and_charges_once(standin, account, client, customer):
    first = charge(client, customer, "pm_card_visa", "k-replay")
    again = charge(client, customer, "pm_card_visa", "k-replay")

    assert again.id == first.id and again.status == "succeeded"
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert [intent["id"] for intent in standin.payment_intents(account["id"])] == [first.id]


def test_a_replayed_decline_is_the_same_decline_and_charges_once(standin, account, client, customer):
    declines = []
    for _ in range(2):
        with pytest.raises(stripe.CardError) as declined:
            charge(client, customer, "pm_card_chargeDeclined", "k-declined")
        declines.append(declined.value)

    assert declines[0].error.payment_intent.id == declines[1].error.payment_intent.id
    assert declines[1].headers["idempotent-replayed"] == "true"
    assert len(standin.payment_intents(account["id"])) == 1


def test_reusing_an_idempotency_key_with_other_parameters_is_refused(standin, account, client, customer):
    charge(client, customer, "pm_card_visa", "k-reused")

    with pytest.raises(stripe.IdempotencyError) as refused:
        charge(client, customer, "pm_card_visa", "k-reused", amount=999)

    assert refused.value.http_status == 400
    assert "same parameters" in refused.value.user_message
    assert len(standin.payment_intents(account["id"])) == 1


def test_a_request_with_a_key_still_in_progress_gets_409_and_the_first_charges_once(standin, account, client, customer):
    standin.slow_seconds = 1.0
    answers: list = []
    first = threading.Thread(target=lambda: answers.append(charge(client, customer, "pm_card_standin_timeout", "k")))
    first.start()
    until(lambda: standin.payment_intents(account["id"]))

    # The SDK raises a 409 as APIError (only 400/404 idempotency errors become IdempotencyError).
    with pytest.raises(stripe.APIError) as busy:
        charge(client, customer, "pm_card_standin_timeout", "k")
    first.join()

    assert (busy.value.http_status, busy.value.error.type) == (409, "idempotency_error")
    assert busy.value.error.code == "idempotency_key_in_use"
    assert answers[0].status == "succeeded"
    assert [intent["id"] for intent in standin.payment_intents(account["id"])] == [answers[0].id]


def test_a_timed_out_charge_is_found_by_retrying_with_the_same_key(standin, account, customer):
    standin.slow_seconds = 0.8
    with pytest.raises(stripe.APIConnectionError):
        charge(client_for(standin, account["secret_key"], timeout=0.3), customer, "pm_card_standin_timeout", "k-slow")
    assert [intent["status"] for intent in standin.payment_intents(account["id"])] == ["succeeded"]

    client = client_for(standin, account["secret_key"])
    retried = retry_while_in_progress(lambda: charge(client, customer, "pm_card_standin_timeout", "k-slow"))

    assert retried.status == "succeeded"
    assert [intent["id"] for intent in standin.payment_intents(account["id"])] == [retried.id]


def test_an_injected_server_error_raises_api_error_and_creates_nothing(standin, account, client, customer):
    standin.fail_next(2, status=503)

    for key in ("k-5xx-1", "k-5xx-2"):
        with pytest.raises(stripe.APIError) as failed:
            charge(client, customer, "pm_card_visa", key)
        assert (failed.value.http_status, failed.value.error.type) == (503, "api_error")

    assert standin.payment_intents(account["id"]) == []
    assert charge(client, customer, "pm_card_visa", "k-5xx-1").status == "succeeded"


def test_scripted_outcomes_come_before_the_card_and_refusals_leave_the_key_free(standin, account, client, customer):
    standin.script(customer.id, ["busy", "error", "decline"])

    with pytest.raises(stripe.APIError) as busy:
        charge(client, customer, "pm_card_visa", "k-script")
    with pytest.raises(stripe.APIError) as failed:
        charge(client, customer, "pm_card_visa", "k-script")
    with pytest.raises(stripe.CardError) as declined:
        charge(client, customer, "pm_card_visa", "k-script")
    afterwards = charge(client, customer, "pm_card_visa", "k-script-2")

    assert (busy.value.http_status, failed.value.http_status, declined.value.http_status) == (409, 500, 402)
    assert declined.value.error.decline_code == "generic_decline" and afterwards.status == "succeeded"
    assert len(standin.payment_intents(account["id"])) == 2


def test_a_zero_decimal_amount_is_kept_as_given(client, customer):
    intent = charge(client, customer, "pm_card_visa", "k-jpy", amount=500, currency="JPY")

    assert (intent.amount, intent.amount_received, intent.currency) == (500, 500, "jpy")


@pytest.mark.parametrize(("params", "param"), [({"amount": 0}, "amount"), ({"currency": "dollars"}, "currency")])
def test_an_invalid_amount_or_currency_is_refused_naming_the_param(standin, account, client, customer, params, param):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        charge(client, customer, "pm_card_visa", f"k-invalid-{param}", **params)

    assert (refused.value.http_status, refused.value.param) == (400, param)
    assert standin.payment_intents(account["id"]) == []


def test_an_unknown_parameter_is_refused(client, customer):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        charge(client, customer, "pm_card_visa", "k-unknown", capture_method="manual")

    assert refused.value.param == "capture_method"


def test_only_an_unfinished_payment_intent_can_be_canceled(standin, account, client, customer):
    open_intent = client.v1.payment_intents.create(params={"amount": 700, "currency": "eur", "customer": customer.id})
    assert open_intent.status == "requires_payment_method"

    canceled = client.v1.payment_intents.cancel(open_intent.id, params={"cancellation_reason": "abandoned"})
    paid = charge(client, customer, "pm_card_visa", "k-paid")
    refusals = []
    for intent in (canceled, paid):
        with pytest.raises(stripe.InvalidRequestError) as refused:
            client.v1.payment_intents.cancel(intent.id)
        refusals.append(refused.value)

    assert (canceled.status, canceled.cancellation_reason) == ("canceled", "abandoned")
    assert "payment_intent.canceled" in event_types(standin, account)
    assert [r.code for r in refusals] == ["payment_intent_unexpected_state"] * 2
    assert [r.error.payment_intent.status for r in refusals] == ["canceled", "succeeded"]


def test_a_payment_intent_can_be_confirmed_later_with_a_new_card(client, customer):
    params = {"amount": 900, "currency": "usd", "customer": customer.id, "payment_method": "pm_card_chargeDeclined"}
    intent = client.v1.payment_intents.create(params=params)
    with pytest.raises(stripe.CardError):
        client.v1.payment_intents.confirm(intent.id)

    confirmed = client.v1.payment_intents.confirm(intent.id, params={"payment_method": "pm_card_visa"})

    assert (intent.status, confirmed.status, confirmed.amount_received) == ("requires_confirmation", "succeeded", 900)


def test_partial_refunds_add_up_and_a_refund_beyond_what_remains_is_refused(standin, account, client, customer):
    intent = charge(client, customer, "pm_card_visa", "k-refund")
    first = client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 400, "reason": "duplicate"})
    with pytest.raises(stripe.InvalidRequestError) as too_large:
        client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 1101})
    rest = client.v1.refunds.create(params={"charge": intent.latest_charge})
    with pytest.raises(stripe.InvalidRequestError) as nothing_left:
        client.v1.refunds.create(params={"payment_intent": intent.id})

    assert (first.object, first.status, first.amount, first.payment_intent) == ("refund", "succeeded", 400, intent.id)
    assert (too_large.value.code, nothing_left.value.code) == ("amount_too_large", "charge_already_refunded")
    assert rest.amount == 1100 and client.v1.refunds.retrieve(rest.id).charge == intent.latest_charge
    assert [refund["amount"] for refund in standin.refunds(account["id"])] == [400, 1100]
    refunded = [e["data"]["object"] for e in standin.events(account["id"]) if e["type"] == "charge.refunded"]
    assert [(c["amount_refunded"], c["refunded"], len(c["refunds"]["data"])) for c in refunded] == [
        (400, False, 1),
        (1500, True, 2),
    ]
    assert event_types(standin, account).count("refund.created") == 2


def test_disputes_open_and_close_with_events(standin, account, client, customer):
    disputed = charge(client, customer, "pm_card_createDispute", "k-dispute")
    created = [e for e in standin.events(account["id"]) if e["type"] == "charge.dispute.created"]
    assert len(created) == 1 and created[0]["data"]["object"]["charge"] == disputed.latest_charge
    opened = client.v1.disputes.retrieve(created[0]["data"]["object"]["id"])
    assert (opened.status, opened.reason) == ("needs_response", "fraudulent")
    assert (opened.amount, opened.charge, opened.payment_intent) == (1500, disputed.latest_charge, disputed.id)

    second = standin.dispute(charge(client, customer, "pm_card_visa", "k-dispute-2").latest_charge)
    standin.close_dispute(opened.id, "won")
    standin.close_dispute(second["id"], "lost")

    assert [client.v1.disputes.retrieve(d).status for d in (opened.id, second["id"])] == ["won", "lost"]
    closed = [e["data"]["object"] for e in standin.events(account["id"]) if e["type"] == "charge.dispute.closed"]
    assert [(dispute["id"], dispute["status"]) for dispute in closed] == [(opened.id, "won"), (second["id"], "lost")]


def test_signed_events_verify_with_the_webhook_secret_and_a_tampered_payload_does_not(standin, account, client):
    client.v1.customers.create(params={"email": "cy@customer.test"})
    event = standin.events(account["id"])[-1]

    payload, signature = standin.signed(account["id"], event)
    verified = stripe.Webhook.construct_event(payload, signature, account["webhook_secret"], tolerance=300)

    assert (verified.id, verified.type) == (event["id"], "customer.created")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload.replace(b"cy@", b"zz@"), signature, account["webhook_secret"])
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, signature, "whsec_someoneelse")


def test_events_are_delivered_to_the_webhook_url_signed(standin, account, client, customer, receiver):
    url, received = receiver
    standin.set_webhook_url(account["id"], url)

    intent = charge(client, customer, "pm_card_visa", "k-webhook")

    deliveries = {}
    while "payment_intent.succeeded" not in deliveries:
        payload, signature = received.get(timeout=5)
        event = stripe.Webhook.construct_event(payload, signature, account["webhook_secret"], tolerance=300)
        deliveries[event.type] = event
    assert deliveries["payment_intent.succeeded"].data.object.id == intent.id
    assert client.v1.events.retrieve(deliveries["payment_intent.succeeded"].id).type == "payment_intent.succeeded"


def test_lists_have_stripes_shape_newest_first(client, customer):
    ids = [charge(client, customer, "pm_card_visa", f"k-list-{n}").id for n in range(3)]

    page = client.v1.payment_intents.list(params={"customer": customer.id, "limit": 2})
    events = client.v1.events.list(params={"type": "payment_intent.succeeded"})

    assert (page.object, page.url, page.has_more) == ("list", "/v1/payment_intents", True)
    assert [intent.id for intent in page.data] == ids[::-1][:2]
    assert [event.data.object.id for event in events.data] == ids[::-1]


def test_the_wire_format_is_stripes(standin, account):
    form = urllib.parse.urlencode({"email": "dee@customer.test", "metadata[account_id]": "a-9"}).encode()
    headers = {"Authorization": f"Bearer {account['secret_key']}", "Idempotency-Key": "k-wire"}

    status, first_headers, created = http(standin, "POST", "/v1/customers", form, **headers)
    _, replay_headers, replayed = http(standin, "POST", "/v1/customers", form, **headers)
    missing_status, _, missing = http(standin, "GET", "/v1/customers/cus_nosuch", **headers)

    assert (status, created["object"], created["metadata"]) == (200, "customer", {"account_id": "a-9"})
    assert first_headers["Request-Id"].startswith("req_") and "Idempotent-Replayed" not in first_headers
    assert (replayed, replay_headers["Idempotent-Replayed"]) == (created, "true")
    assert replay_headers["Request-Id"] != first_headers["Request-Id"]
    assert (missing_status, missing["error"]["type"]) == (404, "invalid_request_error")
    assert missing["error"]["code"] == "resource_missing"


def test_the_control_operations_work_over_http(standin):
    status, _, created = http(standin, "POST", "/_standin/accounts", b"{}")
    client = client_for(standin, created["secret_key"])
    customer = client.v1.customers.create(params={"name": "Ed"})
    script = json.dumps({"customer": customer.id, "outcomes": ["requires_action"]}).encode()
    http(standin, "POST", "/_standin/script", script)
    intent = charge(client, customer, "pm_card_visa", "k-control")

    authenticated = http(standin, "POST", f"/_standin/payment_intents/{intent.id}/authenticate", b"{}")
    _, _, listed = http(standin, "GET", f"/_standin/accounts/{created['id']}/payment_intents")
    unknown = http(standin, "POST", "/_standin/charges/ch_nosuch/dispute", b"{}")

    assert status == 200 and created["secret_key"].startswith("sk_test_") and intent.status == "requires_action"
    assert (authenticated[0], authenticated[2]["status"]) == (200, "succeeded")
    assert [pi["id"] for pi in listed["data"]] == [intent.id]
    assert unknown[0] == 404


@pytest.fixture
def receiver() -> Iterator[tuple[str, queue.Queue]]:
    """A local webhook endpoint: (its URL, a queue of (payload, Stripe-Signature) it received)."""
    received: queue.Queue = queue.Queue()

    class Endpoint(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.put((self.rfile.read(int(self.headers["Content-Length"])), self.headers["Stripe-Signature"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, fmt: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/webhooks/stripe", received
    server.shutdown()
    server.server_close()


def until(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def retry_while_in_progress(request, seconds: float = 5.0):
    """Retry a request while Stripe answers 409 (the first one with its key is still being processed)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return request()
        except stripe.APIError as exc:
            if exc.http_status != 409 or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_secret_key_in_basic_auth_works_as_stripes_curl_examples_send_it(standin, account):
    import base64
    import urllib.request

    basic = base64.b64encode(f"{account['secret_key']}:".encode()).decode()
    request = urllib.request.Request(f"{standin.url}/v1/account", headers={"Authorization": f"Basic {basic}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.loads(response.read())["id"] == account["id"]
