"""Property: whatever the schedule of duplicates, concurrent runs, crashes and payment
timeouts, every due account ends with exactly one charge for its period, its balance
is the sum of its entries, the gateway charged it at most once, and nobody is skipped.

It runs against the mock gateway and against Stripe (the official SDK and the local
stand-in), where the gateway's own webhooks, delivered at any point, replayed and in
any order, race the settlers; there the charges counted are Stripe's own records."""

import random
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.billing import collection, invoicing, payments, rebill, rebill_batch
from chalicelib.db import transaction
from tests import billing, gateway

ANCHOR = datetime(2027, 1, 31, 9, tzinfo=UTC)
FEB_28 = datetime(2027, 2, 28, 9, tzinfo=UTC)
MAR_31 = datetime(2027, 3, 31, 9, tzinfo=UTC)
NOW = FEB_28 + timedelta(hours=1)


class Crash(Exception):
    """The process dies here: the transaction never commits."""


def _crashing(module, name, remaining: list):
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        if remaining and remaining[0] == f"{name}:before":
            remaining.pop(0)
            raise Crash(name)
        result = real(*args, **kwargs)
        if remaining and remaining[0] == name:
            remaining.pop(0)
            raise Crash(name)
        return result

    return real, wrapper


def _schedule(tenant_id, queue):
    for page in rebill.due(NOW, page_size=3):
        queue += [rebill.json.dumps(m) for m in page if m["tenantId"] == tenant_id]


def _deliver_batch(queue: list, start: int, size: int, lose_acks: bool) -> None:
    """The batch path (rebill_processor): acknowledged records leave the queue unless the ack is lost."""
    batch = queue[start : start + size]
    records = [{"messageId": str(i), "body": body} for i, body in enumerate(batch)]
    try:
        failed = {int(f["itemIdentifier"]) for f in rebill_batch.process(records, now=NOW)["batchItemFailures"]}
    except Crash:
        return  # the invocation died: every record comes back
    if not lose_acks:
        for i in sorted(set(range(len(batch))) - failed, reverse=True):
            queue.pop(start + i)


def _deliver(message) -> bool:
    """True when the message was acknowledged (processed or a no-op)."""
    try:
        rebill.handle(message, now=NOW)
        return True
    except (Crash, payments.GatewayTimeout, collection.PaymentUnresolved):
        return False


steps = st.lists(
    st.one_of(
        st.tuples(st.just("schedule")),
        st.tuples(st.just("concurrent_schedule")),
        st.tuples(st.just("deliver"), st.integers(0, 50), st.booleans()),
        st.tuples(st.just("concurrent_deliver"), st.integers(0, 50)),
        st.tuples(st.just("batch"), st.integers(0, 50), st.integers(1, 12), st.booleans()),
        st.tuples(st.just("webhooks"), st.integers(1, 3), st.integers(0, 2**16)),
        st.tuples(
            st.just("crash"),
            st.sampled_from(["issue", "_write", "settle_many", "_record:before"]),
            st.integers(0, 50),
        ),
    ),
    max_size=25,
)


@pytest.mark.parametrize("gateway_kind", ["mock", "stripe"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    accounts=st.integers(1, 4),
    outcomes=st.lists(
        st.lists(st.sampled_from(["succeed", "timeout", "decline", "requires_action"]), max_size=3),
        min_size=4,
        max_size=4,
    ),
    plan=steps,
)
def test_every_due_account_is_charged_exactly_once_per_period(
    database_url, make_tenant, request, gateway_kind, accounts, outcomes, plan
):
    import os

    from chalicelib.config import reset_settings

    previous = os.environ.get("SQS_REPORT_BATCH_ITEM_FAILURES")
    os.environ["SQS_REPORT_BATCH_ITEM_FAILURES"] = "true"
    reset_settings()
    tenant = make_tenant()
    plan_id = billing.plan(tenant, usage_prices=[])
    account_ids = [billing.subscribed_account(tenant, plan_id, ANCHOR) for _ in range(accounts)]
    if gateway_kind == "stripe":
        payments.set_gateway(None)
        charged_by = gateway.OnStandin(request.getfixturevalue("stripe"), tenant, account_ids)
    else:
        charged_by = payments.MockGateway()
        payments.set_gateway(charged_by)
    for account, script in zip(account_ids, outcomes, strict=False):
        charged_by.script(account, script)
    queue: list[str] = []
    crashes: list[str] = []
    patched = {}
    # A crash after the gateway charged and before the outcome is written (_record:before)
    # leaves the attempt claimed: the claim lapses after its lease, then anyone settles it.
    os.environ["PAYMENT_CLAIM_LEASE_S"] = "1"
    reset_settings()
    # _write: the invoices, their charges and payment attempts are written (one statement), not yet committed.
    targets = ((invoicing, "issue"), (invoicing, "_write"), (collection, "settle_many"), (collection, "_record"))
    for module, name in targets:
        patched[(module, name)], wrapper = _crashing(module, name, crashes)
        setattr(module, name, wrapper)
    try:
        for step in plan:
            if step[0] == "schedule":
                _schedule(tenant, queue)
            elif step[0] == "concurrent_schedule":
                billing.in_threads(lambda: _schedule(tenant, queue), lambda: _schedule(tenant, queue))
            elif queue and step[0] == "deliver":
                index = step[1] % len(queue)
                if _deliver(queue[index]) and not step[2]:  # step[2]: the ack is lost, SQS redelivers
                    queue.pop(index)
            elif queue and step[0] == "concurrent_deliver":
                message = queue[step[1] % len(queue)]
                billing.in_threads(lambda m=message: _deliver(m), lambda m=message: _deliver(m))
            elif queue and step[0] == "batch":
                _deliver_batch(queue, step[1] % len(queue), step[2], step[3])
            elif step[0] == "webhooks" and gateway_kind == "stripe":
                charged_by.replay_webhooks(times=step[1], order=random.Random(step[2]))
            elif queue and step[0] == "crash":
                crashes[:] = [step[1]]
                if step[2] % 2:  # through the batch path, or a message on its own
                    _deliver_batch(queue, step[2] % len(queue), 10, False)
                else:
                    _deliver(queue[step[2] % len(queue)])
                crashes.clear()
        # The faults stop; the queue and the next daily runs deliver everything until quiet.
        if gateway_kind == "stripe":
            charged_by.replay_webhooks(times=1, order=random.Random(0))
        for _ in range(10):
            _schedule(tenant, queue)
            while queue:
                if _deliver(queue[0]):
                    queue.pop(0)
                else:
                    time.sleep(0.05)  # a lapsed claim or a timeout: SQS would redeliver later
    finally:
        for (module, name), real in patched.items():
            setattr(module, name, real)
        payments.set_gateway(None)
        os.environ.pop("PAYMENT_CLAIM_LEASE_S", None)
        if previous is None:
            os.environ.pop("SQS_REPORT_BATCH_ITEM_FAILURES", None)
        else:
            os.environ["SQS_REPORT_BATCH_ITEM_FAILURES"] = previous
        reset_settings()

    for account in account_ids:
        state = billing.state(tenant, account)
        assert state["charges_by_period"] == [FEB_28], "one charge for the period, none skipped"
        assert state["next_billing_at"] == MAR_31
        with transaction(tenant_id=tenant) as tx:
            stored_balance = tx.scalar(
                "SELECT CAST(COALESCE(sum(amount), 0) AS bigint) FROM ledger_entries WHERE account_id = :a", a=account
            )
        assert stored_balance == state["balance"] == sum(amount for _kind, amount in state["entries"])
        charged = [c for c in charged_by.charges if c[1] == account]
        payments_posted = [amount for kind, amount in state["entries"] if kind == "payment"]
        assert len(charged) <= 1, "the gateway charged this period twice"
        assert [-p for p in payments_posted] == [c[2] for c in charged], "ledger payments match real charges"
        assert billing.pending_attempts(tenant, account) == 0, "no payment left unsettled"
