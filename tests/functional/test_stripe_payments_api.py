"""Real money through the official Stripe SDK, against the local stand-in (devtools/stripe_standin.py):
a tenant connects its Stripe account, saves a card, and its customers are charged, declined, asked to
authenticate and disputed, end to end through HTTP, the queues (the pump) and Stripe's signed webhooks.
Stripe's own records (the stand-in's PaymentIntents) are the ground truth every test checks the ledger
against."""

import json
import logging
import time
import uuid
from datetime import timedelta

import boto3
import pytest

import app as app_module
from chalicelib.billing import calendar, collection, rebill
from chalicelib.config import reset_settings
from chalicelib.db import transaction
from devtools.pump import Pump, bindings_for
from tests import gateway
from tests.webhooks import sent_emails


@pytest.fixture
def stripe_tenant(api, catalog, stripe):
    return gateway.connect(api, stripe, catalog)


def _account(api, tenant, email="ada@customer.test") -> str:
    body = {"email": email, "name": "Ada", "plan": "pro", "currency": "USD"}
    reply = api.post("/v1/accounts", body, tenant.user)
    assert reply.status == 201, reply.body
    return reply.body["id"]


def _subscribe_and_pump(api, tenant, account_id, messaging) -> dict:
    reply = api.post("/v1/subscriptions", {"account_id": account_id, "plan": "pro"}, tenant.user)
    assert reply.status == 201, reply.body
    Pump(bindings_for(app_module, messaging.queues), wait_seconds=0).drain(timeout=20)
    return reply.body


def _books(tenant_id: str, account_id: str) -> dict:
    with transaction(tenant_id=tenant_id) as tx:
        entries = tx.all(
            "SELECT entry_type, amount FROM ledger_entries WHERE account_id = :a ORDER BY created_at, entry_type",
            a=account_id,
        )
        attempts = tx.all(
            "SELECT outcome, gateway_reference, decline_code FROM payment_attempts WHERE account_id = :a"
            " ORDER BY created_at",
            a=account_id,
        )
        invoice = tx.one("SELECT status, amount_due, amount_paid FROM invoices WHERE account_id = :a", a=account_id)
        account = tx.one("SELECT status, failure_count FROM accounts WHERE id = :a", a=account_id)
    return {
        "entries": [(e["entry_type"], e["amount"]) for e in entries],
        "attempts": [(a["outcome"], a["decline_code"]) for a in attempts],
        "references": [a["gateway_reference"] for a in attempts],
        "invoice": dict(invoice),
        "account": dict(account),
    }


REFUND_1000 = {"amount": 1000, "refund_amount": 1000, "reason": "order_change"}


def _paid_invoice(api, tenant, standin, messaging) -> tuple[str, str]:
    """(account, invoice) of a new subscription paid by card at Stripe."""
    account_id = _account(api, tenant)
    gateway.save_card(api, standin, tenant, account_id)
    _subscribe_and_pump(api, tenant, account_id, messaging)
    with transaction(tenant_id=tenant.tenant_id) as tx:
        return account_id, str(tx.scalar("SELECT id FROM invoices WHERE account_id = :a", a=account_id))


def _succeeded(standin, tenant, account_id) -> list[int]:
    return [pi["amount"] for pi in gateway.intents(standin, tenant, account_id) if pi["status"] == "succeeded"]


# --- connecting -------------------------------------------------------------------------------


def test_a_tenant_connects_its_stripe_account_and_its_keys_are_never_shown_again(api, catalog, stripe, caplog):
    caplog.set_level(logging.DEBUG)
    keys = stripe.create_account()
    body = {"provider": "stripe", "secret_key": keys["secret_key"], "webhook_secret": keys["webhook_secret"]}

    assert api.call("PUT", "/v1/gateway", body, catalog.user).status == 403
    connected = api.call("PUT", "/v1/gateway", body, catalog.admin)
    shown = api.get("/v1/gateway", catalog.admin)

    assert connected.status == shown.status == 200
    assert shown.body["account_id"] == keys["id"] and shown.body["connected"] is True
    assert shown.body["secret_key_last4"] == keys["secret_key"][-4:]
    stored = boto3.client("secretsmanager").get_secret_value(SecretId=f"billing/tenants/{catalog.id}/gateway")
    assert json.loads(stored["SecretString"])["secret_key"] == keys["secret_key"]
    for secret in (keys["secret_key"], keys["webhook_secret"]):
        assert secret not in json.dumps(connected.body) + json.dumps(shown.body)
        assert secret not in caplog.text
        with transaction(tenant_id=catalog.id) as tx:
            assert not tx.all("SELECT 1 FROM audit_logs WHERE data::text LIKE :s", s=f"%{secret}%")


def test_a_key_stripe_refuses_is_a_400_and_nothing_is_stored(api, catalog, stripe):
    body = {"provider": "stripe", "secret_key": "sk_test_notarealkey123", "webhook_secret": "whsec_abcdefgh1234"}

    reply = api.call("PUT", "/v1/gateway", body, catalog.admin)

    assert (reply.status, reply.body["error"]["code"]) == (400, "gateway_credentials_invalid")
    assert api.get("/v1/gateway", catalog.admin).body == {"object": "gateway", "provider": None, "connected": False}


def test_setting_up_a_card_needs_a_connected_gateway(api, catalog, account, stripe):
    reply = api.post(f"/v1/accounts/{account['id']}/payment_methods/setup", None, catalog.user)

    assert (reply.status, reply.body["error"]["code"]) == (422, "gateway_not_connected")


def test_a_saved_card_becomes_the_default_once_stripe_confirms_it_and_a_late_older_event_does_not_replace_it(
    api, stripe_tenant, stripe
):
    account_id = _account(api, stripe_tenant)
    first = gateway.save_card(api, stripe, stripe_tenant, account_id, "pm_card_visa")
    older = [e for e in stripe.events(stripe_tenant.keys["id"]) if e["type"] == "setup_intent.succeeded"][0]
    second = gateway.save_card(api, stripe, stripe_tenant, account_id, "pm_card_mastercard")

    older = {**older, "id": "evt_late_redelivery", "created": older["created"] - 10}  # older than the second's
    gateway.webhook(api, stripe_tenant, *stripe.signed(stripe_tenant.keys["id"], older))
    now = api.get(f"/v1/accounts/{account_id}", stripe_tenant.user).body

    assert first["default_payment_method"]["brand"] == "visa" and first["default_payment_method"]["last4"] == "4242"
    assert second["default_payment_method"]["last4"] == "4444"
    assert now["default_payment_method"] == second["default_payment_method"]
    assert now["gateway_customer_id"] == first["gateway_customer_id"]  # made once


# --- charging ---------------------------------------------------------------------------------


def test_a_new_subscription_is_charged_once_at_stripe_and_replayed_webhooks_change_nothing(
    api, stripe_tenant, stripe, messaging
):
    account_id = _account(api, stripe_tenant)
    gateway.save_card(api, stripe, stripe_tenant, account_id)
    _subscribe_and_pump(api, stripe_tenant, account_id, messaging)
    before = _books(stripe_tenant.tenant_id, account_id)

    gateway.deliver(api, stripe, stripe_tenant, times=3)

    assert _succeeded(stripe, stripe_tenant, account_id) == [4900]
    assert before["invoice"]["status"] == "paid"
    assert ("payment", -4900) in before["entries"]
    assert _books(stripe_tenant.tenant_id, account_id) == before
    intent = gateway.intents(stripe, stripe_tenant, account_id)[0]
    assert intent["metadata"]["tenant_id"] == stripe_tenant.tenant_id and intent["currency"] == "usd"
    assert before["references"] == [intent["id"]]


def test_a_declined_card_puts_the_account_in_dunning_once_whatever_the_webhooks(api, stripe_tenant, stripe, messaging):
    account_id = _account(api, stripe_tenant)
    gateway.save_card(api, stripe, stripe_tenant, account_id, "pm_card_chargeDeclinedInsufficientFunds")
    _subscribe_and_pump(api, stripe_tenant, account_id, messaging)

    gateway.deliver(api, stripe, stripe_tenant, times=3)
    books = _books(stripe_tenant.tenant_id, account_id)

    assert books["attempts"] == [("declined", "insufficient_funds")]
    assert books["account"] == {"status": "PENDING", "failure_count": 1}
    assert books["invoice"]["status"] == "open"
    assert _succeeded(stripe, stripe_tenant, account_id) == []


def test_a_card_that_needs_authentication_waits_for_the_customer_and_is_paid_once_they_do(
    api, stripe_tenant, stripe, messaging, monkeypatch
):
    monkeypatch.setenv("PUBLIC_API_URL", "https://billing.example.test")
    reset_settings()
    account_id = _account(api, stripe_tenant)
    card = gateway.save_card(api, stripe, stripe_tenant, account_id, "pm_card_authenticationRequired")
    _subscribe_and_pump(api, stripe_tenant, account_id, messaging)
    waiting = _books(stripe_tenant.tenant_id, account_id)
    emails = int(boto3.client("ses").get_send_quota()["SentLast24Hours"])

    # The customer follows the email's link and confirms on-session (Stripe.js), then 3-D Secure.
    intent_id = waiting["references"][0]
    customer = gateway.sdk(stripe, stripe_tenant)
    customer.v1.payment_intents.confirm(intent_id, {"payment_method": card["default_payment_method"]["id"]})
    stripe.authenticate(intent_id)
    gateway.deliver(api, stripe, stripe_tenant, times=2)
    paid = _books(stripe_tenant.tenant_id, account_id)

    assert waiting["attempts"] == [("requires_action", "authentication_required")]
    assert waiting["account"]["status"] == "PENDING" and waiting["invoice"]["status"] == "open"
    assert emails == 3  # the subscription's, the invoice's, and "confirm your payment" with its hosted link
    asked = next(e for e in sent_emails() if e["subject"].startswith("Action required"))
    assert asked["subject"].startswith("Action required") and asked["destinations"]["ToAddresses"] == [
        "ada@customer.test"
    ]
    assert "https://billing.example.test/v1/hosted_invoices/" in asked["body"]
    assert paid["attempts"] == [("succeeded", "authentication_required")]
    assert paid["invoice"]["status"] == "paid" and paid["account"] == {"status": "ACTIVE", "failure_count": 0}
    assert [e for e in paid["entries"] if e[0] == "payment"] == [("payment", -4900)]
    assert _succeeded(stripe, stripe_tenant, account_id) == [4900]


def test_the_hosted_page_lets_the_customer_confirm_a_waiting_payment_with_stripe_js_and_nothing_else(
    api, catalog, stripe, messaging
):
    keys = stripe.create_account()
    body = {"provider": "stripe", "secret_key": keys["secret_key"], "webhook_secret": keys["webhook_secret"]}
    api.call("PUT", "/v1/gateway", {**body, "publishable_key": "pk_test_hostedpage1"}, catalog.admin)
    tenant = gateway.Connected(catalog.id, catalog.admin, catalog.user, keys)
    account_id = _account(api, tenant)
    card = gateway.save_card(api, stripe, tenant, account_id, "pm_card_authenticationRequired")
    _subscribe_and_pump(api, tenant, account_id, messaging)
    invoice = api.get(f"/v1/invoices?account_id={account_id}", tenant.user).body["data"][0]
    link = api.get(f"/v1/invoices/{invoice['id']}", tenant.user).body["hosted_invoice_url"].split("/v1/")[1]

    status, headers, page = api.fetch(f"/v1/{link}", accept="text/html")
    intent = gateway.intents(stripe, tenant, account_id)[0]
    method = card["default_payment_method"]["id"]
    gateway.sdk(stripe, tenant).v1.payment_intents.confirm(intent["id"], {"payment_method": method})  # Stripe.js
    stripe.authenticate(intent["id"])
    gateway.deliver(api, stripe, tenant)
    _, paid_headers, paid_page = api.fetch(f"/v1/{link}", accept="text/html")

    text = page.decode()
    nonce = headers["Content-Security-Policy"].split("'nonce-")[1].split("'")[0]
    assert status == 200 and "Confirm payment" in text
    assert intent["client_secret"] in text and "pk_test_hostedpage1" in text and method in text
    assert '<script src="https://js.stripe.com/v3/"></script>' in text and f'<script nonce="{nonce}">' in text
    assert text.count("<script") == 2
    assert "script-src" not in paid_headers["Content-Security-Policy"]  # paid: no script at all
    assert "<script" not in paid_page.decode() and "Confirm payment" not in paid_page.decode()


def test_a_dunning_retry_withdraws_the_charge_still_waiting_for_the_customer_before_trying_again(
    api, stripe_tenant, stripe, messaging
):
    account_id = _account(api, stripe_tenant)
    gateway.save_card(api, stripe, stripe_tenant, account_id, "pm_card_authenticationRequired")
    _subscribe_and_pump(api, stripe_tenant, account_id, messaging)

    outcome = collection.collect_open(stripe_tenant.tenant_id, account_id, calendar.utcnow() + timedelta(days=1))
    statuses = [pi["status"] for pi in gateway.intents(stripe, stripe_tenant, account_id)]
    books = _books(stripe_tenant.tenant_id, account_id)

    assert outcome == "declined"  # the new attempt needs the customer too
    assert statuses == ["canceled", "requires_payment_method"]  # never two live charges of one invoice
    assert books["attempts"] == [
        ("canceled", None),
        ("requires_action", "authentication_required"),
    ]
    assert books["account"]["failure_count"] == 2


def test_a_dispute_withdraws_the_payment_and_winning_it_gives_it_back_once(api, stripe_tenant, stripe, messaging):
    account_id = _account(api, stripe_tenant)
    gateway.save_card(api, stripe, stripe_tenant, account_id, "pm_card_createDispute")
    _subscribe_and_pump(api, stripe_tenant, account_id, messaging)
    gateway.deliver(api, stripe, stripe_tenant, times=3)
    disputed = _books(stripe_tenant.tenant_id, account_id)
    opened = next(e for e in stripe.events(stripe_tenant.keys["id"]) if e["type"] == "charge.dispute.created")

    stripe.close_dispute(opened["data"]["object"]["id"], "won")
    gateway.deliver(api, stripe, stripe_tenant, times=3)
    won = _books(stripe_tenant.tenant_id, account_id)

    assert [e for e in disputed["entries"] if e[0].startswith("dispute")] == [("dispute", 4900)]
    assert sum(amount for _k, amount in disputed["entries"]) == 4900  # owed again
    assert [e for e in won["entries"] if e[0].startswith("dispute")] == [("dispute", 4900), ("dispute_won", -4900)]
    assert sum(amount for _k, amount in won["entries"]) == 0
    assert won["invoice"]["status"] == "paid"
    with transaction(tenant_id=stripe_tenant.tenant_id) as tx:
        actions = [r["action"] for r in tx.all("SELECT action FROM audit_logs WHERE action LIKE 'dispute.%'")]
    assert sorted(actions) == ["dispute.needs_response", "dispute.won"]


def test_a_charge_whose_answer_was_lost_is_settled_by_the_webhook_and_never_charged_again(
    api, stripe_tenant, stripe, messaging
):
    account_id = _account(api, stripe_tenant)
    gateway.save_card(api, stripe, stripe_tenant, account_id, "pm_card_standin_timeout")
    _subscribe_and_pump(api, stripe_tenant, account_id, messaging)
    pending = _books(stripe_tenant.tenant_id, account_id)

    gateway.deliver(api, stripe, stripe_tenant)  # payment_intent.succeeded, before our own settlement
    settled = _books(stripe_tenant.tenant_id, account_id)
    later = collection.settle_pending(stripe_tenant.tenant_id, account_id, calendar.utcnow())

    assert pending["attempts"] == [("pending", None)]
    assert settled["attempts"] == [("succeeded", None)] and settled["invoice"]["status"] == "paid"
    assert later is None  # nothing left pending: no second call, no second charge
    assert _succeeded(stripe, stripe_tenant, account_id) == [4900]
    assert [e for e in _books(stripe_tenant.tenant_id, account_id)["entries"] if e[0] == "payment"] == [
        ("payment", -4900)
    ]


def test_a_credit_note_refund_goes_back_through_stripe_once(api, stripe_tenant, stripe, messaging):
    account_id, invoice_id = _paid_invoice(api, stripe_tenant, stripe, messaging)

    body = {"invoice": invoice_id, **REFUND_1000}
    reply = api.post("/v1/credit_notes", body, stripe_tenant.admin, headers={"Idempotency-Key": "cn-1"})
    again = api.post("/v1/credit_notes", body, stripe_tenant.admin, headers={"Idempotency-Key": "cn-1"})
    gateway.deliver(api, stripe, stripe_tenant, times=2)

    assert reply.status == again.status == 201, reply.body
    assert reply.body["refund_status"] == "succeeded"
    refunds = stripe.refunds(stripe_tenant.keys["id"])
    assert [(r["amount"], r["metadata"]["credit_note_id"]) for r in refunds] == [(1000, reply.body["id"])]


# --- what is refused or ignored -----------------------------------------------------------------


def test_a_webhook_that_does_not_verify_is_a_400_and_leaves_nothing_stored(api, stripe_tenant, stripe, make_tenant):
    account_id = _account(api, stripe_tenant)
    gateway.save_card(api, stripe, stripe_tenant, account_id)
    event = stripe.events(stripe_tenant.keys["id"])[-1]
    payload, signature = stripe.signed(stripe_tenant.keys["id"], {**event, "id": "evt_forged"})
    stale = signature.replace(signature.split(",")[0], "t=1000000000")
    other = gateway.Connected(make_tenant("Other"), "", "", stripe_tenant.keys)

    refused = [
        gateway.webhook(api, stripe_tenant, payload + b" ", signature),  # the body changed
        gateway.webhook(api, stripe_tenant, payload, None),
        gateway.webhook(api, stripe_tenant, payload, stale),  # older than 5 minutes
        gateway.webhook(api, stripe_tenant, payload, "t=1,v1=00"),
        gateway.webhook(api, other, payload, signature),  # a tenant with no Stripe connected
        gateway.webhook(api, gateway.Connected("not-a-uuid", "", "", {}), payload, signature),
    ]

    assert {(r.status, r.body["error"]["code"]) for r in refused} == {(400, "invalid_signature")}
    with transaction(tenant_id=stripe_tenant.tenant_id) as tx:
        assert not tx.all("SELECT 1 FROM processed_events WHERE message_id = 'evt_forged'")


def test_an_event_type_we_do_not_handle_is_acknowledged_and_ignored(api, stripe_tenant, stripe):
    event = {"id": "evt_unknown", "object": "event", "type": "customer.tax_id.created", "data": {"object": {}}}

    reply = gateway.webhook(api, stripe_tenant, *stripe.signed(stripe_tenant.keys["id"], event))

    assert (reply.status, reply.body) == (200, {"received": True, "handled": False})


def test_in_production_a_tenant_without_a_gateway_is_never_charged_by_the_mock(
    make_tenant, stripe, monkeypatch, capsys
):
    from tests import billing

    tenant = make_tenant()
    now = calendar.utcnow()
    account = billing.subscribed_account(tenant, billing.plan(tenant, usage_prices=[]), now - timedelta(days=40))
    due = billing.state(tenant, account)["next_billing_at"]
    monkeypatch.setenv("STAGE", "prod")
    reset_settings()

    with pytest.raises(collection.payments.RetryableGatewayError):  # the message comes back later
        rebill.renew(tenant, account, due, now)

    assert billing.pending_attempts(tenant, account) == 1  # charged later, under the same key
    assert '"gateway_not_connected"' in capsys.readouterr().out


# --- what the review found: each a way money could go wrong -------------------------------------


def test_a_card_saved_while_a_charge_waits_for_its_answer_is_not_what_the_retry_sends(
    api, stripe_tenant, stripe, messaging
):
    account_id = _account(api, stripe_tenant)
    gateway.save_card(api, stripe, stripe_tenant, account_id, "pm_card_standin_timeout")
    _subscribe_and_pump(api, stripe_tenant, account_id, messaging)  # charged at Stripe, the answer lost
    stripe_tenant.delivered = len(stripe.events(stripe_tenant.keys["id"]))  # its webhook has not come yet
    gateway.save_card(api, stripe, stripe_tenant, account_id, "pm_card_mastercard")  # a new default card
    time.sleep(stripe.slow_seconds + 0.2)  # Stripe has finished the first request under that key

    outcome = collection.settle_pending(stripe_tenant.tenant_id, account_id, calendar.utcnow())
    books = _books(stripe_tenant.tenant_id, account_id)

    assert outcome == "succeeded"  # the same request again (the first card), replayed: not a decline
    assert _succeeded(stripe, stripe_tenant, account_id) == [4900]
    assert books["attempts"] == [("succeeded", None)]
    assert [e for e in books["entries"] if e[0] == "payment"] == [("payment", -4900)]


def test_money_the_gateway_took_for_an_attempt_already_declined_becomes_the_accounts_credit(
    api, stripe_tenant, stripe, messaging
):
    account_id = _account(api, stripe_tenant)
    gateway.save_card(api, stripe, stripe_tenant, account_id, "pm_card_chargeDeclined")
    _subscribe_and_pump(api, stripe_tenant, account_id, messaging)
    with transaction(tenant_id=stripe_tenant.tenant_id) as tx:
        row = tx.one("SELECT * FROM payment_attempts WHERE account_id = :a", a=account_id)
        intent = collection.attempt_at_gateway(tx, str(row["id"]), None)
        late = collection.payments.PaymentResult("succeeded", reference=row["gateway_reference"])
        twice = [collection.record_answer(tx, intent, late, calendar.utcnow()) for _ in range(2)]

    collection.collect_open(stripe_tenant.tenant_id, account_id, calendar.utcnow() + timedelta(days=1))
    books = _books(stripe_tenant.tenant_id, account_id)

    assert twice == ["in_progress", "in_progress"]
    assert [e for e in books["entries"] if e[0] == "payment"] == [("payment", -4900)]  # posted once
    assert books["invoice"]["status"] == "paid"  # by that credit: no second charge
    assert _succeeded(stripe, stripe_tenant, account_id) == []


def test_a_dispute_that_is_only_an_inquiry_moves_no_money(api, stripe_tenant, stripe, messaging):
    account_id = _account(api, stripe_tenant)
    gateway.save_card(api, stripe, stripe_tenant, account_id)
    _subscribe_and_pump(api, stripe_tenant, account_id, messaging)
    intent = gateway.intents(stripe, stripe_tenant, account_id)[0]
    inquiry = {"id": "dp_inquiry", "object": "dispute", "amount": 4900, "currency": "usd", "reason": "general"}
    inquiry.update(status="warning_needs_response", payment_intent=intent["id"], charge=intent["latest_charge"])
    for kind in ("charge.dispute.created", "charge.dispute.closed"):
        body = {"id": f"evt_{kind}", "object": "event", "type": kind, "data": {"object": inquiry}}
        gateway.webhook(api, stripe_tenant, *stripe.signed(stripe_tenant.keys["id"], body))
        inquiry = {**inquiry, "status": "warning_closed"}

    books = _books(stripe_tenant.tenant_id, account_id)

    assert not [e for e in books["entries"] if e[0].startswith("dispute")]
    assert sum(amount for _k, amount in books["entries"]) == 0


def test_voiding_an_invoice_whose_payment_waits_for_the_customer_cancels_that_payment_first(
    api, stripe_tenant, stripe, messaging
):
    account_id = _account(api, stripe_tenant)
    gateway.save_card(api, stripe, stripe_tenant, account_id, "pm_card_authenticationRequired")
    _subscribe_and_pump(api, stripe_tenant, account_id, messaging)
    invoice = api.get(f"/v1/invoices?account_id={account_id}", stripe_tenant.user).body["data"][0]

    reply = api.post(f"/v1/invoices/{invoice['id']}/void", None, stripe_tenant.admin)
    books = _books(stripe_tenant.tenant_id, account_id)

    assert reply.status == 200, reply.body
    assert [pi["status"] for pi in gateway.intents(stripe, stripe_tenant, account_id)] == ["canceled"]
    assert books["attempts"] == [("canceled", None)]
    assert sum(amount for _k, amount in books["entries"]) == 0


def test_a_tenant_that_connects_another_stripe_account_sets_up_its_customers_again_there(
    api, catalog, stripe_tenant, stripe, messaging
):
    account_id = _account(api, stripe_tenant)
    before = gateway.save_card(api, stripe, stripe_tenant, account_id)
    live = gateway.connect(api, stripe, catalog)  # its live keys, say: another Stripe account
    declined_unsent = collection.payments.PaymentResult("declined", decline_code="no_payment_method")

    _subscribe_and_pump(api, live, account_id, messaging)  # the old account's card: not charged at the new one
    books = _books(live.tenant_id, account_id)
    after = gateway.save_card(api, stripe, live, account_id)

    assert books["attempts"] == [(declined_unsent.outcome, declined_unsent.decline_code)]
    assert gateway.intents(stripe, live) == [] and gateway.intents(stripe, stripe_tenant) == []
    assert after["gateway_customer_id"] != before["gateway_customer_id"]
    assert after["default_payment_method"]["id"] != before["default_payment_method"]["id"]


def test_a_request_stripe_refuses_as_invalid_is_not_the_customers_decline(stripe_tenant, stripe, capsys):
    from chalicelib.billing import gateways

    stripe_gateway = gateways.stripe_of(stripe_tenant.tenant_id)
    payer = collection.payments.Payer("cus_missing", "pm_missing", stripe_tenant.keys["id"])

    with pytest.raises(collection.payments.RequestRefused):
        stripe_gateway.charge(account_id="a", amount=100, currency="USD", idempotency_key="k-1", payer=payer)
    with pytest.raises(collection.payments.RequestRefused):  # never rounded: 12.345 KWD ends in 5
        stripe_gateway.charge(account_id="a", amount=12345, currency="KWD", idempotency_key="k-2", payer=payer)


def test_stripe_down_while_a_card_is_set_up_is_a_503_to_retry(api, stripe_tenant, stripe):
    account_id = _account(api, stripe_tenant)
    stripe.fail_next(1)

    reply = api.post(f"/v1/accounts/{account_id}/payment_methods/setup", None, stripe_tenant.user)

    assert (reply.status, reply.body["error"]["type"]) == (503, "service_unavailable")


def test_a_webhook_for_an_unknown_tenant_costs_no_secrets_manager_call(api, stripe_tenant, stripe):
    from chalicelib import aws

    calls = []
    aws.client("secretsmanager").meta.events.register("before-call", lambda **kw: calls.append(kw))
    payload, signature = stripe.signed(stripe_tenant.keys["id"], {"id": "evt_x", "type": "x", "data": {}})

    reply = gateway.webhook(api, gateway.Connected(str(uuid.uuid4()), "", "", {}), payload, signature)

    assert (reply.status, reply.body["error"]["code"]) == (400, "invalid_signature")
    assert calls == []


def test_a_charge_left_pending_past_stripes_memory_of_its_key_is_found_not_made_again(
    api, stripe_tenant, stripe, messaging, owner_conn
):
    account_id = _account(api, stripe_tenant)
    gateway.save_card(api, stripe, stripe_tenant, account_id, "pm_card_standin_timeout")
    _subscribe_and_pump(api, stripe_tenant, account_id, messaging)  # charged at Stripe, the answer lost
    time.sleep(stripe.slow_seconds + 0.2)
    stripe.expire_keys(stripe_tenant.keys["id"])  # a day later: Stripe no longer knows the key
    back = (
        "UPDATE payment_attempts SET created_at = created_at - interval '25 hours' WHERE account_id = CAST(:a AS uuid)"
    )
    owner_conn.run(back, a=account_id)

    outcome = collection.settle_pending(stripe_tenant.tenant_id, account_id, calendar.utcnow())

    assert outcome == "succeeded"
    assert len(gateway.intents(stripe, stripe_tenant, account_id)) == 1  # found by its attempt id, not made again
    assert _succeeded(stripe, stripe_tenant, account_id) == [4900]


# --- what the second review found -------------------------------------------------------------------


def test_a_moment_of_secrets_manager_trouble_leaves_the_charge_pending_never_declined(
    api, stripe_tenant, stripe, messaging
):
    from botocore.exceptions import ClientError

    from chalicelib import aws
    from chalicelib.billing import gateway_credentials

    account_id = _account(api, stripe_tenant)
    gateway.save_card(api, stripe, stripe_tenant, account_id)
    failures = [ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "GetSecretValue")]

    def throttle_once(**_kwargs):
        if failures:
            raise failures.pop()

    gateway_credentials.forget()  # a cold function: it reads the tenant's keys again
    aws.client("secretsmanager").meta.events.register("before-call.secrets-manager.GetSecretValue", throttle_once)
    _subscribe_and_pump(api, stripe_tenant, account_id, messaging)
    books = _books(stripe_tenant.tenant_id, account_id)

    assert failures == []  # the throttling happened
    assert books["attempts"] in ([("pending", None)], [("succeeded", None)])  # retried, never declined
    assert books["account"] == {"status": "ACTIVE", "failure_count": 0}
    assert collection.settle_pending(stripe_tenant.tenant_id, account_id, calendar.utcnow()) in (None, "succeeded")
    assert _succeeded(stripe, stripe_tenant, account_id) == [4900]


def test_a_refund_stripe_holds_pending_waits_for_its_webhook_and_is_never_sent_again(
    api, stripe_tenant, stripe, messaging, owner_conn
):
    from chalicelib.billing import refunds

    account_id, invoice_id = _paid_invoice(api, stripe_tenant, stripe, messaging)
    stripe.refunds_pending = True
    try:
        body = {"invoice": invoice_id, **REFUND_1000}
        note = api.post("/v1/credit_notes", body, stripe_tenant.admin).body
    finally:
        stripe.refunds_pending = False
    stripe.expire_keys(stripe_tenant.keys["id"])  # days later
    owner_conn.run("UPDATE refunds SET created_at = created_at - interval '2 days'")
    tried = refunds.settle_stale(calendar.utcnow())
    [made] = stripe.refunds(stripe_tenant.keys["id"])
    stripe.settle_refund(made["id"])
    gateway.deliver(api, stripe, stripe_tenant, times=2)

    assert note["refund_status"] == "pending" and tried == 0  # Stripe has it: nothing is sent again
    assert [r["amount"] for r in stripe.refunds(stripe_tenant.keys["id"])] == [1000]
    assert api.get(f"/v1/credit_notes/{note['id']}", stripe_tenant.user).body["refund_status"] == "succeeded"


def test_a_refund_that_fails_after_it_succeeded_returns_the_money_to_the_balance_once(
    api, stripe_tenant, stripe, messaging
):
    account_id, invoice_id = _paid_invoice(api, stripe_tenant, stripe, messaging)
    body = {"invoice": invoice_id, **REFUND_1000}
    note = api.post("/v1/credit_notes", body, stripe_tenant.admin).body
    gateway.deliver(api, stripe, stripe_tenant)
    before = _books(stripe_tenant.tenant_id, account_id)

    stripe.settle_refund(stripe.refunds(stripe_tenant.keys["id"])[0]["id"], "failed")  # the card was closed
    gateway.deliver(api, stripe, stripe_tenant, times=3)
    after = _books(stripe_tenant.tenant_id, account_id)

    assert note["refund_status"] == "succeeded"
    assert api.get(f"/v1/credit_notes/{note['id']}", stripe_tenant.user).body["refund_status"] == "failed"
    assert after["entries"][: len(before["entries"])] == before["entries"]
    assert after["entries"][len(before["entries"]) :] == [("credit", -1000)]  # back to the balance, once


def test_a_charge_sent_to_the_previous_stripe_account_is_never_declined_for_the_switch(
    api, catalog, stripe_tenant, stripe, messaging, capsys
):
    account_id = _account(api, stripe_tenant)
    gateway.save_card(api, stripe, stripe_tenant, account_id, "pm_card_standin_timeout")
    _subscribe_and_pump(api, stripe_tenant, account_id, messaging)  # charged at the old account, answer lost
    gateway.connect(api, stripe, catalog)  # the tenant switches to another Stripe account meanwhile
    time.sleep(stripe.slow_seconds + 0.2)

    with pytest.raises(collection.payments.RetryableGatewayError):
        collection.resolved(collection.settle_pending(stripe_tenant.tenant_id, account_id, calendar.utcnow()))
    books = _books(stripe_tenant.tenant_id, account_id)

    assert books["attempts"] == [("pending", None)]  # waits for a person, alarmed: not a decline
    assert books["account"]["failure_count"] == 0
    assert '"gateway_refused"' in capsys.readouterr().out
    assert _succeeded(stripe, stripe_tenant, account_id) == [4900]  # the old account has the money
