"""`make run`: everything a laptop needs to serve the API for real.

Starts (or reuses) the embedded PostgreSQL under .local/pg, applies migrations,
loads the demo seed, and runs `chalice local --stage local` on 127.0.0.1. Ctrl-C
stops the processes it started; the data stays.
"""

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from devtools import postgres


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def _start_pump():
    """Deliver the local queues to app.py's SQS handlers, as Lambda would (see devtools.pump)."""
    import app as app_module
    from devtools import local_aws
    from devtools.pump import LambdaContext, Pump, bindings_for, scheduled_event

    queues = {name: {"url": url, "arn": arn} for name, url, arn in local_aws.queue_urls()}
    pump = Pump(bindings_for(app_module, queues))
    # The schedules a laptop needs every minute: the outbox sweep (and webhook retries past SQS's
    # 15-minute delay), and the invoice finalizer (drafts whose grace period ended, stale refunds).
    sweeper, finalizer = LambdaContext("outbox_sweep"), LambdaContext("invoice_finalizer")
    pump.run_forever(
        sweep=lambda: (
            app_module.outbox_sweep(scheduled_event(), sweeper),
            app_module.invoice_finalizer(scheduled_event(), finalizer),
        )
    )
    print(f"pump:     delivering {', '.join(queues)} to app.py handlers")
    return pump


def _start_stripe_standin(port: int, api_url: str):
    """The local Stripe (devtools.stripe_standin) the app's Stripe SDK talks to; tenants' keys go to
    the local Secrets Manager, as deployed. Its webhooks reach this app's route."""
    from devtools.stripe_standin import StripeStandin

    standin = StripeStandin()
    standin.start(port)
    os.environ.update(
        STRIPE_API_BASE=standin.url,
        GATEWAY_CREDENTIALS_STORE="secretsmanager",
        PUBLIC_API_URL=os.environ.get("PUBLIC_API_URL", api_url),
    )
    return standin


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description="run billing-platform locally")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    # Chalice's reloader polls every file under the project, .venv and the live
    # PostgreSQL data included, and restarts on each checkpoint: opt-in only.
    parser.add_argument("--aws-port", type=int, default=int(os.environ.get("MOTO_PORT", "5100")))
    parser.add_argument("--stripe-port", type=int, default=int(os.environ.get("STRIPE_STANDIN_PORT", "12111")))
    parser.add_argument("--reload", action="store_true", help="restart chalice local when code changes")
    args = parser.parse_args(argv)
    from devtools import local_aws

    # Before the first boto3 client (the moto provisioning below), whatever imports app.py first.
    local_aws.quiet_sdk_logs()

    admin_url = postgres.ensure_server(postgres.LOCAL_DIR / "pg")
    database_url = os.environ.get("DATABASE_URL") or postgres.ensure_database(admin_url, "billing")
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("LOG_FORMAT", "json")

    from chalicelib.db import migrate

    migrate.migrate()
    from devtools import seed

    seed.seed()
    endpoint = local_aws.start_server(args.aws_port)
    os.environ.update(local_aws.provision(endpoint))
    standin = _start_stripe_standin(args.stripe_port, f"http://{args.host}:{args.port}")
    pump = _start_pump()
    print(f"database: {database_url}")
    print(f"local AWS (moto): {endpoint}")
    print(f"stripe stand-in: {standin.url}   (keys: curl -XPOST {standin.url}/_standin/accounts; README)")
    print("token:    TOKEN=$(.venv/bin/python -m devtools.token --group ADMIN)")
    print(f"serving:  http://{args.host}:{args.port}/v1/health   (Ctrl-C stops)", flush=True)

    chalice = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("chalice")),
            "local",
            "--stage",
            "local",
            "--host",
            args.host,
            "--port",
            str(args.port),
        ]
        + ([] if args.reload else ["--no-autoreload"]),
        cwd=postgres.PROJECT_ROOT,
        env=os.environ.copy(),
    )
    try:
        return chalice.wait()
    except KeyboardInterrupt:
        pump.stop.set()
        chalice.send_signal(signal.SIGINT)
        try:
            chalice.wait(timeout=10)
        except subprocess.TimeoutExpired:
            chalice.kill()
        print("stopped; data kept in .local/")
        return 0


if __name__ == "__main__":
    sys.exit(main())
