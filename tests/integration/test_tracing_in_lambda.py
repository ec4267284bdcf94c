"""Tracing as it runs in Lambda: a fresh interpreter whose X-Ray documents go to a daemon address (a UDP
socket of the test's), the facade segment from ``_X_AMZN_TRACE_ID``. A unit of work is a subsegment without
importing boto3, and an AWS call made afterwards is a subsegment too: botocore is patched when imported."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import json, sys
from chalicelib import tracing

with tracing.subsegment("postgres.transaction", tenant_id="-"):
    pass
loaded = [name for name in ("boto3", "botocore") if name in sys.modules]

from moto import mock_aws
from chalicelib import aws

with mock_aws():
    aws.client("sqs").list_queues()
print(json.dumps(loaded))
"""


def _documents(daemon: socket.socket) -> list[dict]:
    found = []
    daemon.settimeout(0.5)  # the sender has exited: what it sent is here
    try:
        while True:
            header, _, body = daemon.recv(65536).decode().partition("\n")
            assert json.loads(header) == {"format": "json", "version": 1}
            found.append(json.loads(body))
    except TimeoutError:
        return found


def test_in_lambda_a_unit_of_work_is_traced_without_boto3_and_a_later_aws_call_is_traced_too(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as daemon:
        daemon.bind(("127.0.0.1", 0))
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "LAMBDA_TASK_ROOT": str(tmp_path),
            "TRACING": "true",
            "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{daemon.getsockname()[1]}",
        }
        env.pop("AWS_ENDPOINT_URL", None)  # moto in process, not a server
        done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        documents = _documents(daemon)

    assert json.loads(done.stdout.splitlines()[-1]) == []  # no boto3 for tracing's sake
    assert [(d["name"], d.get("namespace")) for d in documents] == [("postgres.transaction", "local"), ("sqs", "aws")]
    assert documents[0]["annotations"] == {"tenant_id": "-"}
    assert {d["trace_id"] for d in documents} == {"1-5759e988-bd862e3fe1be46a994272793"}
    assert documents[1]["aws"]["operation"] == "ListQueues"
