import shutil
import threading
import uuid

import pytest

from chalicelib.db import migrate
from chalicelib.db.connection import open_connection
from devtools import postgres
from tests.conftest import _use_database


@pytest.fixture
def empty_database(admin_url, template_url):
    name = f"billing_empty_{uuid.uuid4().hex[:10]}"
    conn = postgres.admin_connection(admin_url)
    conn.run(f"CREATE DATABASE {name}")
    conn.close()
    _use_database(postgres.with_database(admin_url, name))
    yield name
    conn = postgres.admin_connection(admin_url)
    conn.run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.close()


def _applied_versions():
    conn = open_connection(as_app_role=False)
    try:
        return [row[0] for row in conn.run("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        conn.close()


def test_migrations_apply_to_an_empty_database_and_rerun_as_noop(empty_database):
    expected = [m.version for m in migrate.discover()]

    first = migrate.migrate(log=lambda _: None)
    second = migrate.migrate(log=lambda _: None)

    assert first == expected
    assert second == []
    assert _applied_versions() == expected


def test_changed_applied_migration_is_refused(empty_database, tmp_path):
    directory = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, directory)
    migrate.migrate(directory, log=lambda _: None)
    first = sorted(directory.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- an edit after the fact\n")

    with pytest.raises(migrate.MigrationError, match="changed since they ran"):
        migrate.migrate(directory, log=lambda _: None)


def test_pending_migration_is_refused_while_an_applied_one_changed(empty_database, tmp_path):
    directory = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, directory)
    migrate.migrate(directory, log=lambda _: None)
    first = sorted(directory.glob("*.sql"))[0]
    first.write_text(first.read_text().replace("Initial schema", "Initial  schema"))
    (directory / "9999_extra.sql").write_text("CREATE TABLE should_not_exist (id int);")

    with pytest.raises(migrate.MigrationError):
        migrate.migrate(directory, log=lambda _: None)

    assert "9999" not in _applied_versions()


def test_concurrent_runs_apply_each_migration_once(empty_database):
    results, failures = [], []

    def run():
        try:
            results.append(migrate.migrate(log=lambda _: None))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    applied_by_runs = sorted(v for run_result in results for v in run_result)
    assert applied_by_runs == [m.version for m in migrate.discover()]


def test_failed_migration_leaves_nothing_half_applied(empty_database, tmp_path):
    directory = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, directory)
    (directory / "9998_broken.sql").write_text("CREATE TABLE half_done (id int);\nSELECT no_such_function();")

    with pytest.raises(migrate.MigrationError, match="9998_broken"):
        migrate.migrate(directory, log=lambda _: None)

    conn = open_connection(as_app_role=False)
    try:
        assert conn.run("SELECT to_regclass('half_done')") == [[None]]
    finally:
        conn.close()
    assert "9998" not in _applied_versions()


def test_tenants_made_before_plan_limits_keep_no_limits_and_new_ones_get_sold_tiers(empty_database, tmp_path):
    directory = tmp_path / "migrations"
    directory.mkdir()
    for migration in sorted(migrate.MIGRATIONS_DIR.glob("*.sql")):
        if migration.name < "0010":
            shutil.copy(migration, directory)
    migrate.migrate(directory, log=lambda _: None)
    conn = open_connection(as_app_role=False)
    try:
        conn.run("INSERT INTO tenants (name, email) VALUES ('Old', 'old@x.test')")  # plan_tier 'standard', then
        for migration in sorted(migrate.MIGRATIONS_DIR.glob("*.sql")):
            shutil.copy(migration, directory)
        migrate.migrate(directory, log=lambda _: None)

        assert conn.run("SELECT plan_tier FROM tenants") == [["legacy"]]
        limits = conn.run(
            "SELECT max_accounts, usage_requests_per_second, for_sale FROM platform_plans WHERE tier = 'legacy'"
        )
        assert limits == [[None, None, False]]
    finally:
        conn.close()


def _runtime_memberships(conn) -> list[list]:
    if int(conn.run("SHOW server_version_num")[0][0]) < 160000:
        pytest.skip("grant options (INHERIT, SET) are PostgreSQL 16's")
    return conn.run(
        "SELECT m.roleid::regrole::text, m.inherit_option, m.set_option FROM pg_auth_members m"
        " WHERE m.member = 'billing_runtime'::regrole ORDER BY 1"
    )


def test_the_runtime_login_may_log_in_and_set_role_billing_app_and_nothing_else(empty_database, admin_url):
    migrate.migrate(log=lambda _: None)
    migrate.migrate(log=lambda _: None)  # a second run, and a second database, find the role made

    conn = postgres.admin_connection(admin_url)
    try:
        attributes = conn.run(
            "SELECT rolcanlogin, rolinherit, rolsuper, rolbypassrls, rolcreatedb, rolcreaterole, rolreplication,"
            " rolpassword IS NULL FROM pg_authid WHERE rolname = 'billing_runtime'"
        )
        assert attributes == [[True, False, False, False, False, False, False, True]]
        assert _runtime_memberships(conn) == [["billing_app", False, True]]
    finally:
        conn.close()


def test_a_runtime_login_that_has_other_powers_stops_the_migration(empty_database, admin_url, tmp_path):
    directory = tmp_path / "migrations"
    directory.mkdir()
    for migration in sorted(migrate.MIGRATIONS_DIR.glob("*.sql")):
        if migration.name < "0012":
            shutil.copy(migration, directory)
    migrate.migrate(directory, log=lambda _: None)
    shutil.copy(migrate.MIGRATIONS_DIR / "0012_runtime_login.sql", directory)
    conn = postgres.admin_connection(admin_url)
    try:
        conn.run("ALTER ROLE billing_runtime CREATEDB")  # roles are the cluster's: every database sees it
        with pytest.raises(migrate.MigrationError, match="billing_runtime exists with other attributes"):
            migrate.migrate(directory, log=lambda _: None)
    finally:
        conn.run("ALTER ROLE billing_runtime NOCREATEDB")
        conn.close()
    assert "0012" not in _applied_versions()


def test_where_rds_iam_exists_the_runtime_login_inherits_it_to_log_in_with_iam_and_cannot_become_it(
    empty_database, admin_url
):
    conn = postgres.admin_connection(admin_url)
    conn.run("DROP ROLE IF EXISTS rds_iam")  # left by an interrupted run
    conn.run("CREATE ROLE rds_iam NOLOGIN")  # what Aurora and RDS have
    try:
        migrate.migrate(log=lambda _: None)
        assert _runtime_memberships(conn) == [["billing_app", False, True], ["rds_iam", True, False]]
    finally:
        conn.run("DROP ROLE rds_iam")
        conn.close()
