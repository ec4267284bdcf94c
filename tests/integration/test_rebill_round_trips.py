"""The rebill batch path talks to the database a fixed number of times per tenant group, whatever its size.

Round trips are counted (a flush of the pg8000 socket: the driver then waits for the answer),
never timed. Per tenant group, three: the state load (its transaction's BEGIN and the tenant's
scope in the same flush), the one write (its COMMIT in the same flush) and the payments' record
(BEGIN, scope, the one ``pay`` statement and COMMIT in one flush): ``connection.Transaction``
pipelines the transaction control with the statements (chalicelib/db/adapters.py).
"""

import json
from datetime import UTC, datetime, timedelta

from chalicelib.billing import rebill, rebill_batch
from chalicelib.db import connection
from tests import billing

ANCHOR = datetime(2027, 1, 31, 9, tzinfo=UTC)
FEB_28 = datetime(2027, 2, 28, 9, tzinfo=UTC)
ENGINE_STATEMENTS = 3  # the state load (with BEGIN and the scope), the write (with COMMIT), the record (with both)
TRANSACTION_CONTROL = 0  # BEGIN, the scope and COMMIT travel with the statements (connection.Transaction)
PER_GROUP = ENGINE_STATEMENTS + TRANSACTION_CONTROL
PER_BATCH = 0  # nothing is read or written once per batch


def _batch(groups: dict[str, list[str]]) -> list[dict]:
    return [
        {
            "messageId": f"{tenant}-{account}",
            "body": json.dumps(
                {"tenantId": tenant, "accountId": account, "kind": "renewal", "dueAt": rebill._iso(FEB_28)}
            ),
        }
        for tenant, accounts in groups.items()
        for account in accounts
    ]


def _counted(round_trips, records) -> int:
    connection.get_connection()  # opened (and counted from) before the batch
    before = round_trips[0]
    assert rebill_batch.process(records, now=FEB_28) == {"batchItemFailures": []}
    return round_trips[0] - before


def test_a_batch_makes_the_same_round_trips_per_tenant_group_whatever_the_group_s_size(
    make_tenant, gateway, round_trips
):
    tenants = [make_tenant() for _ in range(4)]
    accounts = {}
    for tenant, size in zip(tenants, (1, 2, 12, 30), strict=True):
        plan = billing.plan(tenant)
        accounts[tenant] = [billing.subscribed_account(tenant, plan, ANCHOR) for _ in range(size)]
        for account in accounts[tenant]:
            billing.usage(tenant, account, ANCHOR + timedelta(days=2), 300, f"u-{account}")

    small = _counted(round_trips, _batch({t: accounts[t] for t in tenants[:2]}))  # 3 accounts in 2 groups
    large = _counted(round_trips, _batch({t: accounts[t] for t in tenants[2:]}))  # 42 accounts in 2 groups

    assert small == large == 2 * PER_GROUP + PER_BATCH
    assert len(gateway.charges) == 45  # every account billed and charged, once
