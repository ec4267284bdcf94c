"""GET /v1/accounts/{id}/upcoming_invoice: the next invoice as the daily round would issue it now, on
the usage so far, computed by the round's own code and writing nothing."""

from datetime import UTC, datetime, timedelta

from tests import billing

PAST = datetime.now(UTC) - timedelta(days=40)
SHOWN = ("kind", "description", "metric", "quantity", "unit_amount", "amount", "currency", "invoice_item_id")


def _due_with_usage_and_an_item(api, tenant) -> str:
    plan = billing.plan(tenant.id)  # 4900 a month, api_calls at 2 each
    account = billing.subscribed_account(tenant.id, plan, PAST)
    billing.usage(tenant.id, account, PAST + timedelta(days=3), 120, "u-1")
    billing.usage(tenant.id, account, PAST + timedelta(days=9), 30, "u-2")
    item = {"account_id": account, "currency": "USD", "description": "Setup", "amount": 1500}
    assert api.post("/v1/invoice_items", item, tenant.user).status == 201
    return account


def _lines(invoice: dict) -> list[tuple]:
    return [tuple(line[name] for name in SHOWN) for line in invoice["lines"]["data"]]


def test_the_upcoming_invoice_is_the_invoice_the_rebill_then_issues_and_writes_nothing(api, tenant, gateway):
    account = _due_with_usage_and_an_item(api, tenant)
    books = billing.snapshot_books(tenant.id, account)

    upcoming = api.get(f"/v1/accounts/{account}/upcoming_invoice", tenant.user)

    assert upcoming.status == 200, upcoming.body
    assert billing.snapshot_books(tenant.id, account) == books
    preview = upcoming.body
    assert (preview["id"], preview["number"], preview["status"]) == (None, None, "draft")
    # the new period's fee in advance, the closed period's 150 api_calls at 2, the pending item
    assert [(kind, amount) for kind, *_rest, amount, _cur, _item in _lines(preview)] == [
        ("subscription", 4900),
        ("usage", 300),
        ("invoice_item", 1500),
    ]
    assert (preview["subtotal"], preview["total"], preview["amount_due"]) == (6700, 6700, 6700)

    assert api.post(f"/v1/accounts/{account}/rebill", None, tenant.admin).body["outcome"] == "succeeded"
    (issued_id,) = [i["id"] for i in billing.invoices_of(tenant.id, account) if i["billing_reason"] != "manual"]
    issued = api.get(f"/v1/invoices/{issued_id}", tenant.user).body

    assert _lines(issued) == _lines(preview)
    names = ("account_id", "subscription_id", "billing_reason", "currency", "subtotal", "total")
    assert {name: issued[name] for name in names} == {name: preview[name] for name in names}
    assert (issued["period_start"], issued["period_end"]) == (preview["period_start"], preview["period_end"])
    assert [(line["period_start"], line["period_end"]) for line in issued["lines"]["data"]] == [
        (line["period_start"], line["period_end"]) for line in preview["lines"]["data"]
    ]


def test_an_account_without_a_live_subscription_has_no_upcoming_invoice(api, tenant, other_tenant):
    account = api.post("/v1/accounts", {"email": "a@x.test", "name": "A", "currency": "USD"}, tenant.user).body
    theirs = billing.subscribed_account(other_tenant.id, billing.plan(other_tenant.id), PAST)

    none = api.get(f"/v1/accounts/{account['id']}/upcoming_invoice", tenant.user)
    elsewhere = api.get(f"/v1/accounts/{theirs}/upcoming_invoice", tenant.user)

    assert (none.status, none.body["error"]["code"]) == (404, "invoice_upcoming_none")
    assert (elsewhere.status, elsewhere.body["error"]["code"]) == (404, "resource_missing")
