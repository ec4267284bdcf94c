"""Schemathesis (all phases: examples, coverage, fuzzing, stateful) against the committed
docs/openapi.json and the app served by chalice local on 127.0.0.1, with a real token.

Passing means: no 5xx, and every response's status, content type, headers and body
conform to the document, for positive and negative (schema-violating) requests alike.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.hardening.conftest import FULL

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "openapi.json"
# Generators for the document's own formats (iso-4217); it imports chalicelib, hence PYTHONPATH below.
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
EXAMPLES = 1000 if FULL else 40
# Fixed so CI replays the same cases; HARDENING_SEED=<n> explores others.
SEED = os.environ.get("HARDENING_SEED", "20261124")
FIGURE = (
    "API fuzzing: {requests} requests served ({cases} generated cases, {operations} operations):"
    " {server_errors} 5xx, {failures} failed checks"
)


def test_generated_requests_get_documented_responses_and_never_a_5xx(stack, figures, tmp_path):
    operator = stack.operator
    stack.plan(operator)
    stack.billed_account(operator)  # so lists, ledgers and invoices have rows to conform
    served_before = len(stack.statuses())

    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file",
            str(Path(__file__).with_name("schemathesis.toml")),
            "run",
            str(DOCUMENT),
            "--url",
            stack.url,
            "--header",
            f"Authorization: Bearer {operator.admin}",
            "--checks",
            "all",
            "--max-examples",
            str(EXAMPLES),
            "--workers",
            "1",
            "--seed",
            SEED,
            "--generation-database",
            "none",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=3000,
        cwd=tmp_path,
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": str(HOOKS),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        },
    )
    statuses = stack.statuses()[served_before:]
    cases = re.search(r"(\d+) generated", run.stdout)
    assert cases, f"schemathesis's summary changed shape: {run.stdout[-2000:]}"
    failures = re.search(r"(\d+) unique failures?", run.stdout)  # absent when there are none
    figures.add(
        "fuzz",
        FIGURE,
        requests=len(statuses),
        cases=int(cases.group(1)),
        operations=sum(len(methods) for methods in json.loads(DOCUMENT.read_text())["paths"].values()),
        server_errors=sum(s >= 500 for s in statuses),
        failures=int(failures.group(1)) if failures else 0,
    )

    assert run.returncode == 0, run.stdout[-20000:]
    assert not [s for s in statuses if s >= 500]
    assert len(statuses) >= 1000, "thousands of requests reached the app"
