"""Metered prices that read an event property, fed through POST /v1/events: the usage API takes property
values as strings (as Stripe's meter events do), and a string of digits is the whole number it spells,
in whichever currency the account is billed."""

from datetime import UTC, datetime, timedelta

from chalicelib.billing import rebill
from chalicelib.db import transaction
from tests import billing

FEES = {
    "metric": "payments",
    "aggregation": "sum",
    "model": "percentage",
    "field": "amount",
    "rate": "2.5",
    "fixed_amount": 30,
}
PLAN = {
    "code": "fees",
    "name": "Fees",
    "interval": "month",
    "amount": 0,
    "currency": "USD",
    "amounts": {"KWD": 0},
    "usage_prices": [{**FEES, "currency_options": {"KWD": {"fixed_amount": 300}}}],
}


def _renewed_with_payments(api, tenant, currency: str, *amounts: str) -> tuple[int, int]:
    """An account in ``currency`` on the plan, its payments sent through the API, renewed: its fee line."""
    assert api.post("/v1/plans", PLAN, tenant.admin).status in (201, 409)
    plan = api.get("/v1/plans", tenant.user).body["data"][0]["id"]
    account = billing.subscribed_account(tenant.id, plan, datetime.now(UTC) - timedelta(days=10))
    with transaction(tenant_id=tenant.id) as tx:
        tx.run("UPDATE accounts SET currency = :c WHERE id = :a", c=currency, a=account)
        due = tx.scalar("SELECT next_billing_at FROM accounts WHERE id = :a", a=account)
    now = datetime.now(UTC).isoformat()
    events = [
        {
            "event_id": f"{currency}-{n}",
            "account_id": account,
            "metric": "payments",
            "quantity": 1,
            "timestamp": now,
            "properties": {"amount": amount},
        }
        for n, amount in enumerate(amounts)
    ]
    assert api.post("/v1/events", {"events": events}, tenant.user).body["accepted"] == len(events)
    assert rebill.renew(tenant.id, account, due, due) == "succeeded"
    with transaction(tenant_id=tenant.id) as tx:
        line = tx.one(
            "SELECT quantity, amount FROM invoice_lines WHERE kind = 'usage' AND metric = 'payments'"
            " AND invoice_id IN (SELECT id FROM invoices WHERE account_id = :a)",
            a=account,
        )
    return line["quantity"], line["amount"]


def test_a_percentage_price_bills_the_amounts_sent_as_event_properties(api, tenant, gateway):
    # 2.5% of 1000 + 30 = 55; of 2000 + 30 = 80; "12.50" is not a whole number of minor units: no fee
    assert _renewed_with_payments(api, tenant, "USD", "1000", "2000", "12.50") == (3000, 135)


def test_a_percentage_prices_fixed_fee_is_the_one_in_the_accounts_currency(api, tenant, gateway):
    # KWD: 2.5% of 1000 + 300 = 325; of 2000 + 300 = 350 (the USD fee would be 30)
    assert _renewed_with_payments(api, tenant, "KWD", "1000", "2000") == (3000, 675)
