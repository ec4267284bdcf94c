"""The rebill_processor handler over SQS-shaped batches, in a process of its own (bench/rebill.py step 4).

    python bench/rebill_handler.py MESSAGES.json [--tree DIR] [--workers N] [--batch-size 100] [--warm K]

Reads rebill messages ({tenantId, accountId, kind, dueAt}) from a file, runs the first
``--warm`` batches untimed, then the rest through ``app.rebill_processor`` (the mock
gateway) on ``--workers`` threads, and prints one JSON line: accounts, seconds, database
round trips and tenant groups per batch (BENCH_PROFILE=PREFIX: a cProfile of them too, and each
statement's time). ``--tree`` runs another checkout of the app (a ``git archive`` of an earlier
commit: today's handler) against the same database.

A round trip is one flush of the pg8000 socket: the driver then waits for the server's
answer before it sends anything else (pg8000 flushes once per wait).
"""

import argparse
import contextlib
import io
import json
import os
import sys
import threading
import time
from pathlib import Path

# This checkout's counter, whichever tree (--tree) the app is then imported from.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devtools.round_trips import counted_opener  # noqa: E402


def count_round_trips(connection_module) -> list:
    """Wrap every connection the app opens from now on; returns the counter ([round trips])."""
    counter = [0]
    connection_module.open_connection = counted_opener(connection_module.open_connection, counter)
    return counter


def batches_of(messages: list[dict], size: int) -> list[list[dict]]:
    return [
        [{"MessageId": f"m{i + j}", "ReceiptHandle": "r", "Body": json.dumps(m)} for j, m in enumerate(chunk)]
        for i in range(0, len(messages), size)
        for chunk in [messages[i : i + size]]
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("messages")
    parser.add_argument("--tree", help="run the app from this directory instead of this checkout")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--warm", type=int, default=2, help="batches run first, untimed")
    args = parser.parse_args(argv)
    root = Path(args.tree).resolve() if args.tree else Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    with contextlib.redirect_stdout(io.StringIO()):  # the handler's EMF lines
        result = run(json.loads(Path(args.messages).read_text()), args.workers, args.batch_size, args.warm)
    print(json.dumps(result))
    return 0


def run(messages: list[dict], workers: int, batch_size: int, warm: int) -> dict:
    import app as app_module
    from chalicelib.billing import payments
    from chalicelib.db import connection
    from devtools.pump import LambdaContext, lambda_event

    payments.set_gateway(payments.MockGateway())
    counter = count_round_trips(connection)
    batches = batches_of(messages, batch_size)
    for batch in batches[:warm]:
        app_module.rebill_processor(lambda_event(batch, "arn:bench"), LambdaContext("rebill"))
    timed = batches[warm:]
    groups = sum(len({json.loads(r["Body"])["tenantId"] for r in batch}) for batch in timed)
    lock, failures, queue = threading.Lock(), [], list(reversed(timed))

    def work():
        while True:
            with lock:
                if not queue:
                    break
                batch = queue.pop()
            result = app_module.rebill_processor(lambda_event(batch, "arn:bench"), LambdaContext("rebill"))
            failures.extend(result["batchItemFailures"])
        connection.reset_connection()

    before, wal_before = counter[0], _wal_position(connection)
    profile = _profiler(connection)
    started = time.perf_counter()
    if profile:  # this thread: the profiler sees only the thread that enabled it
        work()
        profile.disable()
        profile.dump_stats(os.environ["BENCH_PROFILE"] + f".{os.getpid()}")
        Path(os.environ["BENCH_PROFILE"] + f".{os.getpid()}.sql").write_text(json.dumps(_STATEMENTS, indent=1))
    else:
        threads = [threading.Thread(target=work) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    seconds = time.perf_counter() - started
    wal = _wal_position(connection) - wal_before
    accounts = sum(len(batch) for batch in timed)
    return {
        "accounts": accounts,
        "seconds": seconds,
        "failures": len(failures),
        "batches": len(timed),
        "groups": groups,
        "round_trips": counter[0] - before - workers,  # less each worker's goodbye (the connection's close)
        "wal_bytes": wal,
    }


_STATEMENTS: dict[str, list] = {}  # a statement's first line: [calls, seconds]


def _profiler(connection):
    """BENCH_PROFILE=PREFIX: cProfile the timed batches (on one thread, whatever --workers says) and write
    PREFIX.<pid>, to read with ``python -m pstats``, and PREFIX.<pid>.sql: each statement's calls and
    seconds from send to answer (a pipelined BEGIN or COMMIT counts with its statement)."""
    if not os.environ.get("BENCH_PROFILE"):
        return None
    import cProfile

    send = connection.Transaction._send

    def timed_send(self, sql, params, before, after):
        started = time.perf_counter()
        try:
            return send(self, sql, params, before, after)
        finally:
            key = " ".join(sql.split())[:90] + (" +COMMIT" if after else "")
            entry = _STATEMENTS.setdefault(key, [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - started

    connection.Transaction._send = timed_send

    profile = cProfile.Profile()
    profile.enable()
    return profile


def _wal_position(connection) -> int:
    """The server's WAL position (the bench's server: nothing else writes meanwhile)."""
    with connection.transaction() as tx:
        return int(tx.run("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')")[0][0])


if __name__ == "__main__":
    raise SystemExit(main())
