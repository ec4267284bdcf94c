"""Prices per currency through the real billing paths: one plan code priced in USD, EUR, JPY and KWD,
and an account's currency picking the price on its first bill, its renewals, a plan change and the
documents it is sent. Every figure can be checked by hand (docs/pricing_currencies.md walks them)."""

import io
from datetime import UTC, datetime

import pypdf
import pytest

from chalicelib import errors, notifications
from chalicelib.billing import documents, invoice_documents, lifecycle, rebill, subscriptions
from chalicelib.db import transaction
from tests import billing

APR_1 = datetime(2027, 4, 1, tzinfo=UTC)  # April has 30 days
APR_16 = datetime(2027, 4, 16, tzinfo=UTC)  # halfway through April
MAY_1 = datetime(2027, 5, 1, tzinfo=UTC)


def _calls(unit_amounts: dict) -> list[dict]:
    """A per-call usage price: its own unit_amount in USD, the others as currency_options."""
    others = {code: {"unit_amount": unit} for code, unit in unit_amounts.items() if code != "USD"}
    return [
        {"metric": "api_calls", "aggregation": "sum", "unit_amount": unit_amounts["USD"], "currency_options": others}
    ]


# One plan code, four currencies: USD 49.00, EUR 45.00, JPY 7,000, KWD 15.000 a month, and per API
# call USD 0.02, EUR 0.03, JPY 1, KWD 0.001.
TEAM = {"amount": 4900, "amounts": {"EUR": 4500, "JPY": 7000, "KWD": 15000}}
TEAM_CALLS = _calls({"USD": 2, "EUR": 3, "JPY": 1, "KWD": 1})
SCALE = {"amount": 9900, "amounts": {"EUR": 9000, "JPY": 14000, "KWD": 30000}}


@pytest.fixture
def tenant(make_tenant):
    tenant_id = make_tenant()
    billing.priced_plan(tenant_id, "team", TEAM["amount"], amounts=TEAM["amounts"], usage_prices=TEAM_CALLS)
    billing.priced_plan(tenant_id, "scale", SCALE["amount"], amounts=SCALE["amounts"])
    billing.priced_plan(tenant_id, "dollars", 1900)  # USD only
    return tenant_id


def _update(tenant, subscription, at, **fields):
    with transaction(tenant_id=tenant) as tx:
        return lifecycle.update(tx, billing.actor(tenant), lifecycle.Update(subscription, **fields), now=at)


def _lines(invoice: dict) -> list[tuple[str, int, int]]:
    return [(kind, quantity, amount) for kind, quantity, amount, _start, _end in invoice["lines"]]


def _currencies(tenant, account) -> set[tuple[str, str]]:
    with transaction(tenant_id=tenant) as tx:
        rows = tx.all(
            "SELECT 'invoice' AS what, currency FROM invoices WHERE account_id = :a"
            " UNION SELECT 'line', l.currency FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id"
            " WHERE i.account_id = :a UNION SELECT 'ledger', currency FROM ledger_entries WHERE account_id = :a",
            a=account,
        )
    return {(row["what"], row["currency"]) for row in rows}


def test_a_eur_account_is_billed_the_eur_price_on_its_first_bill_and_its_renewal(tenant, gateway):
    account, subscription = billing.subscribe(tenant, "team", APR_1, currency="EUR")
    billing.usage(tenant, account, APR_16, 1500, "calls-1")

    assert rebill.renew(tenant, account, MAY_1, MAY_1) == "succeeded"

    first, renewal = billing.invoices_of(tenant, account)
    assert _lines(first) == [("subscription", 1, 4500)]  # EUR 45.00 in advance, not USD 49.00
    assert _lines(renewal) == [("subscription", 1, 4500), ("usage", 1500, 4500)]  # 1,500 calls x EUR 0.03
    assert renewal["total"] == 9000
    assert _currencies(tenant, account) == {("invoice", "EUR"), ("line", "EUR"), ("ledger", "EUR")}
    assert billing.state(tenant, account)["entries"] == [
        ("charge", 4500),
        ("payment", -4500),
        ("charge", 9000),
        ("payment", -9000),
    ]
    with transaction(tenant_id=tenant) as tx:
        shown = subscriptions.get(tx, subscription)
    assert (shown["amount"], shown["currency"]) == (4500, "EUR")


def test_an_upgrade_between_plans_priced_per_currency_prorates_in_the_accounts_currency(tenant, gateway):
    account, subscription = billing.subscribe(tenant, "team", APR_1, currency="EUR")

    _update(tenant, subscription, APR_16, plan="scale")  # an upgrade: now, prorations on the next invoice

    assert rebill.renew(tenant, account, MAY_1, MAY_1) == "succeeded"
    first, renewal = billing.invoices_of(tenant, account)
    assert first["total"] == 4500
    assert _lines(renewal) == [
        ("proration", 1, -2250),  # EUR 45.00 x 15/30 days unused
        ("proration", 1, 4500),  # EUR 90.00 x 15/30 days remaining
        ("subscription", 1, 9000),  # May in advance at scale's EUR price
    ]
    assert renewal["total"] == 11250
    assert billing.state(tenant, account)["balance"] == 0


def test_a_downgrade_scheduled_for_the_period_end_keeps_the_accounts_currency(tenant, gateway):
    account, subscription = billing.subscribe(tenant, "scale", APR_1, currency="JPY")

    after = _update(tenant, subscription, APR_16, plan="team")

    assert (after["amount"], after["currency"], after["pending_change"]["amount"]) == (14000, "JPY", 7000)
    assert rebill.renew(tenant, account, MAY_1, MAY_1) == "succeeded"
    assert _lines(billing.invoices_of(tenant, account)[-1]) == [("subscription", 1, 7000)]


def test_a_change_to_a_plan_without_a_price_in_the_accounts_currency_is_422_and_changes_nothing(tenant, gateway):
    account, subscription = billing.subscribe(tenant, "team", APR_1, currency="EUR")
    with transaction(tenant_id=tenant) as tx:
        before = subscriptions.get(tx, subscription)

    with pytest.raises(errors.UnprocessableState) as refused:
        _update(tenant, subscription, APR_16, plan="dollars")

    assert refused.value.code == "currency_not_offered"
    assert str(refused.value) == "the plan has no price in EUR (it is priced in USD)"
    with transaction(tenant_id=tenant) as tx:
        assert subscriptions.get(tx, subscription) == before
    assert len(billing.invoices_of(tenant, account)) == 1


def _documents(tenant, account) -> tuple[str, str]:
    """The renewal invoice's PDF text and finalized-invoice email text, as the customer gets them."""
    invoice_id = str(billing.invoices_of(tenant, account)[-1]["id"])
    with transaction(tenant_id=tenant) as tx:
        pdf = documents.render_pdf(invoice_documents.of(tx, invoice_id))
        email = notifications.invoice_finalized_email(notifications.invoice_recipient(tx, tenant, invoice_id, MAY_1))
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    text = " ".join(" ".join(page.extract_text().split()) for page in reader.pages)
    return text, email["Body"]["Text"]["Data"]


def test_a_jpy_invoice_is_rendered_without_decimals(tenant, gateway):
    account, _subscription = billing.subscribe(tenant, "team", APR_1, currency="JPY")
    billing.usage(tenant, account, APR_16, 1000, "calls-1")
    assert rebill.renew(tenant, account, MAY_1, MAY_1) == "succeeded"

    pdf, email = _documents(tenant, account)

    assert _lines(billing.invoices_of(tenant, account)[-1]) == [("subscription", 1, 7000), ("usage", 1000, 1000)]
    assert "Team (team) 2027-05-01 – 2027-06-01 1 JPY 7,000 JPY 7,000" in pdf
    assert "1,000 JPY 1 JPY 1,000" in pdf  # 1,000 calls at JPY 1
    assert "Subtotal JPY 8,000 Total JPY 8,000" in pdf
    assert "for JPY 8,000 is ready" in email


def test_a_kwd_invoice_is_rendered_with_three_decimals(tenant, gateway):
    account, _subscription = billing.subscribe(tenant, "team", APR_1, currency="KWD")
    billing.usage(tenant, account, APR_16, 1234, "calls-1")
    assert rebill.renew(tenant, account, MAY_1, MAY_1) == "succeeded"

    pdf, email = _documents(tenant, account)

    assert _lines(billing.invoices_of(tenant, account)[-1]) == [("subscription", 1, 15000), ("usage", 1234, 1234)]
    assert "Team (team) 2027-05-01 – 2027-06-01 1 KWD 15.000 KWD 15.000" in pdf
    assert "1,234 KWD 0.001 KWD 1.234" in pdf  # 1,234 calls at KWD 0.001
    assert "Subtotal KWD 16.234 Total KWD 16.234" in pdf
    assert "for KWD 16.234 is ready" in email


def test_the_subscription_email_states_the_price_in_the_accounts_currency_times_its_seats(tenant, gateway):
    _account, subscription = billing.subscribe(tenant, "team", APR_1, currency="JPY", quantity=3)

    with transaction(tenant_id=tenant) as tx:
        email = notifications.subscription_created_email(notifications.recipient_of(tx, subscription))

    said = email["Body"]["Text"]["Data"]
    assert "Your Team subscription is active: JPY 21,000 per period, next renewal 2027-05-01." in said
