"""Tenants hear what happened: the event log, webhook endpoints, signed deliveries with retries, emails."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from chalice.test import Client
from standardwebhooks import Webhook, WebhookVerificationError

from app import app
from chalicelib import webhook_delivery
from chalicelib.config import reset_settings
from chalicelib.db import transaction
from tests import billing
from tests.conftest import Api
from tests.webhooks import Receiver, pump_until, sent_emails

PAST = datetime.now(UTC) - timedelta(days=40)


@pytest.fixture
def receiver():
    made = []

    def make(**kw) -> Receiver:
        made.append(Receiver(**kw))
        return made[-1]

    yield make
    for r in made:
        r.stop()


@pytest.fixture
def quick_retries(monkeypatch):
    """The real retry schedule and 3-day limits, compressed 100,000 times (3 days = 2.6 s)."""
    monkeypatch.setenv("WEBHOOK_TIME_SCALE", "0.00001")
    reset_settings()
    yield
    reset_settings()


def _endpoint(api, tenant, url: str, events=("invoice.finalized",)) -> dict:
    reply = api.post("/v1/webhook_endpoints", {"url": url, "enabled_events": list(events)}, tenant.admin)
    assert reply.status == 201, reply.body
    return reply.body


def _renewal_due(tenant_id: str) -> str:
    """An account whose renewal the daily rebill will bill, and the rebill run (schedule, then its queue)."""
    account = billing.subscribed_account(tenant_id, billing.plan(tenant_id, usage_prices=[]), PAST)
    with Client(app, stage_name="local") as client:
        client.lambda_.invoke("rebill_schedule", client.events.generate_cw_event("aws.events", "x", {}, []))
    return account


def _deliveries(api, tenant, endpoint_id: str) -> list[dict]:
    reply = api.get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries", tenant.admin)
    assert reply.status == 200, reply.body
    return reply.body["data"]


def test_after_the_rebill_a_receiver_gets_a_signed_invoice_finalized_the_library_verifies(
    api, tenant, messaging, gateway, receiver
):
    hooks = receiver()
    endpoint = _endpoint(api, tenant, hooks.url)
    account = _renewal_due(tenant.id)

    pump_until(messaging, lambda: hooks.requests)

    got = hooks.requests[0]
    event = Webhook(endpoint["secret"]).verify(got.body, got.headers)
    assert event["type"] == "invoice.finalized" and event["object"] == "event" and event["version"] == 1
    invoice = event["data"]["object"]
    shown = api.get(f"/v1/invoices/{invoice['id']}", tenant.user).body
    assert invoice["account_id"] == account and invoice["number"] == shown["number"]
    # The invoice as the API returns it, but for what GET makes per request: its lines and links.
    assert set(invoice) == set(shown) - {"lines", "invoice_pdf", "hosted_invoice_url"}
    assert (invoice["total"], invoice["currency"]) == (shown["total"], shown["currency"]) == (4900, "USD")
    for key in ("created_at", "period_start", "period_end", "finalized_at", "due_at"):  # written as the API writes
        assert invoice[key] == shown[key], key
    assert got.headers["webhook-id"] == event["id"]
    assert api.get(f"/v1/notifications/{event['id']}", tenant.user).body == json.loads(got.body)
    [delivery] = _deliveries(api, tenant, endpoint["id"])
    assert (delivery["status"], delivery["attempt_count"], delivery["attempts"][0]["status_code"]) == (
        "delivered",
        1,
        200,
    )


def test_a_tampered_body_or_an_old_timestamp_fails_verification(api, tenant, messaging, gateway, receiver):
    hooks = receiver()
    endpoint = _endpoint(api, tenant, hooks.url)
    _renewal_due(tenant.id)
    pump_until(messaging, lambda: hooks.requests)
    got = hooks.requests[0]
    verifier = Webhook(endpoint["secret"])

    tampered = got.body.replace(b'"USD"', b'"EUR"')
    with pytest.raises(WebhookVerificationError):
        verifier.verify(tampered, got.headers)
    ten_minutes_ago = datetime.now(UTC) - timedelta(minutes=10)
    old = webhook_delivery.sign((endpoint["secret"],), got.headers["webhook-id"], ten_minutes_ago, got.body.decode())
    with pytest.raises(WebhookVerificationError, match="too old"):
        verifier.verify(got.body, old)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhook_delivery.webhook_endpoints.new_secret()).verify(got.body, got.headers)
    assert verifier.verify(got.body, got.headers)["type"] == "invoice.finalized"


def test_a_receiver_failing_twice_gets_the_event_three_times_with_one_webhook_id(
    api, tenant, messaging, gateway, receiver, quick_retries
):
    hooks = receiver(statuses=[500, 502, 200])
    endpoint = _endpoint(api, tenant, hooks.url)
    _renewal_due(tenant.id)

    pump_until(messaging, lambda: [d["status"] for d in _deliveries(api, tenant, endpoint["id"])] == ["delivered"])
    pump_until(messaging, lambda: True)  # and nothing more comes

    assert len(hooks.requests) == 3
    assert len({r.headers["webhook-id"] for r in hooks.requests}) == 1
    assert len({r.body for r in hooks.requests}) == 1
    [delivery] = _deliveries(api, tenant, endpoint["id"])
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 502, 200]
    assert delivery["attempts"][0]["response_excerpt"] == "ok"


def test_a_receiver_that_always_fails_ends_failed_with_every_attempt_listed_and_its_admins_are_told(
    api, tenant, messaging, gateway, receiver, quick_retries
):
    hooks = receiver(statuses=[503])
    endpoint = _endpoint(api, tenant, hooks.url)
    _renewal_due(tenant.id)

    pump_until(
        messaging, lambda: [d["status"] for d in _deliveries(api, tenant, endpoint["id"])] == ["failed"], timeout_s=60
    )
    pump_until(messaging, lambda: any("disabled" in e["subject"] for e in sent_emails()))

    [delivery] = _deliveries(api, tenant, endpoint["id"])
    assert delivery["attempt_count"] == len(delivery["attempts"]) == len(hooks.requests) >= 3
    assert {a["status_code"] for a in delivery["attempts"]} == {503}
    shown = api.get(f"/v1/webhook_endpoints/{endpoint['id']}", tenant.admin).body
    assert shown["enabled"] is False and shown["disabled_reason"] == "failing for 3 days"
    [notice] = api.get("/v1/notifications?type=webhook_endpoint.disabled", tenant.user).body["data"]
    assert notice["data"]["object"]["id"] == endpoint["id"] and "url" not in notice["data"]["object"]
    told = next(e for e in sent_emails() if "disabled" in e["subject"])
    assert told["destinations"]["ToAddresses"] == ["ops@example.test"] and hooks.url in told["body"]
    assert api.post(f"/v1/webhook_endpoints/{endpoint['id']}", {"enabled": True}, tenant.admin).body["enabled"]


def test_a_delivery_is_resent_on_request_with_the_same_webhook_id(api, tenant, messaging, gateway, receiver):
    hooks = receiver()
    endpoint = _endpoint(api, tenant, hooks.url)
    _renewal_due(tenant.id)
    pump_until(messaging, lambda: hooks.requests)
    [delivery] = _deliveries(api, tenant, endpoint["id"])

    reply = api.post(f"/v1/webhook_endpoints/{endpoint['id']}/deliveries/{delivery['id']}/retry", None, tenant.admin)
    pump_until(messaging, lambda: len(hooks.requests) == 2)

    assert reply.status == 200 and reply.body["status"] == "pending"
    assert hooks.requests[0].headers["webhook-id"] == hooks.requests[1].headers["webhook-id"]
    assert _deliveries(api, tenant, endpoint["id"])[0]["attempt_count"] == 2


def test_after_a_rotation_both_secrets_sign_for_a_day(api, tenant, messaging, gateway, receiver):
    hooks = receiver()
    endpoint = _endpoint(api, tenant, hooks.url)

    rotated = api.post(f"/v1/webhook_endpoints/{endpoint['id']}/rotate", None, tenant.admin)
    _renewal_due(tenant.id)
    pump_until(messaging, lambda: hooks.requests)

    got = hooks.requests[0]
    assert rotated.status == 200 and rotated.body["secret"] != endpoint["secret"]
    assert rotated.body["previous_secret_expires_at"] > datetime.now(UTC).isoformat()
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    for secret in (endpoint["secret"], rotated.body["secret"]):
        assert Webhook(secret).verify(got.body, got.headers)["type"] == "invoice.finalized"


def test_customers_get_an_email_for_an_invoice_and_a_failed_payment_once_each(
    api, tenant, messaging, gateway, receiver
):
    account = billing.subscribed_account(tenant.id, billing.plan(tenant.id, usage_prices=[]), PAST)
    gateway.script(account, ["decline"])
    with Client(app, stage_name="local") as client:
        client.lambda_.invoke("rebill_schedule", client.events.generate_cw_event("aws.events", "x", {}, []))

    pump_until(messaging, lambda: len(sent_emails()) >= 2)
    pump_until(messaging, lambda: True)

    subjects = sorted(e["subject"] for e in sent_emails())
    assert len(subjects) == 2
    assert subjects[0].startswith("Invoice ") and subjects[1].startswith("Payment failed for invoice ")
    assert all(e["source"] == '"Acme" <billing@example.com>' or e["source"].startswith("Acme <") for e in sent_emails())


# --- the API -------------------------------------------------------------------------------------


def test_an_endpoint_shows_its_secret_once_and_only_admins_manage_endpoints(api, tenant, other_tenant):
    made = _endpoint(api, tenant, "https://hooks.example.com/billing", events=["*"])
    shown = api.get(f"/v1/webhook_endpoints/{made['id']}", tenant.admin)
    listed = api.get("/v1/webhook_endpoints", tenant.admin)

    assert made["secret"].startswith("whsec_") and "secret" not in shown.body
    assert [e["id"] for e in listed.body["data"]] == [made["id"]] and "secret" not in listed.body["data"][0]
    assert shown.body["enabled_events"] == ["*"] and shown.body["enabled"] is True
    assert api.get("/v1/webhook_endpoints", tenant.user).status == 403
    assert api.get(f"/v1/webhook_endpoints/{made['id']}", other_tenant.admin).status == 404
    deleted = api.call("DELETE", f"/v1/webhook_endpoints/{made['id']}", token=tenant.admin)
    assert deleted.status == 200 and deleted.body["deleted"] is True
    assert api.get(f"/v1/webhook_endpoints/{made['id']}", tenant.admin).status == 404


def test_a_replayed_create_or_rotation_does_not_show_the_secret_again(api, tenant):
    key = {"Idempotency-Key": "endpoint-once"}
    body = {"url": "https://hooks.example.com/billing", "enabled_events": ["*"]}
    first = api.post("/v1/webhook_endpoints", body, tenant.admin, headers=key)
    again = api.post("/v1/webhook_endpoints", body, tenant.admin, headers=key)
    rotate = f"/v1/webhook_endpoints/{first.body['id']}/rotate"
    rotated = api.post(rotate, None, tenant.admin, headers={"Idempotency-Key": "rotate-once"})
    rotated_again = api.post(rotate, None, tenant.admin, headers={"Idempotency-Key": "rotate-once"})

    assert first.body["secret"].startswith("whsec_") and again.body["id"] == first.body["id"]
    assert again.headers.get("Idempotent-Replayed") == "true" and again.body["secret"] is None
    assert rotated.body["secret"].startswith("whsec_") and rotated_again.body["secret"] is None
    with transaction(tenant_id=tenant.id) as tx:  # the stored answers keep no secret either
        stored = tx.scalar("SELECT string_agg(CAST(response_body AS text), ' ') FROM idempotency_keys")
    assert "whsec_" not in stored


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://hooks.example.com/billing", "url_scheme_not_allowed"),
        ("https://user:pw@hooks.example.com/", "url_invalid"),
        ("https://169.254.169.254/latest/meta-data/", "url_host_not_allowed"),
        ("https://10.0.0.5/hooks", "url_host_not_allowed"),
        ("ftp://hooks.example.com/", "url_scheme_not_allowed"),
    ],
)
def test_an_endpoint_url_that_could_reach_inside_is_refused_with_its_reason(api, tenant, url, code):
    reply = api.post("/v1/webhook_endpoints", {"url": url, "enabled_events": ["*"]}, tenant.admin)

    assert reply.status == 400, reply.body
    assert reply.body["error"]["code"] == code and reply.body["error"]["details"][0]["field"] == "url"


def test_a_deployed_stage_takes_https_urls_on_port_443_only_and_no_loopback(database_url, tenant):
    with Client(app, stage_name="dev") as client:  # the dev stage as deployed (STAGE=dev)
        reset_settings()
        deployed = Api(client)
        for url, code in (
            ("https://hooks.example.com:8443/", "url_port_not_allowed"),
            ("http://127.0.0.1:8000/hooks", "url_scheme_not_allowed"),
            ("https://127.0.0.1/hooks", "url_host_not_allowed"),
            ("https://localhost/hooks", "url_host_not_allowed"),
        ):
            reply = deployed.post("/v1/webhook_endpoints", {"url": url, "enabled_events": ["*"]}, tenant.admin)
            assert (reply.status, reply.body["error"]["code"]) == (400, code)
        good = {"url": "https://hooks.example.com:443/", "enabled_events": ["*"]}
        assert deployed.post("/v1/webhook_endpoints", good, tenant.admin).status == 201
    reset_settings()


def test_an_unknown_event_type_is_a_field_error_and_a_tenant_has_at_most_16_endpoints(api, tenant):
    bad = api.post("/v1/webhook_endpoints", {"url": "https://a.example.com/", "enabled_events": ["nope"]}, tenant.admin)
    for i in range(16):
        _endpoint(api, tenant, f"https://a.example.com/{i}")
    seventeenth = api.post(
        "/v1/webhook_endpoints", {"url": "https://a.example.com/", "enabled_events": ["*"]}, tenant.admin
    )

    assert bad.status == 400 and bad.body["error"]["details"][0]["field"].startswith("enabled_events")
    assert seventeenth.status == 403 and seventeenth.body["error"]["code"] == "webhook_endpoints_limit_reached"
    assert len(api.get("/v1/webhook_endpoints?limit=100", tenant.admin).body["data"]) == 16


def test_the_event_log_lists_a_tenants_events_newest_first_with_a_type_filter(api, account, catalog, other_tenant):
    api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user)

    everything = api.get("/v1/notifications", catalog.user).body
    created = api.get("/v1/notifications?type=account.created", catalog.user).body
    page = api.get("/v1/notifications?limit=1", catalog.user).body
    rest = api.get(f"/v1/notifications?starting_after={page['next_cursor']}", catalog.user).body

    types = [e["type"] for e in everything["data"]]
    assert types[-1] == "account.created" and "subscription.created" in types
    assert [e["data"]["object"]["id"] for e in created["data"]] == [account["id"]]
    assert created["data"][0]["data"]["object"] == account | created["data"][0]["data"]["object"]
    assert page["has_more"] and [e["id"] for e in page["data"] + rest["data"]] == [e["id"] for e in everything["data"]]
    assert api.get("/v1/notifications?type=nope", catalog.user).status == 400
    assert api.get("/v1/notifications", other_tenant.user).body["data"] == []
    assert api.get(f"/v1/notifications/{created['data'][0]['id']}", other_tenant.user).status == 404


def test_an_answer_with_nul_bytes_is_recorded_and_never_holds_the_lane(api, tenant, messaging, gateway, receiver):
    hooks = receiver()
    hooks.body = b"\x00\x01binary\x00" * 10
    endpoint = _endpoint(api, tenant, hooks.url)
    _renewal_due(tenant.id)

    pump_until(messaging, lambda: [d["status"] for d in _deliveries(api, tenant, endpoint["id"])] == ["delivered"])

    [delivery] = _deliveries(api, tenant, endpoint["id"])
    assert (
        "\x00" not in delivery["attempts"][0]["response_excerpt"]
        and "binary" in delivery["attempts"][0]["response_excerpt"]
    )
    assert len(hooks.requests) == 1


def test_an_account_that_goes_inactive_and_a_trial_that_ends_each_email_the_customer(
    api, catalog, account, messaging, gateway, monkeypatch
):
    monkeypatch.setenv("DUNNING_RETRY_DAYS", "")  # no retries: the first decline makes the account inactive
    reset_settings()
    gateway.script(account["id"], ["decline"])
    api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user)
    other = api.post("/v1/accounts", {"email": "tess@customer.test", "name": "Tess", "currency": "USD"}, catalog.user)
    api.post("/v1/subscriptions", {"account_id": other.body["id"], "plan": "pro", "trial_days": 2}, catalog.user)
    with Client(app, stage_name="local") as client:
        client.lambda_.invoke("rebill_schedule", client.events.generate_cw_event("aws.events", "x", {}, []))

    pump_until(messaging, lambda: len(sent_emails()) >= 5)
    pump_until(messaging, lambda: True)

    to = {e["subject"]: e["destinations"]["ToAddresses"] for e in sent_emails()}
    assert to["Your account is inactive"] == ["ada@customer.test"]
    assert any(s.startswith("Payment failed for invoice") for s in to)
    [trial] = [s for s in to if "trial ends on" in s]
    assert to[trial] == ["tess@customer.test"]
    assert api.get(f"/v1/accounts/{account['id']}", catalog.user).body["status"] == "INACTIVE"
    reset_settings()


def test_usage_events_rejected_beside_accepted_ones_or_a_batch_rejected_whole_are_events_that_store_nothing(
    api, account, catalog
):
    api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user)  # usage bills from here
    now = datetime.now(UTC).isoformat()
    good = {"event_id": "u1", "account_id": account["id"], "metric": "api_calls", "quantity": 1, "timestamp": now}
    bad = {**good, "event_id": "u2", "timestamp": "2001-01-01T00:00:00Z"}

    mixed = api.post("/v1/events", {"events": [good, bad]}, catalog.user)
    whole = api.post("/v1/events", {"events": [{**bad, "event_id": "u3"}]}, catalog.user)

    assert (mixed.status, whole.status) == (200, 422)
    whole_event, mixed_event = api.get("/v1/notifications?type=usage.rejected", catalog.user).body["data"]
    rejection = mixed_event["data"]["object"]
    assert (rejection["accepted"], rejection["rejected"], rejection["data"][0]["event_id"]) == (1, 1, "u2")
    assert rejection["data"][0]["reasons"]
    rejection = whole_event["data"]["object"]
    assert (rejection["accepted"], rejection["rejected"], rejection["data"][0]["event_id"]) == (0, 1, "u3")
    with transaction(tenant_id=catalog.id) as tx:  # the 422 stored no usage: only the accepted u1 is there
        assert [r[0] for r in tx.run("SELECT event_id FROM usage_events")] == ["u1"]
