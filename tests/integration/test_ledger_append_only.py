import pytest

from chalicelib.db import errors, transaction


@pytest.fixture
def ledger_entry(make_tenant):
    tenant = make_tenant()
    with transaction(tenant_id=tenant) as tx:
        account = tx.scalar("INSERT INTO accounts (email, name, currency) VALUES ('a@x.test', 'A', 'EUR') RETURNING id")
        entry = tx.scalar(
            "INSERT INTO ledger_entries (account_id, entry_type, amount, currency, idempotency_key)"
            " VALUES (:a, 'charge', 1500, 'EUR', 'k1') RETURNING id",
            a=account,
        )
    return tenant, account, entry


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entries SET amount = 1",
        "DELETE FROM ledger_entries",
        "TRUNCATE ledger_entries CASCADE",
    ],
)
def test_ledger_rejects_rewrites_even_by_the_owner(ledger_entry, owner_conn, statement):
    from pg8000.exceptions import DatabaseError

    with pytest.raises(DatabaseError) as raised:
        owner_conn.run(statement)
    assert raised.value.args[0]["C"] == "P0001"
    assert "append-only" in raised.value.args[0]["M"]


def test_ledger_update_through_the_app_is_an_error_and_changes_nothing(ledger_entry):
    tenant, _account, entry = ledger_entry
    with pytest.raises(errors.DatabaseError):
        with transaction(tenant_id=tenant) as tx:
            tx.run("UPDATE ledger_entries SET amount = 1 WHERE id = :id", id=entry)

    with transaction(tenant_id=tenant) as tx:
        assert tx.scalar("SELECT amount FROM ledger_entries WHERE id = :id", id=entry) == 1500


def test_ledger_idempotency_key_is_unique_per_tenant(ledger_entry):
    tenant, account, _entry = ledger_entry
    with pytest.raises(errors.UniqueViolation) as raised:
        with transaction(tenant_id=tenant) as tx:
            tx.run(
                "INSERT INTO ledger_entries (account_id, entry_type, amount, currency, idempotency_key)"
                " VALUES (:a, 'charge', 1500, 'EUR', 'k1')",
                a=account,
            )
    assert raised.value.constraint == "ledger_entries_tenant_id_idempotency_key_key"


def test_audit_log_is_append_only(make_tenant, owner_conn):
    from pg8000.exceptions import DatabaseError

    tenant = make_tenant()
    with transaction(tenant_id=tenant) as tx:
        tx.run("INSERT INTO audit_logs (actor, action, entity_type) VALUES ('system', 'test', 'tenant')")
    with pytest.raises(DatabaseError) as raised:
        owner_conn.run("DELETE FROM audit_logs")
    assert raised.value.args[0]["C"] == "P0001"
