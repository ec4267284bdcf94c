"""A tenant's grace period: a renewal is held as a draft, takes late usage and one-off items,
and is finalized (numbered, charged, collected) when the grace period ends.

Real-time dates: usage is judged against the wall clock (at most USAGE_MAX_AGE_DAYS old), so
the plan bills daily and the periods are yesterday's and the day before.
"""

from datetime import UTC, datetime, timedelta

import pytest

import app as app_module
from chalicelib import errors
from chalicelib.billing import invoice_items, invoices, rebill, tenants, usage
from chalicelib.db import transaction
from devtools.pump import LambdaContext, scheduled_event
from tests import billing

METERED = [{"metric": "api_calls", "aggregation": "sum", "unit_amount": 2}]


@pytest.fixture
def setup(make_tenant):
    tenant = make_tenant()
    billing.priced_plan(tenant, "daily", 100, interval="day", usage_prices=METERED)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=2)
    account, _subscription = billing.subscribe(tenant, "daily", start, billing_cycle="daily")
    with transaction(tenant_id=tenant) as tx:
        tenants.update_invoice_settings(tx, billing.actor(tenant), {"grace_hours": 24})
    return tenant, account, start, today


def _record(tenant, account, at, quantity, event_id):
    event = {"event_id": event_id, "account_id": account, "metric": "api_calls", "quantity": quantity}
    with transaction(tenant_id=tenant) as tx:
        return usage.record(tx, billing.actor(tenant), usage.UsageBatch(({**event, "timestamp": at.isoformat()},)))


def test_a_held_renewal_bills_late_usage_and_items_when_its_grace_period_ends(setup, gateway):
    tenant, account, start, today = setup
    boundary = start + timedelta(days=1)
    billing.usage(tenant, account, start + timedelta(hours=1), 10, "on-time")

    assert rebill.renew(tenant, account, boundary, boundary + timedelta(minutes=1)) == "succeeded"

    first, held = billing.invoices_of(tenant, account)
    assert (held["status"], held["total"]) == ("draft", 100 + 20)
    entries = billing.state(tenant, account)["entries"]
    assert entries == [("charge", 100), ("payment", -100)]  # the draft charged nothing yet
    late = _record(tenant, account, start + timedelta(hours=5), 15, "late")
    assert late["accepted"] == 1  # in a period already billed, but its draft still prices it
    with transaction(tenant_id=tenant) as tx:
        invoice_items.create(
            tx,
            billing.actor(tenant),
            invoice_items.NewInvoiceItem.of(
                {"account_id": account, "currency": "USD", "description": "Support hours", "amount": 700}
            ),
        )

    assert invoices.finalize_due(boundary + timedelta(hours=23)) == {"finalized": 0, "failed": 0}  # not yet
    # the schedule's own handler, at the wall clock's now (past boundary + 24 h: today)
    ran = app_module.invoice_finalizer(scheduled_event(), LambdaContext("invoice_finalizer"))
    assert ran == {"finalized": 1, "failed": 0, "refunds_settled": 0}

    _first, finalized = billing.invoices_of(tenant, account)
    assert (finalized["status"], finalized["total"]) == ("paid", 100 + 2 * 25 + 700)
    assert [(kind, quantity, amount) for kind, quantity, amount, _s, _e in finalized["lines"]] == [
        ("subscription", 1, 100),
        ("usage", 25, 50),
        ("invoice_item", 1, 700),
    ]
    assert billing.state(tenant, account)["entries"][-2:] == [("charge", 850), ("payment", -850)]
    with transaction(tenant_id=tenant) as tx:
        number = invoices.get(tx, held["id"])["number"]
    assert number.endswith("-000002")  # numbered when finalized, after the first invoice
    with pytest.raises(errors.UnprocessableState) as too_late:  # finalized: the period is closed now
        _record(tenant, account, start + timedelta(hours=6), 1, "too-late")
    assert too_late.value.code == "usage_rejected"


def test_a_held_draft_can_be_finalized_early_and_then_the_finalizer_leaves_it(setup, gateway):
    tenant, account, start, _today = setup
    boundary = start + timedelta(days=1)
    rebill.renew(tenant, account, boundary, boundary + timedelta(minutes=1))
    _first, held = billing.invoices_of(tenant, account)

    early = invoices.finalize(tenant, billing.actor(tenant), str(held["id"]), boundary + timedelta(hours=1))

    assert (early["status"], early["total"]) == ("paid", 100)
    assert invoices.finalize_due(boundary + timedelta(hours=25)) == {"finalized": 0, "failed": 0}
    with pytest.raises(errors.UnprocessableState) as again:
        invoices.finalize(tenant, billing.actor(tenant), str(held["id"]))
    assert again.value.code == "invoice_not_draft"
    assert [e for e in billing.state(tenant, account)["entries"] if e[0] == "charge"] == [("charge", 100)] * 2
