"""Cold start: importing app as Lambda would, from the deployment package, with and without bytecode.

    .venv/bin/python -m bench.cold_start [--runs 7]

Builds the package (devtools.package: chalice package + slimming + bytecode),
extracts it twice (as shipped, and with every __pycache__ removed, which is what
Lambda sees for a package without bytecode: it compiles every module on import),
and times a fresh interpreter doing ``import app`` from each, against a bare
``import boto3`` in the same run. boto3 and botocore come from this environment,
as they come from the runtime in Lambda. Prints medians and ratios; asserts nothing.

It also times Cognito's pre-token-generation trigger as Cognito meets it on a cold start: a fresh
interpreter importing app from the package, then its first answer to a sign-in event (the first
database connection included), on the embedded PostgreSQL (or DATABASE_URL's server), measured
inside the process; Cognito gives a trigger 5 seconds.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from devtools import package


def _time(code: str, path: Path | None, runs: int) -> float:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "AWS_EC2_METADATA_DISABLED": "true"}
    env.pop("PYTHONPATH", None)
    if path is not None:
        env["PYTHONPATH"] = str(path)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, cwd=path or tempfile.gettempdir(), check=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


TRIGGER = """
import json, sys, time
started = time.perf_counter()
import app
imported = time.perf_counter()
app.pre_token_generation(json.loads(sys.argv[1]), None)
answered = time.perf_counter()
print(json.dumps({"import": imported - started, "answer": answered - imported}))
"""


def _trigger_database() -> tuple[str, str]:
    """A migrated database with one active tenant: (its URL, the tenant id)."""
    import uuid

    from chalicelib.db import migrate, reset_connection
    from devtools import postgres

    admin_url = postgres.ensure_server(postgres.LOCAL_DIR / "pg-bench")
    url = postgres.ensure_database(admin_url, "billing_cold_start")
    os.environ["DATABASE_URL"] = url
    reset_connection()
    migrate.migrate(log=lambda _: None)
    tenant_id = str(uuid.uuid4())
    conn = postgres.admin_connection(url)
    try:
        conn.run("INSERT INTO tenants (id, name, email) VALUES (:id, 'Cold', 'cold@start.test')", id=tenant_id)
    finally:
        conn.close()
    return url, tenant_id


def _time_trigger(path: Path, database_url: str, tenant_id: str, runs: int) -> tuple[float, float]:
    import json

    event = {
        "version": "3",
        "triggerSource": "TokenGeneration_Authentication",
        "region": "us-east-1",
        "userPoolId": "us-east-1_bench",
        "userName": "ada",
        "callerContext": {"awsSdkVersion": "aws-sdk-unknown-unknown", "clientId": "bench"},
        "request": {
            "userAttributes": {"sub": "s", "custom:tenant_id": tenant_id},
            "groupConfiguration": {"groupsToOverride": ["ADMIN"], "iamRolesToOverride": [], "preferredRole": None},
            "scopes": ["aws.cognito.signin.user.admin"],
        },
        "response": {"claimsAndScopeOverrideDetails": None},
    }
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "AWS_EC2_METADATA_DISABLED": "true", "PYTHONPATH": str(path)}
    env.update({"DATABASE_URL": database_url, "STAGE": "dev", "LOG_FORMAT": "json"})
    imports, answers = [], []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", TRIGGER, json.dumps(event)], env=env, cwd=path, check=True, capture_output=True
        )
        timing = json.loads(done.stdout.decode().strip().splitlines()[-1])
        imports.append(timing["import"])
        answers.append(timing["answer"])
    return statistics.median(imports), statistics.median(answers)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "build"
        # The real RDS CA bundle if it was downloaded (README, Deploy), else a stand-in of the same size class.
        bundle = package.DEFAULT_CA_BUNDLE
        if not bundle.exists():
            from devtools.certs import Authority

            bundle = Authority.make("stand-in RDS CA").write(Path(tmp) / "ca.pem")
        result = package.package("dev", out, rds_ca_bundle=bundle)
        shipped, bare = Path(tmp) / "shipped", Path(tmp) / "no-bytecode"
        with zipfile.ZipFile(out / "deployment.zip") as archive:
            archive.extractall(shipped)
            archive.extractall(bare)
        for cache in bare.rglob("__pycache__"):
            shutil.rmtree(cache)
        interpreter = _time("pass", None, args.runs)
        boto3 = _time("import boto3", None, args.runs) - interpreter
        cold = _time("import app", bare, args.runs) - interpreter
        warm = _time("import app", shipped, args.runs) - interpreter
        database_url, tenant_id = _trigger_database()
        trigger_bare = _time_trigger(bare, database_url, tenant_id, args.runs)
        trigger_shipped = _time_trigger(shipped, database_url, tenant_id, args.runs)
    print(
        f"deployment.zip: {result['zip_bytes'] / 1e6:.2f} MB (chalice built {result['zip_bytes_before'] / 1e6:.2f} MB)"
    )
    print(f"import app, no bytecode (as Lambda compiles it): {cold * 1000:.0f} ms ({cold / boto3:.2f}x import boto3)")
    print(f"import app, shipped bytecode:                    {warm * 1000:.0f} ms ({warm / boto3:.2f}x import boto3)")
    print(f"import boto3 (reference):                        {boto3 * 1000:.0f} ms")
    print(f"(interpreter start-up, subtracted from each: {interpreter * 1000:.0f} ms; median of {args.runs} runs)")
    for label, (imported, answered) in (("no bytecode", trigger_bare), ("shipped bytecode", trigger_shipped)):
        total = imported + answered
        print(
            f"pre-token trigger, {label}: import {imported * 1000:.0f} ms + first answer {answered * 1000:.0f} ms"
            f" = {total * 1000:.0f} ms ({total / 5:.3f} of Cognito's 5 s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
