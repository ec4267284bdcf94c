"""The app served for real on 127.0.0.1: `chalice local`, a moto server, one database.

What the API fuzzer and the load run talk to, over real HTTP: the same process
`make run` serves (chalice local, which keeps ``app.current_request`` per thread),
with tokens from a Cognito pool in its own moto server process, so nothing here
shares moto's in-process state with the tests around it.

    with Stack(database_url, log_dir) as stack:
        acme = stack.tenant("Acme")
        stack.call("GET", "/v1/plans", acme.user)

The database must already be migrated; the stack adds a platform-operator tenant
as the schema owner and everything else over the API.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from devtools.postgres import PROJECT_ROOT, admin_connection

BIN = Path(sys.executable).parent
DUMMY_AWS = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@dataclass
class Tenant:
    id: str
    admin: str
    user: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _env(**values):
    """Point this process's boto3 at the stack's moto server for a moment, then put things back."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _wait_until(ready, what: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        try:
            if ready():
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} was not ready within {timeout} s")


class Stack:
    def __init__(self, database_url: str, log_dir: Path, extra_env: dict | None = None):
        self.database_url = database_url
        self.log_dir = Path(log_dir)
        self.extra_env = extra_env or {}
        self.stripe = None  # the Stripe stand-in, once started
        self.url = ""
        self.aws_endpoint = ""
        self.session = requests.Session()
        self._procs: list[subprocess.Popen] = []
        self.env: dict = {}  # what the app's processes run with: chalice local and any one-off worker
        self.messaging = None
        self._pool = None
        self._operator: Tenant | None = None

    def __enter__(self) -> "Stack":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.aws_endpoint = f"http://127.0.0.1:{free_port()}"
        moto = self._spawn("moto", [BIN / "moto_server", "-H", "127.0.0.1", "-p", self.aws_endpoint.rsplit(":", 1)[1]])
        _wait_until(lambda: self.session.get(f"{self.aws_endpoint}/moto-api/").ok, "moto server", moto)

        with self._aws():
            from devtools import local_aws
            from devtools.cognito import LocalPool

            self._pool = LocalPool(None)
            self._pool.lookup = self._token_subject  # the trigger reads this stack's database
            # Redelivery as deployed (infra's max_receive_count), but seconds apart rather than minutes.
            self.messaging = local_aws.provision_messaging(visibility_timeout=3, max_receive_count=5)
            app_env = {**self._pool.env(self.aws_endpoint), **self.messaging.env()}

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        from devtools.stripe_standin import StripeStandin

        self.stripe = StripeStandin()
        self.stripe.start()
        self.env = {
            **os.environ,
            **DUMMY_AWS,
            **app_env,
            "AWS_ENDPOINT_URL": self.aws_endpoint,
            "DATABASE_URL": self.database_url,
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            # A dead settler's claim on a payment lapses within one redelivery (visibility 3 s),
            # as deployed it lapses within the function timeout (visibility is 6x that).
            "PAYMENT_CLAIM_LEASE_S": "2",
            # Tenants that connect Stripe are charged through the SDK against the local stand-in.
            "STRIPE_API_BASE": self.stripe.url,
            "STRIPE_TIMEOUT_S": "1",
            "GATEWAY_CREDENTIALS_STORE": "secretsmanager",
            "PUBLIC_API_URL": self.url,
            **self.extra_env,
        }
        command = [BIN / "chalice", "local", "--stage", "local", "--no-autoreload"]
        chalice = self._spawn("chalice", [*command, "--host", "127.0.0.1", "--port", str(port)], self.env)
        _wait_until(lambda: self.session.get(f"{self.url}/v1/health").status_code == 200, "chalice local", chalice)

    def _spawn(self, name: str, command: list, env: dict | None = None) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - the child holds it until stop()
        proc = subprocess.Popen(
            [str(part) for part in command],
            cwd=PROJECT_ROOT,
            env=env or {**os.environ, **DUMMY_AWS},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self._procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self._procs):
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._procs.clear()
        self.session.close()
        if self.stripe is not None:
            self.stripe.stop()
            self.stripe = None

    def _aws(self):
        return _env(**DUMMY_AWS, AWS_ENDPOINT_URL=self.aws_endpoint)

    def python(self, module: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``python -m module args`` as one more process of the app (a Lambda invocation, say):
        same database, same moto server, same settings as chalice local. Its output goes to the log dir."""
        with open(self.log_dir / f"{module.rsplit('.', 1)[-1]}.log", "ab") as log:
            return subprocess.run(
                [sys.executable, "-m", module, *args],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )

    # --- tenants and tokens ---------------------------------------------------------------

    def token(self, tenant_id: str | None, *groups: str) -> str:
        with self._aws():
            return self._pool.token(tenant_id, *groups)

    def forge(self, tenant_id: str | None, **kwargs) -> str:
        return self._pool.forge(tenant_id, **kwargs)

    @property
    def operator(self) -> Tenant:
        """A platform-operator tenant, inserted as the schema owner: the one tenant not made over the API."""
        if self._operator is None:
            tenant_id = str(uuid.uuid4())
            self.sql(
                # The platform's own tenant is on the unlimited tier: a fuzzer making 1,000 machine clients
                # or webhook endpoints meets no plan limit (tests/functional/test_tenant_limits_api.py does).
                "INSERT INTO tenants (id, name, email, plan_tier, settings)"
                " VALUES (:id, 'Platform', 'ops@platform.test', 'enterprise', '{\"platform_operator\": true}')",
                id=tenant_id,
            )
            self._operator = Tenant(tenant_id, self.token(tenant_id, "ADMIN"), self.token(tenant_id, "USER"))
        return self._operator

    def _token_subject(self, tenant_id: str | None, client_id: str | None) -> dict | None:
        """``auth.subject`` on this stack's database: the trigger's lookup for tokens it issues."""
        from chalicelib.db.queries import load

        rows = self.sql(load("auth")["token_subject"], tenant=tenant_id, client=client_id)
        return dict(zip(("tenant_id", "status", "plan_tier", "features"), rows[0], strict=True)) if rows else None

    def sql(self, statement: str, **params) -> list:
        """Run one statement as the schema owner (set-up the API cannot do, and checks across tenants)."""
        conn = admin_connection(self.database_url)
        try:
            return conn.run(statement, **params)
        finally:
            conn.close()

    def plan(self, tenant: Tenant, **fields) -> dict:
        """A monthly plan of ``tenant`` (by default "pro", 49.00 USD), made over the API."""
        body = {"code": "pro", "name": "Pro", "interval": "month", "amount": 4900, "currency": "USD", **fields}
        status, created, _ = self.call("POST", "/v1/plans", tenant.admin, body)
        assert status == 201, created
        return created

    def due_account(self, tenant: Tenant, plan: str = "pro") -> str:
        """An account of ``tenant`` with a monthly subscription, made over the API, whose period ended
        ten days ago: the next rebill run charges it."""
        status, account, _ = self.call(
            "POST", "/v1/accounts", tenant.user, {"email": "due@customer.test", "name": "Due", "currency": "USD"}
        )
        assert status == 201, account
        status, created, _ = self.call(
            "POST", "/v1/subscriptions", tenant.user, {"account_id": account["id"], "plan": plan}
        )
        assert status == 201, created
        for statement in FALL_DUE:
            self.sql(statement, account=account["id"])
        return account["id"]

    def billed_account(self, tenant: Tenant, plan: str = "pro") -> str:
        """A due account rebilled through the API: it has an invoice, ledger entries and a payment,
        all made by the app."""
        account = self.due_account(tenant, plan)
        status, rebilled, _ = self.call("POST", f"/v1/accounts/{account}/rebill", tenant.admin, {})
        assert status == 200 and rebilled["outcome"] == "succeeded", rebilled
        return account

    def tenant(self, name: str) -> Tenant:
        """A new tenant provisioned through ``POST /v1/tenants``, with an ADMIN and a USER token."""
        body = {"name": name, "email": f"billing@{uuid.uuid4().hex[:8]}.test", "plan": "growth"}
        status, created, _ = self.call("POST", "/v1/tenants", self.operator.admin, body)
        if status != 201:
            raise RuntimeError(f"POST /v1/tenants -> {status}: {created}")
        return Tenant(created["id"], self.token(created["id"], "ADMIN"), self.token(created["id"], "USER"))

    # --- HTTP ------------------------------------------------------------------------------

    def call(self, method: str, path: str, token: str | None = None, body=None, headers: dict | None = None):
        """(status, parsed JSON body, headers); POSTs get a fresh Idempotency-Key unless one is given."""
        sent = {"Content-Type": "application/json"}
        if token:
            sent["Authorization"] = f"Bearer {token}"
        if method == "POST":
            sent["Idempotency-Key"] = str(uuid.uuid4())
        sent.update(headers or {})
        data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
        response = self.session.request(method, f"{self.url}{path}", data=data, headers=sent, timeout=30)
        try:
            parsed = response.json() if response.content else {}
        except ValueError:
            parsed = {"unparsed": response.text[:200]}
        return response.status_code, parsed, response.headers

    def statuses(self) -> list[int]:
        """The status of every request chalice local has served so far, from its one log line per invocation."""
        seen = []
        for line in (self.log_dir / "chalice.log").read_text(errors="replace").splitlines():
            match = _INVOCATION.search(line)
            if match:
                seen.append(int(match.group(1)))
        return seen


# Run as the owner: move an account's new monthly subscription back so its period ended ten days ago.
FALL_DUE = (
    "UPDATE subscriptions SET billing_anchor = now() - interval '40 days',"
    " current_period_start = now() - interval '40 days', current_period_end = now() - interval '10 days'"
    " WHERE account_id = CAST(:account AS uuid)",
    "UPDATE accounts SET billing_anchor = now() - interval '40 days',"
    " next_billing_at = now() - interval '10 days' WHERE id = CAST(:account AS uuid)",
)
_INVOCATION = re.compile(r'"message": "[A-Z]+ \S+ -> (\d{3}) in \d+ ms"')
