"""Invoice numbers are gapless per tenant and prefix, whoever finalizes when: concurrent finalizations
queue on the series' row and each takes the next number; one that fails after taking its number
rolls back and gives it back; a new prefix starts its own series at 000001.

Drafts here are one-off invoices left as drafts (``finalize=False``); finalizing one numbers it,
charges it and collects it (the mock gateway succeeds).
"""

import threading

import pytest

from chalicelib.billing import accounts, credit_notes, invoice_items, invoices, numbering, tenants
from chalicelib.db import transaction
from chalicelib.db.scope import tenant_transaction
from tests import billing


@pytest.fixture
def tenant(make_tenant):
    return make_tenant()


def _accounts(tenant: str, count: int) -> list[str]:
    with tenant_transaction(tenant) as tx:
        return [
            str(accounts.create(tx, billing.actor(tenant), accounts.NewAccount(f"c{n}@x.test", "C", "USD"))["id"])
            for n in range(count)
        ]


def _one_off(tenant: str, account: str, amount: int, *, finalize: bool) -> dict:
    body = {"account_id": account, "currency": "USD", "description": "Workshop", "amount": amount}
    command = invoices.NewInvoice(account, items=(invoice_items.NewInvoiceItem.of(body),), finalize=finalize)
    return invoices.create(tenant, billing.actor(tenant), command)


def _drafts(tenant: str, count: int, account_count: int = 4) -> list[str]:
    owners = _accounts(tenant, account_count)
    return [str(_one_off(tenant, owners[n % account_count], 100 + n, finalize=False)["id"]) for n in range(count)]


def _finalize(tenant: str, invoice_id: str) -> dict:
    return invoices.finalize(tenant, billing.actor(tenant), invoice_id)


def _finalize_at_once(tenant: str, invoice_ids: list[str]) -> dict:
    """Each draft finalized from its own thread (its own connection), all released together: invoice id
    -> its number, or the exception its finalization raised."""
    barrier = threading.Barrier(len(invoice_ids))
    outcomes = {}

    def finalizer(invoice_id):
        def run():
            barrier.wait()
            try:
                outcomes[invoice_id] = _finalize(tenant, invoice_id)["number"]
            except Exception as exc:  # noqa: BLE001 - the test asserts what each one raised
                outcomes[invoice_id] = exc

        return run

    billing.in_threads(*(finalizer(invoice_id) for invoice_id in invoice_ids))
    return outcomes


def _settings(tenant: str) -> dict:
    with tenant_transaction(tenant) as tx:
        return tenants.invoice_settings(tx)


def _series(prefix: str, first: int, last: int) -> list[str]:
    return [f"{prefix}-{n:06d}" for n in range(first, last + 1)]


def _numbers(tenant: str) -> list[str]:
    with transaction(tenant_id=tenant) as tx:
        return [row[0] for row in tx.run("SELECT number FROM invoices WHERE number IS NOT NULL ORDER BY number")]


def _fail_when_finalizing(monkeypatch, doomed: set[str]) -> None:
    """Finalizing one of ``doomed`` raises at its very end, after its number was taken (the audit row
    is written last), so its whole transaction rolls back."""
    record = invoices.audit.record

    def failing(tx, actor, action, entity_type, entity_id, data=None):
        if action == "invoice.finalized" and str(entity_id) in doomed:
            raise RuntimeError("the finalizing transaction dies after taking its number")
        return record(tx, actor, action, entity_type, entity_id, data)

    monkeypatch.setattr(invoices.audit, "record", failing)


@pytest.mark.parametrize("earlier", [0, 3])
def test_twenty_drafts_finalized_at_once_from_twenty_threads_take_the_next_twenty_numbers_once_each(
    tenant, gateway, earlier
):
    owner = _accounts(tenant, 1)[0]
    for n in range(earlier):
        _one_off(tenant, owner, 50 + n, finalize=True)
    drafts = _drafts(tenant, 20)

    outcomes = _finalize_at_once(tenant, drafts)

    prefix = _settings(tenant)["prefix"]
    assert [outcome for outcome in outcomes.values() if isinstance(outcome, Exception)] == []
    assert sorted(outcomes.values()) == _series(prefix, earlier + 1, earlier + 20)  # no gap, no repeat
    assert _numbers(tenant) == _series(prefix, 1, earlier + 20)
    assert _settings(tenant)["last_number"] == earlier + 20
    assert len(gateway.charges) == earlier + 20  # each collected once


def test_a_finalization_that_fails_among_concurrent_ones_gives_its_number_back(tenant, gateway, monkeypatch):
    drafts = _drafts(tenant, 10)
    _fail_when_finalizing(monkeypatch, {drafts[4]})

    outcomes = _finalize_at_once(tenant, drafts)

    failed = {invoice_id for invoice_id, outcome in outcomes.items() if isinstance(outcome, Exception)}
    assert failed == {drafts[4]}
    prefix = _settings(tenant)["prefix"]
    assert sorted(outcomes[invoice_id] for invoice_id in drafts if invoice_id not in failed) == _series(prefix, 1, 9)
    assert _settings(tenant)["last_number"] == 9
    monkeypatch.undo()
    assert _finalize(tenant, drafts[4])["number"] == f"{prefix}-000010"


def test_a_finalization_that_fails_after_taking_its_number_leaves_no_trace_and_the_next_invoice_takes_it(
    tenant, gateway, monkeypatch
):
    owner = _accounts(tenant, 1)[0]
    _one_off(tenant, owner, 700, finalize=True)  # 000001
    doomed, later = _drafts(tenant, 2)
    _fail_when_finalizing(monkeypatch, {doomed})

    with pytest.raises(RuntimeError):
        _finalize(tenant, doomed)

    with tenant_transaction(tenant) as tx:
        after = invoices.get(tx, doomed)
        entries = tx.scalar("SELECT count(*) FROM ledger_entries WHERE invoice_id = :i", i=doomed)
        attempts = tx.scalar("SELECT count(*) FROM payment_attempts WHERE invoice_id = :i", i=doomed)
    assert (after["status"], after["number"], entries, attempts) == ("draft", None, 0, 0)
    assert len(gateway.charges) == 1  # only the first invoice's
    prefix = _settings(tenant)["prefix"]
    assert _finalize(tenant, later)["number"] == f"{prefix}-000002"
    monkeypatch.undo()
    assert _finalize(tenant, doomed)["number"] == f"{prefix}-000003"
    assert _numbers(tenant) == _series(prefix, 1, 3)


def test_numbers_taken_in_a_transaction_that_rolls_back_are_taken_again_by_the_next_invoice(tenant, gateway):
    owner = _accounts(tenant, 1)[0]
    _one_off(tenant, owner, 700, finalize=True)  # 000001
    first, second = _drafts(tenant, 2)

    with pytest.raises(RuntimeError, match="before its commit"), tenant_transaction(tenant) as tx:
        taken = numbering.number_invoices(tx, [first, second])
        raise RuntimeError("the transaction dies before its commit")

    prefix = _settings(tenant)["prefix"]
    assert taken == {first: f"{prefix}-000002", second: f"{prefix}-000003"}
    assert _settings(tenant)["last_number"] == 1
    assert _finalize(tenant, second)["number"] == f"{prefix}-000002"
    assert _finalize(tenant, first)["number"] == f"{prefix}-000003"


def test_a_new_prefix_starts_its_own_series_at_000001_and_the_old_one_resumes_where_it_stopped(tenant, gateway):
    owner = _accounts(tenant, 1)[0]
    old = _settings(tenant)["prefix"]
    paid = [_one_off(tenant, owner, 1000, finalize=True) for _ in range(2)]
    _credit(tenant, paid[0]["id"])

    _set_prefix(tenant, "ACME")
    acme = _one_off(tenant, owner, 1000, finalize=True)
    acme_note = _credit(tenant, acme["id"])

    assert [invoice["number"] for invoice in paid] == _series(old, 1, 2)
    assert (acme["number"], acme_note["number"]) == ("ACME-000001", "ACME-CN-000001")
    assert (_settings(tenant)["prefix"], _settings(tenant)["last_number"]) == ("ACME", 1)
    _set_prefix(tenant, old)
    assert _one_off(tenant, owner, 1000, finalize=True)["number"] == f"{old}-000003"
    assert _credit(tenant, paid[1]["id"])["number"] == f"{old}-CN-000002"


def test_ten_credit_notes_issued_at_once_from_ten_threads_take_cn_000001_to_000010(tenant, gateway):
    owners = _accounts(tenant, 3)
    paid = [str(_one_off(tenant, owners[n % 3], 1000, finalize=True)["id"]) for n in range(10)]
    barrier, numbers = threading.Barrier(10), []

    def issuer(invoice_id):
        def run():
            barrier.wait()
            numbers.append(_credit(tenant, invoice_id)["number"])

        return run

    billing.in_threads(*(issuer(invoice_id) for invoice_id in paid))

    prefix = _settings(tenant)["prefix"]
    assert sorted(numbers) == [f"{prefix}-CN-{n:06d}" for n in range(1, 11)]
    assert _numbers(tenant) == _series(prefix, 1, 10)  # the invoices' series is untouched


def _set_prefix(tenant: str, prefix: str) -> None:
    with tenant_transaction(tenant) as tx:
        tenants.update_invoice_settings(tx, billing.actor(tenant), {"prefix": prefix})


def _credit(tenant: str, invoice_id) -> dict:
    command = credit_notes.NewCreditNote(str(invoice_id), "order_change", amount=100)
    return credit_notes.create(tenant, billing.actor(tenant), command)


def test_the_millionth_invoice_is_numbered_in_full_never_cut_to_six_digits(make_tenant):
    tenant = make_tenant()
    with transaction(tenant_id=tenant) as tx:
        prefix = tenants.invoice_settings(tx)["prefix"]
        tx.run("INSERT INTO number_sequences (series, last_value) VALUES (:p, 999999)", p=prefix)
        account = tx.scalar("INSERT INTO accounts (email, name, currency) VALUES ('c@x.test', 'C', 'USD') RETURNING id")
        ids = [
            str(
                tx.scalar(
                    "INSERT INTO invoices (account_id, billing_reason, currency, period_start, period_end)"
                    " VALUES (:a, 'manual', 'USD', now(), now()) RETURNING id",
                    a=account,
                )
            )
            for _ in range(2)
        ]
        numbers = numbering.number_invoices(tx, ids)
    assert sorted(numbers.values()) == [f"{prefix}-1000000", f"{prefix}-1000001"]
