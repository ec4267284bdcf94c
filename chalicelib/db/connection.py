"""The process's PostgreSQL connection, transactions and the tenant scope.

One pg8000 connection per thread, opened on first use and kept across warm Lambda
invocations (chalice local serves requests on threads, so the cache is
thread-local). Every unit of work runs in ``transaction()``; a tenant-scoped one
sets ``app.tenant_id`` with ``SET LOCAL`` semantics, so row-level security holds
for every statement in it and the setting cannot leak into the next transaction.

Deployed, the functions log in as ``billing_runtime`` (never the schema owner) with an IAM token, over
TLS verified against the RDS CA bundle; the owner's secret is for migrations only.
"""

from __future__ import annotations

import functools
import json
import socket
import ssl
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from chalicelib import aws, tracing
from chalicelib.config import Settings, get_settings
from chalicelib.db import adapters, errors

_local = threading.local()
# The deployment package's root, which holds app.py (/var/task in Lambda): DB_SSL_ROOT_CERT is relative to it.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class _Driver:
    """pg8000, imported on first database use: about 50 ms a cold start need not pay up front."""

    native = None
    DatabaseError: type[Exception] = type("NotImportedYet", (Exception,), {})
    InterfaceError: type[Exception] = DatabaseError


def _driver() -> type[_Driver]:
    if _Driver.native is None:
        import pg8000.exceptions
        import pg8000.native

        _Driver.DatabaseError = pg8000.exceptions.DatabaseError
        _Driver.InterfaceError = pg8000.exceptions.InterfaceError
        _Driver.native = pg8000.native
    return _Driver


_secret_cache: dict[str, dict] = {}
_secret_lock = threading.Lock()  # webhook lanes open connections from several threads at a cold start


class Transaction:
    """A thin handle on the open transaction: run SQL with ``:name`` parameters.

    Its BEGIN (with the tenant's scope) is not sent on its own: it goes in the same flush as the
    first statement, and ``all_then_commit`` sends the last statement and COMMIT together, so a
    transaction of two statements is two round trips (chalicelib/db/adapters.py pipelines them). A
    transaction that runs nothing sends nothing."""

    def __init__(self, conn, begin: str | None = None):
        self._conn = conn
        self._begin = begin  # not sent yet: it goes with the first statement
        self.committed = False  # by ``all_then_commit``
        # Set when a statement failed on our side of the wire (a value pg8000
        # could not encode, a lost socket): the protocol may be out of step, so
        # the connection is discarded rather than reused.
        self.broken = False

    @property
    def started(self) -> bool:
        return self._begin is None

    def run(self, sql: str, **params) -> list[list]:
        return self._execute(sql, params, None)

    def all_then_commit(self, sql: str, **params) -> list[dict]:
        """The transaction's last statement and its COMMIT in one round trip: what the statement returned,
        once committed (an error in either rolls the whole transaction back). Nothing may follow it."""
        rows = self._execute(sql, params, "COMMIT")
        self.committed = True
        return self._dicts(rows)

    def _execute(self, sql: str, params: dict, after: str | None) -> list[list]:
        """``sql`` (after the BEGIN, if it is the first statement): on a connection the server has since
        closed (a warm container's: restart, failover, idle timeout), the first statement is sent once
        more on a fresh one, as nothing of the transaction can have happened (unless it also carried
        the COMMIT). A first statement whose prepared form had gone stale is sent again, parsed afresh:
        it failed at its Bind, before anything ran."""
        if self.committed:
            raise RuntimeError("this transaction has committed: nothing may run after its last statement")
        for attempt in (1, 2):
            try:
                rows = self._send(sql, params, self._begin, after)
                self._begin = None
                return rows
            except errors.DatabaseUnavailable:
                # Not once the COMMIT went with it: the server may have committed before the line dropped.
                if self._begin is None or after is not None or attempt == 2:
                    self._begin = None
                    raise
                reset_connection()
                self._conn, self.broken = get_connection(), False
            except errors.StalePreparedStatement:
                if self._begin is None or attempt == 2:
                    self._begin = None
                    raise
                if after is None:  # the BEGIN's transaction is open, and failed: ended before it begins again
                    self._send("ROLLBACK", {}, None, None)
            except BaseException:
                self._begin = None  # it went with the statement: the transaction is open, to be rolled back
                raise
        raise AssertionError("unreachable")

    def _send(self, sql: str, params: dict, before: str | None, after: str | None) -> list[list]:
        try:
            if not params and before is None and after is None:
                return self._conn.run(sql)  # a simple query
            # The extended protocol otherwise (a statement without parameters too, when the BEGIN goes in
            # front of it or the COMMIT behind). pg8000.native re-parses :name parameters in Python on every call
            # (a third of the rebill's CPU); our SQL is a fixed set of strings.
            statement, make_vals = _parsed(sql)
            self._conn.billing_pipeline = (before, after)
            self._conn._context = self._conn.execute_unnamed(statement, make_vals(params), oids=())
            return self._conn._context.rows
        except _Driver.DatabaseError as exc:
            if not (exc.args and isinstance(exc.args[0], dict)):
                self.broken = True
            raise errors.translate(exc) from exc
        except (_Driver.InterfaceError, OSError) as exc:
            self.broken = True
            raise errors.translate(exc) from exc
        except BaseException:
            self.broken = True
            raise

    def _dicts(self, rows: list[list]) -> list[dict]:
        names = [c["name"] for c in self._conn.columns or []]
        return [dict(zip(names, row, strict=True)) for row in rows]

    def all(self, sql: str, **params) -> list[dict]:
        return self._dicts(self.run(sql, **params))

    def one(self, sql: str, **params) -> dict | None:
        rows = self.all(sql, **params)
        return rows[0] if rows else None

    def scalar(self, sql: str, **params):
        rows = self.run(sql, **params)
        return rows[0][0] if rows else None


@functools.lru_cache(maxsize=1024)
def _parsed(sql: str):
    return _driver().native.to_statement(sql)


def connection_params(settings: Settings) -> dict:
    """pg8000 keyword arguments: from DATABASE_URL (local, tests), else a login with an IAM token
    (DB_IAM_AUTH=true: the functions, as billing_runtime), else the Secrets Manager secret (DB_SECRET_ARN:
    the owner, for migrations). The two deployed modes verify Aurora's certificate or do not connect."""
    if settings.database_url:
        return _params_from_url(settings.database_url, settings.db_ssl_root_cert)
    if settings.db_iam_auth:
        return _iam_params(settings)
    if settings.db_secret_arn:
        return _secret_params(settings)
    raise errors.DatabaseUnavailable("no database configured: set DATABASE_URL, DB_IAM_AUTH=true or DB_SECRET_ARN")


def _iam_params(settings: Settings) -> dict:
    if not settings.db_host:
        raise errors.DatabaseUnavailable("DB_IAM_AUTH=true needs DB_HOST, the cluster's endpoint")
    context = _deployed_tls(settings)  # refused before anything is signed
    return {
        "user": settings.db_user,
        # Fresh for every new connection: valid 15 minutes, and used only to log in.
        "password": _iam_token(settings.db_host, settings.db_port, settings.db_user, settings.region),
        "host": settings.db_host,
        "port": settings.db_port,
        "database": settings.db_name,
        "ssl_context": context,
    }


def _secret_params(settings: Settings) -> dict:
    context = _deployed_tls(settings)
    secret = read_secret(settings.db_secret_arn)
    return {
        "user": secret["username"],
        "password": secret["password"],
        "host": secret.get("host") or settings.db_host,
        "port": int(secret.get("port") or settings.db_port),
        "database": secret.get("dbname") or settings.db_name,
        "ssl_context": context,
    }


def _iam_token(host: str, port: int, user: str, region: str) -> str:
    """An RDS IAM authentication token: signed here with the function's credentials (no network call). In
    Lambda they are in the environment and the standard library signs (``aws``); elsewhere botocore finds them."""
    token = aws.rds_auth_token_from_environment(host, port, user, region)
    if token is not None:
        return token
    import botocore.exceptions  # only a login without credentials in the environment pays for boto3

    try:
        return aws.client("rds").generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user, Region=region)
    except botocore.exceptions.BotoCoreError as exc:  # no credentials, most likely
        raise errors.DatabaseUnavailable(f"cannot sign an IAM database token: {exc}") from exc


def _deployed_tls(settings: Settings) -> ssl.SSLContext:
    """Aurora's certificate, verified against the RDS CA bundle, host name included. Fails closed: a
    deployed stage without the bundle does not connect at all rather than connect unverified."""
    if not settings.db_ssl_root_cert:
        raise errors.DatabaseUnavailable(
            "DB_SSL_ROOT_CERT is unset: a deployed connection (DB_IAM_AUTH or DB_SECRET_ARN) verifies the"
            " database's certificate against that CA bundle and will not connect without it"
        )
    mode = "verify-full+system" if settings.db_ssl_trust_system else "verify-full"
    return _tls_context(_bundled(settings.db_ssl_root_cert), mode)


def _bundled(path: str) -> str:
    """DB_SSL_ROOT_CERT as an absolute path: a relative one is in the deployment package (beside app.py)."""
    resolved = Path(path) if Path(path).is_absolute() else PACKAGE_ROOT / path
    if not resolved.is_file():
        raise errors.DatabaseUnavailable(f"DB_SSL_ROOT_CERT: no CA bundle at {resolved}")
    return str(resolved)


@functools.lru_cache(maxsize=16)
def _tls_context(cafile: str | None, mode: str) -> ssl.SSLContext:
    """The TLS context for a libpq sslmode, once per process per (CA file, mode): each costs ~47 ms to
    build. ``require`` encrypts without verifying; ``verify-ca`` checks the chain against ``cafile`` (the
    system's trust store when None); ``verify-full`` checks the host name too, and ``verify-full+system``
    also trusts the system's store beside ``cafile`` (an RDS Proxy's certificate is issued by ACM)."""
    if mode == "require":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise errors.DatabaseUnavailable(f"cannot load the CA bundle {cafile}: {exc}") from exc
    if mode == "verify-full+system":
        context.load_default_certs()
    context.check_hostname = mode.startswith("verify-full")
    context.verify_mode = ssl.CERT_REQUIRED
    return context


_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _params_from_url(url: str, root_cert: str | None = None) -> dict:
    """libpq's URL, as far as we use it: ``?host=`` a socket directory, ``sslmode`` and ``sslrootcert``
    (a path, or ``system``; unset, ``root_cert`` as DB_SSL_ROOT_CERT gives it)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    params = {
        "user": unquote(parts.username or "postgres"),
        "database": unquote(parts.path.lstrip("/")) or "postgres",
    }
    if parts.password:
        params["password"] = unquote(parts.password)
    port = parts.port or 5432
    socket_dir = query.get("host", [None])[0]
    if socket_dir:
        params["unix_sock"] = f"{socket_dir}/.s.PGSQL.{port}"
    else:
        params["host"] = parts.hostname or "localhost"
        params["port"] = port
    mode = query.get("sslmode", ["prefer"])[0]
    if mode not in _SSLMODES:
        raise errors.DatabaseUnavailable(f"DATABASE_URL: sslmode={mode} is not one of {', '.join(_SSLMODES)}")
    if mode == "disable" or (socket_dir and mode in ("allow", "prefer")):
        # libpq never negotiates TLS on a Unix socket; pg8000 would ask, and build a default SSL context
        # (~15 ms: the system's trust store) for every connection, to hear no.
        params["ssl_context"] = False
    elif mode in ("require", "verify-ca", "verify-full"):
        params["ssl_context"] = _tls_context(_url_root_cert(query, root_cert) if mode != "require" else None, mode)
    # allow, prefer (libpq's default): pg8000's own, TLS without verification if the server offers it.
    return params


def _url_root_cert(query: dict, root_cert: str | None) -> str | None:
    named = query.get("sslrootcert", [None])[0]
    if named == "system" or (named is None and root_cert is None):
        return None
    if named is None:
        return _bundled(root_cert)
    return str(Path(named).resolve())  # libpq's: relative to the working directory


def read_secret(arn: str) -> dict:
    # Fetched once per cold start: the managed secret rotates, but a rotation
    # closes the old sessions and the reconnect path below reads it again.
    with _secret_lock:  # boto3's default session is not safe to build clients from in two threads at once
        if arn not in _secret_cache:
            import boto3  # only deployed runs pay for boto3

            value = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
            _secret_cache[arn] = json.loads(value)
        return _secret_cache[arn]


def _tcp_socket(params: dict, timeout: float) -> socket.socket | None:
    """The TCP connection as libpq makes it: Nagle off (TCP_NODELAY), keepalive on. pg8000 leaves Nagle on,
    and over TLS its startup message then waits for the server's delayed ACK of the handshake: ~40 ms
    more for every new connection (measured by bench.cold_start). None for a Unix socket."""
    if "host" not in params:
        return None
    sock = socket.create_connection((params["host"], params["port"]), timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


def open_connection(*, as_app_role: bool = True):
    """A new connection with the statement timeout set and, by default, the app's role."""
    settings = get_settings()
    timeout = settings.connect_timeout_s + settings.statement_timeout_ms // 1000 + 2
    sock = None
    try:
        params = connection_params(settings)
        sock = _tcp_socket(params, timeout)
        # With ``sock`` pg8000 uses ours (``host`` still names the server its certificate must).
        conn = _driver().native.Connection(**params, sock=sock, timeout=timeout, application_name="billing-platform")
        adapters.install(conn)  # one round trip per statement, fast timestamptz (chalicelib/db/adapters.py)
        conn.run(f"SET statement_timeout = {int(settings.statement_timeout_ms)}")
        conn.run("SET idle_in_transaction_session_timeout = 60000")
        if as_app_role and settings.db_app_role:
            conn.run(f"SET ROLE {_driver().native.identifier(settings.db_app_role)}")
    except (_Driver.DatabaseError, _Driver.InterfaceError, OSError) as exc:
        _secret_cache.clear()
        if sock is not None:
            sock.close()
        raise errors.translate(exc) from exc
    return conn


def get_connection():
    """This thread's connection; a new one once settings were reset (another database, in tests), so a
    worker thread (a webhook lane's) never keeps talking to the database it first connected to."""
    conn = getattr(_local, "conn", None)
    if conn is not None and getattr(_local, "settings", None) is not get_settings():
        reset_connection()
        conn = None
    if conn is None:
        conn = open_connection()
        _local.conn, _local.settings = conn, get_settings()
    return conn


def reset_connection() -> None:
    """Drop this thread's cached connection (after a failure, or when settings change)."""
    conn = getattr(_local, "conn", None)
    _local.conn = None
    if conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - the connection is being thrown away anyway
            pass


@contextmanager
def transaction(tenant_id: str | uuid.UUID | None = None, *, wait_for_flush: bool = True):
    """Run a unit of work; with ``tenant_id`` every statement sees that tenant's rows only. Without
    ``wait_for_flush`` its COMMIT does not wait for the WAL flush (``synchronous_commit`` off, set with
    the BEGIN): for a transaction a crash may lose, as the next one that waits flushes it first."""
    if tenant_id is not None:
        tenant_id = str(uuid.UUID(str(tenant_id)))
    with tracing.subsegment("postgres.transaction", tenant_id=tenant_id or "-"):
        yield from _transaction(tenant_id, wait_for_flush)


def _transaction(tenant_id, wait_for_flush: bool = True):
    # The tenant id is a UUID's canonical text (``transaction``), so it is written into the statement.
    scope = "" if tenant_id is None else f"; SELECT set_config('app.tenant_id', '{tenant_id}', true)"
    scope += "" if wait_for_flush else "; SET LOCAL synchronous_commit = off"
    tx = Transaction(get_connection(), "BEGIN" + scope)
    try:
        yield tx
    except BaseException:
        if tx.broken:
            reset_connection()
        elif tx.started and not tx.committed:
            try:
                tx._conn.run("ROLLBACK")
            except Exception:  # noqa: BLE001 - a broken connection is replaced next time
                reset_connection()
        raise
    if not tx.started or tx.committed:
        return  # nothing ran, so nothing began; or the last statement took the COMMIT with it
    try:
        tx._conn.run("COMMIT")
    except (_Driver.DatabaseError, _Driver.InterfaceError, OSError) as exc:
        reset_connection()
        raise errors.translate(exc) from exc


@contextmanager
def separate_transaction(tenant_id: str):
    """A tenant's transaction on a connection of its own, committed whatever becomes of the caller's (which
    ``transaction`` would join: it reuses this thread's connection). For a record of a refusal that the
    caller's transaction then rolls back. Costs a connection: keep it to rare paths."""
    conn = open_connection()
    tx = Transaction(conn)
    try:
        tx.run("BEGIN")
        tx.run("SELECT set_config('app.tenant_id', :tenant_id, true)", tenant_id=str(uuid.UUID(str(tenant_id))))
        yield tx
        tx.run("COMMIT")
    finally:
        conn.close()  # uncommitted work (an exception) is rolled back with it
