"""Invoices through the API: one-off items and invoices, credit notes, refunds, voids, the documents,
and the refusals (every one a 4xx with a code that changes nothing)."""

import io
import re
from html.parser import HTMLParser

import pytest
from pypdf import PdfReader

from chalicelib.billing import calendar, collection, engine
from chalicelib.db import transaction


@pytest.fixture
def ledger_of(api, catalog):
    def read(account_id):
        body = api.get(f"/v1/accounts/{account_id}/ledger", catalog.user).body
        return [(entry["entry_type"], entry["amount"]) for entry in body["data"]], body["balance"]

    return read


def _item(api, catalog, account, amount=2500, **extra):
    body = {"account_id": account["id"], "currency": "USD", "description": "Onboarding workshop", "amount": amount}
    reply = api.post("/v1/invoice_items", {**body, **extra}, catalog.user)
    assert reply.status == 201, reply.body
    return reply.body


def _one_off(api, catalog, account, **body):
    reply = api.post("/v1/invoices", {"account_id": account["id"], **body}, catalog.user)
    assert reply.status == 201, reply.body
    return reply.body


def test_pending_items_land_on_a_one_off_invoice_that_is_numbered_and_paid(api, catalog, account, gateway, ledger_of):
    _item(api, catalog, account, 2500)
    reply = api.post(
        "/v1/invoice_items",
        {
            "account_id": account["id"],
            "currency": "USD",
            "description": "Extra seats",
            "unit_amount": 300,
            "quantity": 3,
        },
        catalog.user,
    )
    assert (reply.status, reply.body["amount"], reply.body["invoice_id"]) == (201, 900, None)

    invoice = _one_off(api, catalog, account, description="Setup")

    assert (invoice["billing_reason"], invoice["status"], invoice["total"], invoice["amount_paid"]) == (
        "manual",
        "paid",
        3400,
        3400,
    )
    assert re.fullmatch(r"[A-Z0-9]{8}-00000\d", invoice["number"])
    assert [line["kind"] for line in invoice["lines"]["data"]] == ["invoice_item", "invoice_item"]
    pending = api.get(f"/v1/invoice_items?account_id={account['id']}&pending=true", catalog.user).body["data"]
    assert pending == []
    entries, balance = ledger_of(account["id"])
    assert (entries[-2:], balance) == ([("charge", 3400), ("payment", -3400)], 0)
    assert gateway.charges[-1][2:] == (3400, "USD")


def test_an_item_lands_on_the_subscriptions_next_invoice(api, catalog, account, gateway):
    _item(api, catalog, account, 1200)
    reply = api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user)
    assert reply.status == 201
    with transaction(tenant_id=catalog.id) as tx:  # what the generate-invoice consumer does with its event
        engine.bill_first_period(tx, catalog.id, reply.body["id"])

    [first] = api.get(f"/v1/invoices?account_id={account['id']}", catalog.user).body["data"]
    lines = api.get(f"/v1/invoices/{first['id']}", catalog.user).body["lines"]["data"]
    assert [(line["kind"], line["amount"]) for line in lines] == [("subscription", 4900), ("invoice_item", 1200)]
    assert first["total"] == 6100


def test_an_item_on_a_free_plans_first_invoice_is_collected(api, catalog, account, gateway):
    free = {"code": "free", "name": "Free", "interval": "month", "amount": 0, "currency": "USD"}
    assert api.post("/v1/plans", free, catalog.admin).status == 201
    _item(api, catalog, account, 1500)
    reply = api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "free"}, catalog.user)
    with transaction(tenant_id=catalog.id) as tx:
        engine.bill_first_period(tx, catalog.id, reply.body["id"])
    collection.settle_pending(catalog.id, account["id"], calendar.utcnow())

    [first] = api.get(f"/v1/invoices?account_id={account['id']}", catalog.user).body["data"]
    assert (first["total"], first["status"], first["amount_paid"]) == (1500, "paid", 1500)
    assert gateway.charges[-1][2] == 1500


def test_a_credit_note_on_an_open_invoice_lowers_what_is_due_and_can_settle_it(
    api, catalog, account, gateway, ledger_of
):
    gateway.script(account["id"], ["decline"])
    _item(api, catalog, account, 5000)
    invoice = _one_off(api, catalog, account)
    assert (invoice["status"], invoice["amount_due"]) == ("open", 5000)

    note = api.post(
        "/v1/credit_notes", {"invoice": invoice["id"], "amount": 1500, "reason": "order_change"}, catalog.admin
    )

    assert note.status == 201, note.body
    assert (note.body["pre_payment_amount"], note.body["credit_amount"], note.body["refund_amount"]) == (1500, 0, 0)
    assert re.fullmatch(r"[A-Z0-9]{8}-CN-000001", note.body["number"])
    after = api.get(f"/v1/invoices/{invoice['id']}", catalog.user).body
    assert (after["amount_due"], after["pre_payment_credit_notes_amount"], after["status"]) == (3500, 1500, "open")
    rest = api.post("/v1/credit_notes", {"invoice": invoice["id"], "reason": "duplicate"}, catalog.admin)
    assert (rest.status, rest.body["amount"]) == (201, 3500)
    settled = api.get(f"/v1/invoices/{invoice['id']}", catalog.user).body
    assert (settled["status"], settled["amount_due"]) == ("paid", 0)
    assert api.get(f"/v1/accounts/{account['id']}", catalog.user).body["status"] == "ACTIVE"  # out of dunning
    entries, balance = ledger_of(account["id"])
    assert balance == 0 and entries[-2:] == [("credit", -1500), ("credit", -3500)]


def test_a_credit_note_on_a_paid_invoice_refunds_through_the_gateway_and_credits_the_rest(
    api, catalog, account, gateway, ledger_of
):
    _item(api, catalog, account, 4000)
    invoice = _one_off(api, catalog, account)
    body = {"invoice": invoice["id"], "amount": 3000, "refund_amount": 1000, "reason": "product_unsatisfactory"}

    note = api.post("/v1/credit_notes", body, catalog.admin)

    assert note.status == 201, note.body
    assert (note.body["credit_amount"], note.body["refund_amount"], note.body["refund_status"]) == (
        2000,
        1000,
        "succeeded",
    )
    assert [refund[2] for refund in gateway.refunds] == [1000]
    entries, balance = ledger_of(account["id"])
    assert entries[-2:] == [("credit", -3000), ("refund", 1000)]
    assert balance == -2000
    assert api.get(f"/v1/accounts/{account['id']}", catalog.user).body["credit_balance"] == 2000
    # the customer's balance pays the next invoice before the gateway is asked
    _item(api, catalog, account, 2500)
    nxt = _one_off(api, catalog, account)
    assert (nxt["credit_applied"], nxt["amount_paid"], nxt["status"]) == (2000, 500, "paid")


def test_a_failed_refund_returns_the_money_to_the_customers_balance(api, catalog, account, gateway, ledger_of):
    _item(api, catalog, account, 4000)
    invoice = _one_off(api, catalog, account)
    gateway.script(account["id"], ["decline"])

    note = api.post(
        "/v1/credit_notes", {"invoice": invoice["id"], "refund_amount": 4000, "reason": "fraudulent"}, catalog.admin
    )

    assert (note.status, note.body["refund_status"]) == (201, "failed")
    entries, balance = ledger_of(account["id"])
    assert entries[-3:] == [("credit", -4000), ("refund", 4000), ("credit", -4000)]
    assert balance == -4000


def test_voiding_an_open_invoice_reverses_its_charge_and_a_paid_one_cannot_be_voided(
    api, catalog, account, gateway, ledger_of
):
    _item(api, catalog, account, 700)
    paid = _one_off(api, catalog, account)
    gateway.script(account["id"], ["decline"])
    _item(api, catalog, account, 5000)
    open_invoice = _one_off(api, catalog, account)

    voided = api.post(f"/v1/invoices/{open_invoice['id']}/void", None, catalog.admin)

    assert (voided.status, voided.body["status"], voided.body["amount_due"]) == (200, "void", 0)
    entries, balance = ledger_of(account["id"])
    assert ("void", -5000) in entries and balance == 0
    refused = api.post(f"/v1/invoices/{paid['id']}/void", None, catalog.admin)
    assert (refused.status, refused.body["error"]["code"]) == (422, "invoice_not_voidable")
    again = api.post(f"/v1/invoices/{open_invoice['id']}/void", None, catalog.admin)
    assert (again.status, again.body["error"]["code"]) == (422, "invoice_not_voidable")
    assert ledger_of(account["id"]) == (entries, balance)


def test_an_open_invoice_marked_uncollectible_is_still_owed_but_ends_dunning(api, catalog, account, gateway):
    gateway.script(account["id"], ["decline"])
    _item(api, catalog, account, 5000)
    invoice = _one_off(api, catalog, account)
    assert api.get(f"/v1/accounts/{account['id']}", catalog.user).body["status"] == "PENDING"

    marked = api.post(f"/v1/invoices/{invoice['id']}/mark_uncollectible", None, catalog.admin)

    assert (marked.status, marked.body["status"], marked.body["amount_due"]) == (200, "uncollectible", 5000)
    assert marked.body["marked_uncollectible_at"] is not None
    after = api.get(f"/v1/accounts/{account['id']}", catalog.user).body
    assert (after["status"], after["balance"]) == ("ACTIVE", 5000)


def test_voiding_a_draft_sends_its_items_to_the_next_invoice(api, catalog, account, gateway):
    item = _item(api, catalog, account, 800)
    draft = _one_off(api, catalog, account, finalize=False)
    assert api.get(f"/v1/invoice_items/{item['id']}", catalog.user).body["invoice_id"] == draft["id"]

    voided = api.post(f"/v1/invoices/{draft['id']}/void", None, catalog.admin)

    assert (voided.status, voided.body["status"]) == (200, "void")
    assert api.get(f"/v1/invoice_items/{item['id']}", catalog.user).body["invoice_id"] is None
    again = _one_off(api, catalog, account)
    assert (again["total"], again["status"]) == (800, "paid")


def test_an_inactive_account_gets_no_one_off_invoice(api, catalog, account, gateway):
    _item(api, catalog, account, 800)
    with transaction(tenant_id=catalog.id) as tx:
        tx.run("UPDATE accounts SET status = 'INACTIVE' WHERE id = :a", a=account["id"])

    refused = api.post("/v1/invoices", {"account_id": account["id"]}, catalog.user)

    assert (refused.status, refused.body["error"]["code"]) == (422, "account_inactive")
    assert api.get(f"/v1/invoices?account_id={account['id']}", catalog.user).body["data"] == []


def test_bad_corrections_are_refused_with_a_code_and_change_nothing(
    api, catalog, account, other_tenant, gateway, ledger_of
):
    _item(api, catalog, account, 4000)
    paid = _one_off(api, catalog, account)
    _item(api, catalog, account, 100)
    draft = _one_off(api, catalog, account, finalize=False)
    before = ledger_of(account["id"])
    cases = [
        ({"invoice": paid["id"], "amount": 4001, "reason": "duplicate"}, 422, "amount_exceeds_creditable"),
        ({"invoice": draft["id"], "reason": "duplicate"}, 422, "invoice_not_finalized"),
        ({"invoice": paid["id"], "currency": "EUR", "reason": "duplicate"}, 422, "currency_mismatch"),
        ({"invoice": paid["id"], "refund_amount": 4001, "reason": "duplicate"}, 422, "amounts_do_not_add_up"),
        (
            {"invoice": paid["id"], "amount": 100, "refund_amount": 60, "credit_amount": 60, "reason": "duplicate"},
            422,
            "amounts_do_not_add_up",
        ),
        ({"invoice": paid["id"], "reason": "because"}, 400, None),
        ({"invoice": "00000000-0000-4000-8000-000000000000", "reason": "duplicate"}, 404, "resource_missing"),
    ]
    for body, status, code in cases:
        reply = api.post("/v1/credit_notes", body, catalog.admin)
        assert reply.status == status, (body, reply.body)
        assert code is None or reply.body["error"]["code"] == code, (body, reply.body)
    other_items = api.post(
        "/v1/invoice_items",
        {"account_id": account["id"], "currency": "USD", "description": "x", "amount": 1},
        other_tenant.user,
    )
    assert other_items.status == 404
    eur = api.post(
        "/v1/invoice_items",
        {"account_id": account["id"], "currency": "EUR", "description": "x", "amount": 1},
        catalog.user,
    )
    assert (eur.status, eur.body["error"]["code"]) == (422, "currency_mismatch")
    assert api.post("/v1/credit_notes", {"invoice": paid["id"], "reason": "duplicate"}, catalog.user).status == 403
    nothing = api.post("/v1/invoices", {"account_id": account["id"]}, catalog.user)
    assert (nothing.status, nothing.body["error"]["code"]) == (422, "nothing_to_invoice")
    assert ledger_of(account["id"]) == before


def test_a_credit_note_by_line_never_exceeds_the_line(api, catalog, account, gateway):
    _item(api, catalog, account, 1000)
    _item(api, catalog, account, 3000)
    invoice = _one_off(api, catalog, account)
    first, second = invoice["lines"]["data"]

    def credit_line(line, amount):
        body = {"invoice": invoice["id"], "reason": "order_change"}
        return api.post(
            "/v1/credit_notes", {**body, "lines": [{"invoice_line_item": line, "amount": amount}]}, catalog.admin
        )

    ok = credit_line(first["id"], 600)
    too_much = credit_line(first["id"], 401)

    assert (ok.status, ok.body["amount"], ok.body["credit_amount"]) == (201, 600, 600)
    assert (too_much.status, too_much.body["error"]["code"]) == (422, "amount_exceeds_creditable")
    assert too_much.body["error"]["details"][0]["field"] == "lines.0.amount"
    assert second["amount"] == 3000


def test_a_replayed_credit_note_with_the_same_key_changes_nothing(api, catalog, account, gateway, ledger_of):
    _item(api, catalog, account, 4000)
    invoice = _one_off(api, catalog, account)
    body = {"invoice": invoice["id"], "amount": 500, "refund_amount": 500, "reason": "duplicate"}
    headers = {"Idempotency-Key": "cn-once"}

    first = api.post("/v1/credit_notes", body, catalog.admin, headers=headers)
    books = ledger_of(account["id"])
    second = api.post("/v1/credit_notes", body, catalog.admin, headers=headers)

    assert (first.status, second.status, second.headers.get("Idempotent-Replayed")) == (201, 201, "true")
    assert second.body["id"] == first.body["id"]
    assert ledger_of(account["id"]) == books and len(gateway.refunds) == 1


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_the_pdf_and_the_hosted_page_show_the_invoice_and_a_tampered_link_shows_nothing(api, catalog, account, gateway):
    _item(api, catalog, account, 4000)
    invoice = _one_off(api, catalog, account)
    api.post("/v1/credit_notes", {"invoice": invoice["id"], "amount": 500, "reason": "duplicate"}, catalog.admin)

    status, headers, pdf = api.fetch(f"/v1/invoices/{invoice['id']}/pdf", catalog.user, accept="application/pdf")
    headers = {name.lower(): value for name, value in headers.items()}
    assert (status, headers["content-type"]) == (200, "application/pdf")
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert invoice["number"] in text and "Onboarding workshop" in text and "USD 40.00" in text and "-CN-" in text

    link = api.get(f"/v1/invoices/{invoice['id']}", catalog.user).body["hosted_invoice_url"]
    path = link.split("://", 1)[1].split("/", 1)[1]
    status, headers, page = api.fetch(f"/{path}")  # no token: the signed link is the credential
    assert status == 200 and {k.lower(): v for k, v in headers.items()}["content-type"].startswith("text/html")
    parsed = _Text()
    parsed.feed(page.decode())
    assert invoice["number"] in " ".join(parsed.text) and "script" not in parsed.tags
    assert api.fetch(f"/{path}/pdf")[0] == 200
    tampered = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    assert api.fetch(f"/{tampered}")[0] == 404
    assert api.fetch("/v1/hosted_invoices/not-a-link")[0] == 404


def test_an_admin_sets_the_invoice_prefix_and_grace_period_and_a_new_prefix_starts_at_one(api, catalog, account):
    assert api.get("/v1/invoice_settings", catalog.user).body["grace_hours"] == 0  # finalize at once by default
    reply = api.post("/v1/invoice_settings", {"grace_hours": 24, "prefix": "ACME"}, catalog.admin)
    assert (reply.status, reply.body["grace_hours"], reply.body["prefix"]) == (200, 24, "ACME")
    _item(api, catalog, account, 100)
    assert _one_off(api, catalog, account)["number"] == "ACME-000001"
    assert api.post("/v1/invoice_settings", {"grace_hours": 24}, catalog.user).status == 403
    assert api.post("/v1/invoice_settings", {"grace_hours": 10_000}, catalog.admin).status == 400


def test_a_retry_after_the_payment_step_failed_replays_and_never_invoices_twice(api, catalog, account, gateway):
    real_charge, calls = gateway.charge, []

    def broken_once(**kwargs):
        calls.append(kwargs["idempotency_key"])
        if len(calls) == 1:
            raise RuntimeError("the gateway's client blew up")
        return real_charge(**kwargs)

    gateway.charge = broken_once
    body = {"account_id": account["id"], "items": [{"currency": "USD", "description": "Audit", "amount": 900}]}
    headers = {"Idempotency-Key": "one-off-once"}

    first = api.post("/v1/invoices", body, catalog.user, headers=headers)
    again = api.post("/v1/invoices", body, catalog.user, headers=headers)

    assert (first.status, first.body["status"]) == (201, "open")  # committed; its payment is still pending
    assert (again.status, again.headers.get("Idempotent-Replayed"), again.body["id"]) == (201, "true", first.body["id"])
    assert len(api.get(f"/v1/invoices?account_id={account['id']}", catalog.user).body["data"]) == 1
    items = api.get(f"/v1/invoice_items?account_id={account['id']}", catalog.user).body["data"]
    assert [item["invoice_id"] for item in items] == [first.body["id"]]


def test_a_finalized_draft_of_an_inactive_account_is_owed_but_not_pursued(api, catalog, account, gateway):
    _item(api, catalog, account, 800)
    draft = _one_off(api, catalog, account, finalize=False)
    with transaction(tenant_id=catalog.id) as tx:
        tx.run("UPDATE accounts SET status = 'INACTIVE' WHERE id = :a", a=account["id"])

    finalized = api.post(f"/v1/invoices/{draft['id']}/finalize", None, catalog.user)

    assert (finalized.status, finalized.body["status"], finalized.body["amount_due"]) == (200, "uncollectible", 800)
    assert gateway.calls == []


def test_pending_items_cannot_add_up_past_the_largest_amount(api, catalog, account):
    _item(api, catalog, account, 999_999_999_999)

    refused = api.post(
        "/v1/invoice_items",
        {"account_id": account["id"], "currency": "USD", "description": "one more", "amount": 1},
        catalog.user,
    )

    assert (refused.status, refused.body["error"]["code"]) == (422, "amount_too_large")


def test_a_link_with_a_foreign_character_or_for_a_suspended_tenant_is_a_404(api, catalog, account, gateway):
    _item(api, catalog, account, 800)
    invoice = _one_off(api, catalog, account)
    link = api.get(f"/v1/invoices/{invoice['id']}", catalog.user).body["hosted_invoice_url"]
    path = "/" + link.split("://", 1)[1].split("/", 1)[1]

    assert api.fetch(path[:-1] + "%C3%A9")[0] == 404
    with transaction(tenant_id=catalog.id) as tx:
        tx.run("UPDATE tenants SET status = 'suspended'")
    assert api.fetch(path)[0] == 404
