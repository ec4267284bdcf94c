"""Trial reminders: ``subscription.trial_will_end``, once per trial, TRIAL_WILL_END_DAYS before it ends.

Run by the daily schedule. Trials ending within the window are found across tenants
through the id-only ``trials_ending`` function, then marked and announced through the
outbox in each tenant's own transaction (its accounts locked first, as billing locks them),
so a second run (or a redelivered schedule) announces nothing twice. A trial shorter than
the window is announced on the first run; moving a trial's end re-arms its reminder.
"""

from collections import defaultdict
from datetime import datetime, timedelta

from chalicelib import outbox
from chalicelib.billing import subscription_views
from chalicelib.db import transaction
from chalicelib.db.queries import load

Q = load("trials")
TRIAL_WILL_END_DAYS = 3
PAGE = 1000


def remind(now: datetime) -> int:
    """Announce every trial ending within TRIAL_WILL_END_DAYS of ``now``; how many were announced."""
    announced = 0
    while True:
        with transaction() as tx:
            rows = tx.all(Q["ending"], as_of=now, until=now + timedelta(days=TRIAL_WILL_END_DAYS), max_rows=PAGE)
        by_tenant = defaultdict(list)
        for row in rows:
            by_tenant[str(row["tenant_id"])].append(str(row["subscription_id"]))
        for tenant_id, ids in by_tenant.items():
            announced += _announce(tenant_id, ids, now)
        if len(rows) < PAGE:
            return announced


def _announce(tenant_id: str, subscription_ids: list[str], now: datetime) -> int:
    with transaction(tenant_id=tenant_id) as tx:
        tx.run(Q["lock_accounts"], ids=subscription_ids)
        marked = tx.all(Q["mark_reminded"], ids=subscription_ids)
        for row in marked:
            fields = {
                "subscriptionId": str(row["id"]),
                "accountId": str(row["account_id"]),
                "trialEnd": row["trial_end"],
                "timestamp": now,
            }
            outbox.add(tx, "subscription.trial_will_end", fields, subscription_views.get(tx, str(row["id"])))
    outbox.flush_quietly(tenant_id)
    return len(marked)
