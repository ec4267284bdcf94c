"""The invoice triggers build each invoice's API object once per statement, however many events it has."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.db import transaction
from tests import billing

ANCHOR = datetime(2027, 1, 31, 9, tzinfo=UTC)
BUILDS = "SELECT CAST(COALESCE(NULLIF(current_setting('spy.invoice_object_builds', true), ''), '0') AS integer)"


@pytest.fixture
def counted_builds(owner_conn):
    """invoice_object() (migration 0009), counting its calls in a setting of the calling transaction."""
    owner_conn.run("ALTER FUNCTION invoice_object(invoices) RENAME TO invoice_object_counted")
    owner_conn.run(
        "CREATE FUNCTION invoice_object(i invoices) RETURNS jsonb LANGUAGE sql STABLE AS $$"
        " SELECT invoice_object_counted(i) || jsonb_build_object() FROM (SELECT set_config("
        f"'spy.invoice_object_builds', CAST(({BUILDS}) + 1 AS text), true)) AS counted $$"
    )
    owner_conn.run("GRANT EXECUTE ON FUNCTION invoice_object_counted(invoices) TO billing_app")


def _insert(tx, account: str, number: str | None, status: str) -> str:
    return tx.scalar(
        "INSERT INTO invoices (account_id, currency, period_start, period_end, total, subtotal, amount_due,"
        " amount_paid, number, status, finalized_at, paid_at)"
        " VALUES (:a, 'USD', :s, :e, 4900, 4900, CASE WHEN :st = 'paid' THEN 0 ELSE 4900 END,"
        " CASE WHEN :st = 'paid' THEN 4900 ELSE 0 END, CAST(:n AS text), :st,"
        " CASE WHEN CAST(:n AS text) IS NOT NULL THEN now() END,"
        " CASE WHEN :st = 'paid' THEN now() END) RETURNING id",
        a=account,
        s=ANCHOR,
        e=ANCHOR + timedelta(days=28),
        n=number,
        st=status,
    )


def test_an_invoice_born_numbered_and_paid_is_built_once_for_its_three_events(make_tenant, counted_builds):
    tenant = make_tenant()
    plan = billing.plan(tenant, usage_prices=[])
    accounts = [billing.subscribed_account(tenant, plan, ANCHOR) for _ in range(2)]
    with transaction(tenant_id=tenant) as tx:
        paid = _insert(tx, accounts[0], "INV-000001", "paid")
        draft = _insert(tx, accounts[1], None, "draft")
        built_on_insert = tx.scalar(BUILDS)
        tx.run(
            "UPDATE invoices SET number = 'INV-000002', status = 'paid', amount_paid = 4900, amount_due = 0,"
            " finalized_at = now(), paid_at = now() WHERE id = :d",
            d=draft,
        )
        built_in_all = tx.scalar(BUILDS)
        events = tx.all("SELECT event_type, payload FROM outbox ORDER BY event_type")

    assert (built_on_insert, built_in_all) == (2, 3)  # one per invoice written; the update's one more
    by_invoice = {}
    for event in events:
        payload = event["payload"] if isinstance(event["payload"], dict) else json.loads(event["payload"])
        by_invoice.setdefault(payload["invoiceId"], []).append((event["event_type"], payload["object"]["status"]))
    assert sorted(by_invoice[str(paid)]) == [
        ("invoice.created", "paid"),
        ("invoice.finalized", "paid"),
        ("invoice.paid", "paid"),
    ]
    assert sorted(by_invoice[str(draft)]) == [
        ("invoice.created", "draft"),
        ("invoice.finalized", "paid"),
        ("invoice.paid", "paid"),
    ]
