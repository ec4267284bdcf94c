"""Migration runner: applies ``migrations/NNNN_name.sql`` in order, once each.

Each file runs in its own transaction together with its ``schema_migrations`` row
(version, name, SHA-256 checksum). A file whose checksum differs from the one
recorded when it was applied stops the run: history is never rewritten, a fix is
a new migration. A session advisory lock makes concurrent runs wait instead of
interleaving. Runs as the connection's login role (the schema owner), not as the
app role.

    python -m chalicelib.db.migrate            # apply what is pending
    python -m chalicelib.db.migrate --status   # list applied and pending
    python -m chalicelib.db.migrate --proxy-secret ARN   # and set the RDS Proxy login's password
"""

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from chalicelib.db import errors, logins
from chalicelib.db.connection import open_connection, read_secret

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
# Arbitrary but fixed: every runner of this project contends for the same lock.
ADVISORY_LOCK_KEY = 0x62696C6C  # "bill"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_snake_name.sql")
        found.append(Migration(match.group(1), match.group(2), path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number in {directory}")
    return found


def _ensure_table(conn) -> None:
    conn.run(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )


def applied(conn) -> dict[str, str]:
    """version -> checksum of what this database has applied."""
    return dict(conn.run("SELECT version, checksum FROM schema_migrations ORDER BY version"))


def migrate(directory: Path = MIGRATIONS_DIR, *, log=print) -> list[str]:
    """Apply pending migrations; returns the versions applied by this call."""
    migrations = discover(directory)
    conn = open_connection(as_app_role=False)
    try:
        conn.run("SELECT pg_advisory_lock(:key)", key=ADVISORY_LOCK_KEY)
        try:
            _ensure_table(conn)
            done = applied(conn)
            _refuse_changed(migrations, done)
            newly = []
            for migration in migrations:
                if migration.version in done:
                    continue
                _apply(conn, migration)
                log(f"applied {migration.version}_{migration.name}")
                newly.append(migration.version)
            return newly
        finally:
            conn.run("SELECT pg_advisory_unlock(:key)", key=ADVISORY_LOCK_KEY)
    finally:
        conn.close()


def _refuse_changed(migrations: list[Migration], done: dict[str, str]) -> None:
    changed = [f"{m.version}_{m.name}" for m in migrations if m.version in done and done[m.version] != m.checksum]
    if changed:
        raise MigrationError(
            f"applied migration(s) changed since they ran: {', '.join(changed)}; "
            "restore the original file and add a new migration instead"
        )


def _apply(conn, migration: Migration) -> None:
    conn.run("BEGIN")
    try:
        conn.execute_simple(migration.sql)
        conn.run(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (:v, :n, :c)",
            v=migration.version,
            n=migration.name,
            c=migration.checksum,
        )
        conn.run("COMMIT")
    except Exception as exc:
        conn.run("ROLLBACK")
        detail = errors.translate(exc) if not isinstance(exc, MigrationError) else exc
        raise MigrationError(f"{migration.version}_{migration.name} failed: {detail}") from exc


def set_proxy_password(login: dict) -> str:
    """The RDS Proxy's login role gets the password of its secret (chalicelib/db/logins.py)."""
    conn = open_connection(as_app_role=False)
    try:
        return logins.set_password(conn, login)
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--status", action="store_true", help="list applied and pending migrations")
    parser.add_argument("--proxy-secret", help="after migrating, set billing_proxy's password from this secret")
    args = parser.parse_args(argv)
    try:
        if args.status:
            conn = open_connection(as_app_role=False)
            _ensure_table(conn)
            done = applied(conn)
            conn.close()
            for m in discover():
                print(f"{m.version}_{m.name}: {'applied' if m.version in done else 'pending'}")
            return 0
        newly = migrate()
        print(f"{len(newly)} migration(s) applied" if newly else "database is up to date")
        if args.proxy_secret:
            print(f"password of {set_proxy_password(read_secret(args.proxy_secret))} set from the proxy's secret")
        return 0
    except (MigrationError, errors.DatabaseError, ValueError) as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
