"""Local AWS for `make run`: a moto server on 127.0.0.1 and the resources the app expects.

Provisioning is the same code the tests run against in-process moto, so the
laptop, the tests and the Terraform name the same things. What was created is
written to .local/aws.json for the other local commands (token, replay).
"""

import json
import os

from devtools.cognito import LocalPool
from devtools.postgres import LOCAL_DIR

STATE_FILE = LOCAL_DIR / "aws.json"
DEFAULT_PORT = 5100


def isolate() -> None:
    """Dummy credentials and no metadata probing, for commands run outside make run/test."""
    for name, value in (
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)


def start_server(port: int = DEFAULT_PORT) -> str:
    """A moto server on the loopback interface; returns its endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    return endpoint


def provision(endpoint: str | None = None) -> dict:
    """Create the Cognito pool and return the env vars the app needs."""
    pool = LocalPool(None if endpoint else LOCAL_DIR / "cognito")
    env = pool.env(endpoint)
    state = {"endpoint": endpoint, "cognito_user_pool_id": pool.pool_id, "env": env}
    LOCAL_DIR.mkdir(exist_ok=True)
    STATE_FILE.write_text(json.dumps(state, indent=2))
    return env


def load_state() -> dict:
    if not STATE_FILE.exists():
        raise SystemExit("no local AWS state: start `make run` first")
    return json.loads(STATE_FILE.read_text())
