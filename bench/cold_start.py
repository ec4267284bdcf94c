"""Cold start as deployed: a fresh interpreter's import of app, then its first request, from the package.

    .venv/bin/python -m bench.cold_start [--runs 7]

Builds the package (devtools.package, the prod stage: chalice package + slimming + bytecode) and extracts it
twice: as shipped, and with every __pycache__ removed (what Lambda sees for a package without bytecode: it
compiles every module on import; PYTHONDONTWRITEBYTECODE keeps it so across runs, as /var/task is
read-only). Each run is a fresh interpreter in the package directory with the environment the function
has deployed: the api_handler's variables from the generated chalice.tf.json (TRACING=true, DB_IAM_AUTH=true,
VERIFY_JWT=false, ...; Terraform's references replaced by local values) and those the Lambda runtime sets
(LAMBDA_TASK_ROOT, AWS_LAMBDA_FUNCTION_NAME, which turns the JSON logs on, the X-Ray daemon's address, the
function's credentials, and ``_X_AMZN_TRACE_ID`` per invocation, sampled). It times, inside the process,
``import app`` and then ``app.app(event, context)`` with the proxy event API Gateway sends once its
Cognito authorizer has verified the token (deployed, VERIFY_JWT is off and the app reads the authorizer's
claims: chalicelib/auth.py):

- ``GET /v1/accounts`` (a page of the tenant's accounts), and
- ``POST /v1/events`` with a batch of 100 usage events (new event ids each run; all accepted),

each as the first request of its interpreter, then once more warm; and Cognito's pre-token-generation
trigger's first answer (Cognito gives a trigger 5 seconds). The interpreter runs with ``-S`` and only the
package and what the Lambda runtime provides on its path (boto3, botocore and their dependencies, linked
from this environment as /var/runtime holds them), so a module the package lacks fails here as in Lambda.
Prints medians (interpreter start-up is not in them: the clock starts at ``import app``); asserts nothing
but that every request succeeded (a failure is printed with its cause, and the exit status is 1).

Where the first request's time went (measured with this bench, ``-X importtime`` and cProfile, before
#17's changes): X-Ray's botocore patch imported boto3 (~45 ms) on the first unit of work; the IAM token
was signed by a boto3 RDS client (~60 ms); pg8000 over TLS left Nagle's algorithm on, so its startup
message waited ~40 ms for the server's delayed ACK on every new connection; jwt imported urllib.request
(~9 ms) though deployed the authorizer verifies tokens. Lambda's X-Ray SDK builds no botocore client for
sampling (LAMBDA_TASK_ROOT: the sampling decision comes with the trace header), so the bench sets it.

The database login is the deployed one, counted in full: ``bench.iam_postgres`` runs a PostgreSQL with TLS
on 127.0.0.1, and the app connects as ``billing_runtime`` by its DB_IAM_AUTH path: the TLS context from the
CA bundle in the package (a stand-in CA of the bench's, plus the real RDS bundle when it was downloaded, or
as many stand-in certificates, so the bundle loads at its real size), verify-full, and a fresh IAM token
signed in-process for the connection. The embedded PostgreSQL cannot check such a token, so this server
hands the password to an LDAP bind answered here, which accepts it only if botocore signs the same token for
that user, host, port and second with the function's credentials: the token the app signed is checked as
IAM would (the bench prints how many logins were accepted and refused). What is not modelled is the
network to Aurora and IAM's own latency behind it: both the same whatever the code does.

The X-Ray daemon is a UDP socket here that counts the documents the SDK sends (the subsegments of the
first request: one ``postgres.transaction`` per unit of work).
"""

import argparse
import importlib.util
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections import Counter
from pathlib import Path

from bench import iam_postgres
from devtools import package

STAGE = "prod"  # the stage whose API trusts API Gateway's authorizer (VERIFY_JWT=false)
REGION = "us-east-1"
PEOPLE_CLIENT = "bench-people-client"
POOL_ID = f"{REGION}_bench"
ACCOUNTS = 20
# What Terraform fills in, as the bench's local stand-ins.
TERRAFORM_VALUES = {
    "${local.db_runtime_user}": iam_postgres.RUNTIME_USER,
    "${local.db_host}": "localhost",
    "${module.messaging.events_topic_arn}": f"arn:aws:sns:{REGION}:123456789012:billing-prod-events",
    "${module.cognito.user_pool_id}": POOL_ID,
    "${module.cognito.client_id}": PEOPLE_CLIENT,
    "${module.cognito.user_pool_arn}": f"arn:aws:cognito-idp:{REGION}:123456789012:userpool/{POOL_ID}",
    "${module.cognito.resource_server_identifier}": "billing",
    "${var.ses_sender}": "billing@bench.test",
    "${local.prefix}": "billing-prod",
    "${6 * var.function_timeout_s}": "180",
    "${module.database.kms_key_arn}": f"arn:aws:kms:{REGION}:123456789012:key/bench",
    "${var.public_api_url}": "https://api.bench.test",
    "${local.metrics_namespace}": "BillingPlatform/billing-prod",
    "${var.rds_proxy}": "false",
}
# The function's own credentials, as Lambda puts them in its environment (a session's: with a token).
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "ASIABENCHCOLDSTART01",
    "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
    "AWS_SESSION_TOKEN": secrets.token_urlsafe(600),  # Lambda's are ~1 KB too
}

CHILD = r"""
import json, os, sys, time
started = time.perf_counter()
import app
imported = time.perf_counter()
job = json.loads(sys.stdin.read())

class Context:
    function_name, memory_limit_in_mb, function_version = job["function"], 1024, "$LATEST"
    def __init__(self, request_id):
        self.aws_request_id = request_id
    def get_remaining_time_in_millis(self):
        return 30000

answers, times = [], []
for n, event in enumerate(job["events"]):
    os.environ["_X_AMZN_TRACE_ID"] = job["trace"][n]  # what the runtime sets for each invocation
    begun = time.perf_counter()
    answers.append(getattr(app, job["entry"])(event, Context(f"req-{n}")))
    times.append(time.perf_counter() - begun)
loaded = sorted({name.split(".")[0] for name in sys.modules})
print("\n" + json.dumps({"import": imported - started, "times": times, "answers": answers,
                          "modules": len(sys.modules), "loaded": loaded}))
"""


class XrayDaemon:
    """A UDP socket where the X-Ray SDK sends its documents; counts them by name."""

    def __init__(self):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.address = "{}:{}".format(*self.socket.getsockname())
        self.names: Counter = Counter()
        threading.Thread(target=self._receive, daemon=True).start()

    def _receive(self):
        while True:
            packet = self.socket.recv(65536).decode(errors="replace")
            _, _, document = packet.partition("\n")  # '{"format": "json", "version": 1}\n{...}'
            try:
                self.names[json.loads(document).get("name", "?")] += 1
            except ValueError:
                self.names["(unreadable)"] += 1

    def take(self) -> Counter:
        time.sleep(0.05)  # the last datagrams of a run that just exited
        names, self.names = self.names, Counter()
        return names


def lambda_runtime(tmp: Path) -> Path:
    """What the Lambda Python runtime puts on sys.path beside the package (/var/runtime): boto3, botocore and
    their dependencies (devtools.package drops them from the zip), linked from this environment. The children
    run with ``-S`` and this plus the package on their path, so a module the package lacks fails here too."""
    runtime = tmp / "runtime"
    runtime.mkdir()
    for name in package.RUNTIME_PROVIDED:
        spec = importlib.util.find_spec(name)
        source = Path(spec.origin)
        source = source.parent if spec.submodule_search_locations else source
        (runtime / source.name).symlink_to(source)
    return runtime


def function_environment(document: dict, function: str, path: Path, db_port: int, daemon: str) -> dict:
    """The function's deployed environment (chalice.tf.json), plus what the Lambda runtime sets."""
    variables = document["resource"]["aws_lambda_function"][function]["environment"]["variables"]
    env = {}
    for name, value in variables.items():
        if "${" in value and value not in TERRAFORM_VALUES:
            raise SystemExit(f"{function}: {name} = {value}: give the bench a local value for it")
        env[name] = TERRAFORM_VALUES.get(value, value)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "PYTHONPATH": f"{path}:{path.parent / 'runtime'}",  # as /var/task, then /var/runtime
        "PYTHONDONTWRITEBYTECODE": "1",
        "LAMBDA_TASK_ROOT": str(path),
        "AWS_LAMBDA_FUNCTION_NAME": f"billing-prod-{function}",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_XRAY_DAEMON_ADDRESS": daemon,
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_EC2_METADATA_DISABLED": "true",  # nothing here may reach AWS
        **CREDENTIALS,
        **env,
        "DB_PORT": str(db_port),  # Aurora's is 5432; the bench's server listens where it can
    }


def _trace_header() -> str:
    return f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};Sampled=1"


def proxy_event(
    method: str, path: str, tenant_id: str, body: dict | None = None, client_id: str = PEOPLE_CLIENT
) -> dict:
    """What API Gateway's REST proxy integration sends once its Cognito authorizer verified an access token
    that ``client_id`` (one of the pool's app clients for people) was issued."""
    now = time.time()
    claims = {
        "sub": str(uuid.uuid4()),
        "cognito:groups": "[ADMIN]",
        "iss": f"https://cognito-idp.{REGION}.amazonaws.com/{POOL_ID}",
        "version": "2",
        "client_id": client_id,
        "custom:tenant_id": tenant_id,
        "token_use": "access",
        "scope": "aws.cognito.signin.user.admin billing/read billing/write billing/usage.write billing/admin",
        "auth_time": str(int(now)),
        "exp": time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(now + 3600)),
        "iat": time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(now)),
        "jti": str(uuid.uuid4()),
        "username": "ada",
    }
    headers = {
        "Accept": "application/json",
        "Authorization": "Bearer eyJraWQiOiJiZW5jaCJ9.eyJzdWIiOiJiZW5jaCJ9.c2lnbmF0dXJl",
        "Host": "abc123.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "bench",
        "X-Amzn-Trace-Id": f"Root=1-{int(now):08x}-{secrets.token_hex(12)}",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    }
    if body is not None:
        headers["Content-Type"] = "application/json"
    request_id = str(uuid.uuid4())
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc123",
            "resourcePath": path,
            "httpMethod": method,
            "extendedRequestId": request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "path": f"/api{path}",
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "stage": "api",
            "domainPrefix": "abc123",
            "requestTimeEpoch": int(now * 1000),
            "requestId": request_id,
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "bench"},
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "apiId": "abc123",
            "authorizer": {"claims": claims},
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


def usage_batch(account_ids: list[str]) -> dict:
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    return {
        "events": [
            {
                "event_id": f"cold-{uuid.uuid4()}",
                "account_id": account_ids[n % len(account_ids)],
                "metric": "api_calls",
                "quantity": n + 1,
                "timestamp": at,
                "properties": {"region": "eu-west-1"},
            }
            for n in range(100)
        ]
    }


def trigger_event(tenant_id: str) -> dict:
    return {
        "version": "3",
        "triggerSource": "TokenGeneration_Authentication",
        "region": REGION,
        "userPoolId": POOL_ID,
        "userName": "ada",
        "callerContext": {"awsSdkVersion": "aws-sdk-unknown-unknown", "clientId": PEOPLE_CLIENT},
        "request": {
            "userAttributes": {"sub": "s", "custom:tenant_id": tenant_id},
            "groupConfiguration": {"groupsToOverride": ["ADMIN"], "iamRolesToOverride": [], "preferredRole": None},
            "scopes": ["aws.cognito.signin.user.admin"],
        },
        "response": {"claimsAndScopeOverrideDetails": None},
    }


SEED = [
    "INSERT INTO tenants (id, name, email) VALUES (:tenant, 'Cold', 'cold@start.test')",
    "INSERT INTO plans (tenant_id, code, name, interval, amount, currency, usage_prices) VALUES (:tenant, 'pro',"
    ' \'Pro\', \'month\', 4900, \'USD\', \'[{"metric": "api_calls", "aggregation": "sum", "unit_amount": 2}]\')',
    "INSERT INTO accounts (tenant_id, email, name, currency, plan_id, billing_anchor, next_billing_at)"
    " SELECT :tenant, 'c' || g || '@cold.test', 'Customer ' || g, 'USD', p.id, now() - interval '1 day',"
    " now() - interval '1 day' + interval '1 month' FROM generate_series(1, :accounts) g, plans p"
    " WHERE p.tenant_id = :tenant",
    "INSERT INTO subscriptions (tenant_id, account_id, plan_id, billing_anchor, current_period_start,"
    " current_period_end) SELECT tenant_id, id, plan_id, billing_anchor, billing_anchor, next_billing_at"
    " FROM accounts WHERE tenant_id = :tenant",
    "ANALYZE",
]


def seed(admin_url: str) -> tuple[str, str, list[str]]:
    """Migrate database ``billing`` on the server and give it one tenant with ACCOUNTS accounts on a
    metered plan: (its URL, the tenant id, the account ids)."""
    from chalicelib.config import reset_settings
    from chalicelib.db import migrate, reset_connection
    from devtools import postgres

    url = postgres.ensure_database(admin_url, "billing")
    os.environ["DATABASE_URL"], os.environ["DB_APP_ROLE"] = url, "billing_app"
    reset_settings()
    reset_connection()
    migrate.migrate(log=lambda _: None)
    reset_connection()
    tenant = str(uuid.uuid4())
    conn = postgres.admin_connection(url)
    try:
        for statement in SEED:
            params = {k: v for k, v in {"tenant": tenant, "accounts": ACCOUNTS}.items() if f":{k}" in statement}
            conn.run(statement, **params)
        accounts = [str(row[0]) for row in conn.run("SELECT id FROM accounts WHERE tenant_id = :t", t=tenant)]
    finally:
        conn.close()
    return url, tenant, accounts


class Failed(Exception):
    """A run that did not answer as it should: the bench reports it instead of a time."""


def run_child(env: dict, path: Path, entry: str, events: list[dict]) -> dict:
    job = {"entry": entry, "events": events, "trace": [_trace_header() for _ in events]}
    job["function"] = env["AWS_LAMBDA_FUNCTION_NAME"]
    done = subprocess.run(
        [sys.executable, "-S", "-c", CHILD], input=json.dumps(job).encode(), env=env, cwd=path, capture_output=True
    )
    if done.returncode != 0:
        raise Failed(done.stderr.decode().strip().splitlines()[-1])
    lines = done.stdout.decode().strip().splitlines()
    result = json.loads(lines[-1])
    logged = [json.loads(line) for line in lines[:-1] if line.startswith('{"timestamp"')]
    result["errors"] = [entry.get("exception", entry["message"]) for entry in logged if entry["level"] == "ERROR"]
    return result


def _checked(kind: str, result: dict) -> dict:
    for answer in result["answers"]:
        if kind == "trigger":
            ok = bool(answer["response"]["claimsAndScopeOverrideDetails"])
        else:
            body = json.loads(answer["body"])
            ok = answer["statusCode"] == 200 and (kind == "GET" or body.get("accepted") == 100)
        if not ok:
            cause = result["errors"][-1].strip().splitlines()[-1] if result["errors"] else json.dumps(answer)[:300]
            raise Failed(f"status {answer.get('statusCode')}: {cause}")
    return result


def measure(kind: str, env: dict, path: Path, tenant: str, accounts: list[str], runs: int) -> dict:
    samples = []
    for _ in range(runs):
        if kind == "GET":
            result = run_child(env, path, "app", [proxy_event("GET", "/v1/accounts", tenant) for _ in range(2)])
        elif kind == "POST":
            events = [proxy_event("POST", "/v1/events", tenant, usage_batch(accounts)) for _ in range(2)]
            result = run_child(env, path, "app", events)
        else:
            result = run_child(env, path, "pre_token_generation", [trigger_event(tenant)])
        samples.append(_checked(kind, result))
    median = statistics.median
    return {
        "import": median(s["import"] for s in samples),
        "first": median(s["times"][0] for s in samples),
        "total": median(s["import"] + s["times"][0] for s in samples),
        "warm": median(s["times"][1] for s in samples) if len(samples[0]["times"]) > 1 else None,
        "modules": median(s["modules"] for s in samples),
        "loaded": samples[-1]["loaded"],
    }


def ca_bundle(tmp: Path, authority) -> tuple[Path, int]:
    """The bench's CA with the real RDS bundle (when downloaded) or as many stand-ins: (its path, certificates)."""
    from devtools.certs import Authority

    if package.DEFAULT_CA_BUNDLE.exists():
        others = package.DEFAULT_CA_BUNDLE.read_bytes()
    else:  # the global bundle holds about a hundred certificates
        others = b"".join(Authority.make(f"stand-in RDS CA {n}").pem() for n in range(100))
    bundle = tmp / "rds-ca-bundle.pem"
    bundle.write_bytes(authority.pem() + others)
    return bundle, bundle.read_bytes().count(b"BEGIN CERTIFICATE")


def build(tmp: Path, bundle: Path) -> tuple[dict, dict, Path, Path]:
    out = tmp / "build"
    result = package.package(STAGE, out, rds_ca_bundle=bundle)
    shipped, bare = tmp / "shipped", tmp / "no-bytecode"
    with zipfile.ZipFile(out / "deployment.zip") as archive:
        archive.extractall(shipped)
        archive.extractall(bare)
    for cache in bare.rglob("__pycache__"):
        shutil.rmtree(cache)
    return result, json.loads((out / "chalice.tf.json").read_text()), shipped, bare


def _interpreter(runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-S", "-c", "pass"], env={"PYTHONDONTWRITEBYTECODE": "1"}, check=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


KINDS = (("GET", "api_handler"), ("POST", "api_handler"), ("trigger", "pre_token_generation"))
NAMES = {"GET": "GET /v1/accounts", "POST": "POST /v1/events (100)", "trigger": "pre-token trigger"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    from devtools.certs import Authority

    authority, daemon = Authority.make("bench RDS CA"), XrayDaemon()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle, certificates = ca_bundle(tmp, authority)
        built, document, shipped, bare = build(tmp, bundle)
        lambda_runtime(tmp)

        def verifier_for(port):
            return iam_postgres.TokenVerifier("localhost", port, REGION, CREDENTIALS)

        with iam_postgres.server(authority, bundle, verifier_for) as server:
            _, tenant, accounts = seed(server.admin_url)
            results = {}
            for label, path in (("shipped bytecode", shipped), ("no bytecode", bare)):
                for kind, function in KINDS:
                    env = function_environment(document, function, path, server.port, daemon.address)
                    try:
                        results[label, kind] = measure(kind, env, path, tenant, accounts, args.runs)
                    except Failed as exc:
                        results[label, kind] = {"failed": str(exc)}
                    results[label, kind]["xray"] = daemon.take()
            report(built, certificates, results, server.verifier, _interpreter(args.runs), args.runs)
    return 1 if any("failed" in r for r in results.values()) else 0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:4.0f} ms"


def report(built: dict, certificates: int, results: dict, verifier, interpreter: float, runs: int) -> None:
    print(f"deployment.zip: {built['zip_bytes'] / 1e6:.2f} MB (chalice built {built['zip_bytes_before'] / 1e6:.2f} MB)")
    print(f"stage {STAGE}, tracing on, JSON logs; CA bundle of {certificates} certificates; median of {runs} runs")
    print(f"(interpreter start-up, not counted: {interpreter * 1000:.0f} ms)")
    for (label, kind), r in results.items():
        if "failed" in r:
            print(f"{label:16} {NAMES[kind]:22} FAILED: {r['failed']}")
            continue
        warm = f", then warm {_ms(r['warm'])}" if r["warm"] is not None else ""
        print(
            f"{label:16} {NAMES[kind]:22} import {_ms(r['import'])} + first {_ms(r['first'])} = {_ms(r['total'])}"
            f"{warm}; {r['modules']:.0f} modules"
        )
    for (label, kind), r in results.items():
        heavy = [
            name
            for name in ("boto3", "botocore", "aws_xray_sdk", "jsonschema", "urllib3")
            if name in r.get("loaded", ())
        ]
        requests = runs * (1 if kind == "trigger" else 2)
        xray = ", ".join(f"{name} x{count / requests:g}" for name, count in sorted(r["xray"].items()))
        print(f"{label:16} {NAMES[kind]:22} loaded: {' '.join(heavy) or '-'}; X-Ray per request: {xray or 'nothing'}")
    print(f"IAM logins: {verifier.accepted} accepted, {verifier.refused} refused (botocore re-signs each token)")
    for kind in ("GET", "POST"):
        for label, limit in (("shipped bytecode", 0.250), ("no bytecode", 0.350)):
            total = results[label, kind].get("total")
            figure = f"{_ms(total)} vs <= {_ms(limit)}: {total / limit:.2f} of it" if total else "failed"
            print(f"target {NAMES[kind]}, {label}: {figure}")


if __name__ == "__main__":
    raise SystemExit(main())
