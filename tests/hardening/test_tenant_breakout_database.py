"""Tenant isolation at the database: the app role sees one tenant, or nothing.

Whatever SQL the app runs as ``billing_app`` with tenant B set, tenant A's rows in
every tenant table can be neither read, changed, deleted nor added to.
"""

import pytest

from chalicelib.db import errors, transaction
from tests import billing
from tests.billing import TENANT_TABLES

FIGURE = (
    "tenant breakout (database): {probes} reads/updates/deletes/inserts of another tenant's rows"
    " over {tables} tables as the app role: {rows} rows reached"
)


def _populate(tenant_id: str) -> dict:
    """One row in every tenant table, for this tenant."""
    with transaction(tenant_id=tenant_id) as tx:
        plan = tx.scalar(
            "INSERT INTO plans (code, name, interval, amount, currency) VALUES ('pro', 'Pro', 'month', 4900, 'USD')"
            " RETURNING id"
        )
        account = tx.scalar(
            "INSERT INTO accounts (email, name, currency, plan_id) VALUES ('c@x.test', 'C', 'USD', :p) RETURNING id",
            p=plan,
        )
        sub = tx.scalar(
            "INSERT INTO subscriptions (account_id, plan_id, billing_anchor, current_period_start, current_period_end)"
            " VALUES (:a, :p, now(), now(), now() + interval '1 month') RETURNING id",
            a=account,
            p=plan,
        )
        invoice = tx.scalar(
            "INSERT INTO invoices (account_id, subscription_id, currency, period_start, period_end, total, subtotal,"
            " amount_due) VALUES (:a, :s, 'USD', now(), now() + interval '1 month', 4900, 4900, 4900) RETURNING id",
            a=account,
            s=sub,
        )
        tx.run(
            "INSERT INTO invoice_lines (invoice_id, kind, description, unit_amount, amount, currency, period_start,"
            " period_end) VALUES (:i, 'subscription', 'Pro', 4900, 4900, 'USD', now(), now() + interval '1 month')",
            i=invoice,
        )
        tx.run(
            "INSERT INTO usage_events (event_id, account_id, metric, quantity, occurred_at)"
            " VALUES ('e1', :a, 'api_calls', 3, now())",
            a=account,
        )
        tx.run(
            "INSERT INTO usage_counters (account_id, metric, from_at, to_at, sum, count, max)"
            " VALUES (:a, 'api_calls', now() - interval '1 day', now() + interval '1 month', 3, 1, 3)",
            a=account,
        )
        tx.run(
            "INSERT INTO ledger_entries (account_id, entry_type, amount, currency, idempotency_key, invoice_id)"
            " VALUES (:a, 'charge', 4900, 'USD', 'charge-1', :i)",
            a=account,
            i=invoice,
        )
        tx.run("INSERT INTO processed_events (consumer, message_id) VALUES ('audit', 'm1')")
        tx.run(
            "INSERT INTO idempotency_keys (key, request_method, request_path, request_hash)"
            " VALUES ('k1', 'POST', '/v1/accounts', 'h')"
        )
        tx.run("INSERT INTO audit_logs (actor, action, entity_type) VALUES ('system', 'created', 'account')")
        tx.run("INSERT INTO outbox (event_type, payload) VALUES ('account.created', '{}')")
        tx.run(
            "INSERT INTO payment_attempts (account_id, invoice_id, attempt, idempotency_key, amount, currency, outcome)"
            " VALUES (:a, :i, 0, 'pay-1', 4900, 'USD', 'succeeded')",
            a=account,
            i=invoice,
        )
        tx.run("INSERT INTO number_sequences (series, last_value) VALUES ('PFX', 1)")
        tx.run(
            "INSERT INTO invoice_items (account_id, currency, description, quantity, unit_amount, amount)"
            " VALUES (:a, 'USD', 'Setup', 1, 500, 500)",
            a=account,
        )
        note = tx.scalar(
            "INSERT INTO credit_notes (invoice_id, account_id, number, currency, amount, pre_payment_amount,"
            " credit_amount, refund_amount, reason) VALUES (:i, :a, 'PFX-CN-000001', 'USD', 100, 0, 0, 100,"
            " 'duplicate') RETURNING id",
            a=account,
            i=invoice,
        )
        tx.run(
            "INSERT INTO refunds (account_id, invoice_id, credit_note_id, payment_attempt_id, amount, currency,"
            " idempotency_key) SELECT :a, :i, :n, id, 100, 'USD', 'refund-1' FROM payment_attempts",
            a=account,
            i=invoice,
            n=note,
        )
        endpoint = tx.scalar(
            "INSERT INTO webhook_endpoints (url, event_types, secret) VALUES ('https://h.example.com/', '{*}', 's')"
            " RETURNING id"
        )
        delivery = tx.scalar(
            "INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, next_attempt_at)"
            " SELECT :e, id, event_type, now() FROM outbox RETURNING id",
            e=endpoint,
        )
        tx.run(
            "INSERT INTO webhook_attempts (delivery_id, attempted_at, status_code, latency_ms)"
            " VALUES (:d, now(), 500, 3)",
            d=delivery,
        )
        tx.run("INSERT INTO tenant_rate_limits (usage_tat_us) VALUES (0)")
        tx.run(
            "INSERT INTO api_clients (client_id, name, scopes) VALUES (gen_random_uuid()::text, 'c', '{billing/read}')"
        )
        tx.run("INSERT INTO tax_rates (display_name, percentage, inclusive) VALUES ('VAT', 19, true)")
        coupon = tx.scalar("INSERT INTO coupons (percent_off, duration) VALUES (10, 'forever') RETURNING id")
        discount = tx.scalar(
            "INSERT INTO discounts (coupon_id, account_id) VALUES (:c, :a) RETURNING id", c=coupon, a=account
        )
        tx.run("INSERT INTO discount_uses (discount_id, invoice_id) VALUES (:d, :i)", d=discount, i=invoice)
    return {"plan": plan, "account": account, "invoice": invoice}


@pytest.fixture
def two_tenants(make_tenant, owner_conn):
    a, b = make_tenant("A"), make_tenant("B")
    populated = (a, _populate(a)), (b, _populate(b))
    # The usage archive is written by the retention purge only (billing_system): a copy of each usage row.
    partition = owner_conn.run("SELECT usage_archive_partition(now())")[0][0]
    owner_conn.run(
        "INSERT INTO usage_events_archive (id, tenant_id, event_id, account_id, metric, quantity, occurred_at,"
        " received_at, properties) SELECT id, tenant_id, event_id, account_id, metric, quantity, occurred_at,"
        " received_at, properties FROM usage_events"
    )
    assert partition.startswith("usage_events_archive_")
    return populated


def test_the_table_list_is_every_table_with_a_tenant(owner_conn):
    with_tenant = {
        row[0]
        for row in owner_conn.run(
            "SELECT table_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND column_name = 'tenant_id'"
            " AND table_name NOT IN (SELECT relname FROM pg_class WHERE relispartition)"  # the parent's storage
        )
    }
    assert set(TENANT_TABLES) == with_tenant | {"tenants"}


def test_no_statement_as_another_tenant_reads_changes_deletes_or_adds_a_tenants_rows(two_tenants, owner_conn, figures):
    (a, _), (b, _) = two_tenants
    before = billing.snapshot(owner_conn, a)
    assert all(before.values()), "tenant A has a row in every table"
    reached = probes = 0
    for table in TENANT_TABLES:
        column = billing.owner_column(table)
        aimed = f"{column} = CAST(:a AS uuid)"
        for statement in (
            f"SELECT count(*) FROM {table} WHERE {aimed}",
            f"SELECT count(*) FROM {table} WHERE {column} <> CAST(:b AS uuid)",
            f"WITH hit AS (UPDATE {table} SET {column} = {column} WHERE {aimed} RETURNING 1) SELECT count(*) FROM hit",
            f"WITH hit AS (DELETE FROM {table} WHERE {aimed} RETURNING 1) SELECT count(*) FROM hit",
        ):
            try:
                with transaction(tenant_id=b) as tx:
                    count = tx.scalar(statement, a=a, b=b)
            except errors.InsufficientPrivilege:
                count = 0  # the app role is not even granted this statement on this table
            probes += 1
            reached += count
            assert count == 0, statement
        # One of B's own rows, re-labelled as A's: the policy's WITH CHECK refuses it.
        overlay = (
            "jsonb_build_object('id', gen_random_uuid(), 'idempotency_key', gen_random_uuid(),"
            " CAST(:column AS text), CAST(:a AS text))"
        )
        with pytest.raises(errors.InsufficientPrivilege):
            with transaction(tenant_id=b) as tx:
                tx.run(
                    f"INSERT INTO {table} OVERRIDING SYSTEM VALUE"
                    f" SELECT (jsonb_populate_record(NULL::{table}, to_jsonb(r) || {overlay})).*"
                    f" FROM {table} r LIMIT 1",
                    column=column,
                    a=a,
                )
        probes += 1

    assert billing.snapshot(owner_conn, a) == before
    figures.add("breakout_db", FIGURE, probes=probes, tables=len(TENANT_TABLES), rows=reached)


@pytest.mark.parametrize("table", TENANT_TABLES)
def test_bare_select_sees_only_the_current_tenant(two_tenants, table):
    (a, _), (b, _) = two_tenants
    with transaction(tenant_id=b) as tx:
        owners = {str(row[0]) for row in tx.run(f"SELECT {billing.owner_column(table)} FROM {table}")}
    assert owners == {b}


@pytest.mark.parametrize("table", TENANT_TABLES)
def test_with_no_tenant_set_tenant_tables_read_as_empty(two_tenants, table):
    with transaction() as tx:
        assert tx.run(f"SELECT count(*) FROM {table}") == [[0]]


def test_tenant_scope_does_not_leak_into_the_next_transaction(two_tenants):
    (a, _), _ = two_tenants
    with transaction(tenant_id=a) as tx:
        assert tx.scalar("SELECT count(*) FROM accounts") == 1
    with transaction() as tx:
        assert tx.scalar("SELECT count(*) FROM accounts") == 0


def test_updates_and_deletes_cannot_reach_another_tenants_rows(two_tenants):
    (a, rows_a), (b, _) = two_tenants
    with transaction(tenant_id=b) as tx:
        tx.run("UPDATE accounts SET name = 'hijacked'")
        tx.run("UPDATE invoices SET status = 'void' WHERE id = :id", id=rows_a["invoice"])
        tx.run("DELETE FROM invoice_lines")
    with transaction(tenant_id=a) as tx:
        assert tx.scalar("SELECT name FROM accounts WHERE id = :id", id=rows_a["account"]) == "C"
        assert tx.scalar("SELECT status FROM invoices WHERE id = :id", id=rows_a["invoice"]) == "draft"
        assert tx.scalar("SELECT count(*) FROM invoice_lines") == 1


def test_inserting_a_row_for_another_tenant_is_refused(two_tenants):
    (a, rows_a), (b, _) = two_tenants
    with pytest.raises(errors.InsufficientPrivilege):
        with transaction(tenant_id=b) as tx:
            tx.run(
                "INSERT INTO accounts (tenant_id, email, name, currency) VALUES (:a, 'x@x.test', 'X', 'USD')",
                a=a,
            )


def test_referencing_another_tenants_row_is_refused(two_tenants):
    (a, rows_a), (b, _) = two_tenants
    with pytest.raises(errors.ForeignKeyViolation):
        with transaction(tenant_id=b) as tx:
            tx.run(
                "INSERT INTO usage_events (event_id, account_id, metric, quantity, occurred_at)"
                " VALUES ('steal', :acct, 'api_calls', 1, now())",
                acct=rows_a["account"],
            )


def test_app_role_owns_nothing_and_cannot_bypass_rls(database_url):
    with transaction() as tx:
        role = tx.one("SELECT current_user AS name, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        owned = tx.scalar(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = current_user"
        )
    assert role == {"name": "billing_app", "rolsuper": False, "rolbypassrls": False}
    assert owned == 0


def test_every_tenant_table_forces_rls(owner_conn):
    rows = owner_conn.run(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relrowsecurity AND c.relforcerowsecurity"
    )
    forced = {row[0] for row in rows}
    assert set(TENANT_TABLES) <= forced
    with_tenant_column = {
        row[0]
        for row in owner_conn.run(
            "SELECT table_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND column_name = 'tenant_id'"
        )
    }
    assert with_tenant_column <= forced


def test_background_jobs_see_only_ids_through_their_definer_function(two_tenants):
    (a, _), (b, _) = two_tenants
    with transaction() as tx:
        backlog = {str(row[0]): row[1] for row in tx.run("SELECT * FROM outbox_tenants_with_backlog(0, 100)")}
        assert tx.run("SELECT count(*) FROM outbox") == [[0]]
    assert backlog == {a: 2, b: 2}  # each tenant's event, and its invoice's own invoice.created
