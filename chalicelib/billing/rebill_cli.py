"""Operators' rebill command: run (or preview) the rebill for a given date.

    python -m chalicelib.billing.rebill_cli --date 2026-12-01 --dry-run   # what would be billed, no writes
    python -m chalicelib.billing.rebill_cli --date 2026-12-01             # enqueue to the rebill queue
    python -m chalicelib.billing.rebill_cli --date 2026-12-01 --inline    # bill here, without the queue

Everything it does is idempotent: running it twice, or beside the schedule, bills
nobody twice. Progress goes to stderr; the summary to stdout.
"""

import argparse
import json
import sys
from collections import defaultdict
from datetime import UTC, datetime

from chalicelib.billing import engine, rebill


class Progress:
    def __init__(self, label: str, stream=sys.stderr):
        self.label, self.stream, self.count = label, stream, 0

    def __call__(self, count: int) -> None:
        self.count = count
        self.stream.write(f"\r{self.label}: {count:,} accounts")
        self.stream.flush()

    def done(self) -> None:
        self.stream.write("\n")


def preview(as_of: datetime, progress=None) -> dict:
    """What a run at ``as_of`` would charge, per currency, in minor units, as the engine computes it. Writes nothing."""
    totals, renewals, retries = defaultdict(int), 0, 0
    for page in rebill.due(as_of):
        due: dict[str, dict[str, datetime]] = defaultdict(dict)
        for message in page:
            if message["kind"] == "retry":
                retries += 1
            elif message["kind"] == "renewal":
                renewals += 1
                due[message["tenantId"]][message["accountId"]] = datetime.fromisoformat(message["dueAt"])
        for tenant_id, accounts in due.items():
            for bill in engine.preview(tenant_id, accounts, as_of):
                totals[bill.currency] += bill.total
        if progress:
            progress(renewals + retries)
    return {"renewals": renewals, "retries": retries, "charges": dict(totals)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="run the rebill for a date")
    parser.add_argument("--date", required=True, help="bill what is due at this date (YYYY-MM-DD, end of day UTC)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print what would be billed; write nothing")
    mode.add_argument("--inline", action="store_true", help="bill in this process instead of via the queue")
    args = parser.parse_args(argv)
    as_of = datetime.fromisoformat(args.date).replace(hour=23, minute=59, second=59, tzinfo=UTC)
    if args.dry_run:
        progress = Progress("previewing")
        summary = preview(as_of, progress)
        progress.done()
        print(f"would bill {summary['renewals']} renewal(s) and retry {summary['retries']} payment(s) at {as_of}")
        for currency, amount in sorted(summary["charges"].items()):
            print(f"  {currency}: {amount} (minor units)")
        return 0
    if args.inline:
        progress = Progress("billing")
        outcomes = defaultdict(int)
        # Never bill ahead of time: a --date in the future selects, but does not charge, early.
        now = min(as_of, datetime.now(UTC))
        for page in rebill.due(as_of):
            for message in page:
                try:
                    outcomes["billed" if rebill.handle(json.dumps(message), now=now) else "skipped"] += 1
                except Exception as exc:  # noqa: BLE001 - one account's failure must not end the run
                    outcomes["failed"] += 1
                    print(f"\n{message['accountId']}: {type(exc).__name__}: {exc}", file=sys.stderr)
            progress(sum(outcomes.values()))
        progress.done()
        print(", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())) or "nothing due")
        return 0
    progress = Progress("enqueued")
    sent = rebill.enqueue_due(as_of, rebill.queue_url(), progress)
    progress.done()
    print(f"enqueued {sent} account(s) for {as_of}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
