"""The daily run's fan-out: chains of bounded selection steps on the rebill queue (moto's SQS, the real
database). Every due account is sent exactly once when the chains finish; a step that dies is
redelivered and resumes where its chain stood; a duplicate step sends nothing; no invocation
selects more than its budget; and the accounts sent are billed once each."""

import json
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import boto3
import pytest

from chalicelib import aws as clients
from chalicelib import events
from chalicelib.billing import payments, rebill, rebill_batch
from chalicelib.db import reset_connection
from tests import billing

ANCHOR = datetime(2027, 1, 31, 9, tzinfo=UTC)
FEB_28 = datetime(2027, 2, 28, 9, tzinfo=UTC)
AS_OF = datetime(2027, 3, 1, 6, tzinfo=UTC)  # the daily run after FEB_28: dunning retries fall at 00:00


class Queue:
    """The rebill queue in moto: what was sent, taken off as SQS would hand it to a consumer."""

    def __init__(self):
        self.sqs = boto3.client("sqs")
        self.url = self.sqs.create_queue(QueueName="billing-rebill")["QueueUrl"]

    def take(self) -> list[dict]:
        taken = []
        while batch := self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10).get("Messages", []):
            for message in batch:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
            taken += [json.loads(message["Body"]) for message in batch]
        return taken

    def put(self, message: dict) -> None:
        self.sqs.send_message(QueueUrl=self.url, MessageBody=json.dumps(message))


@pytest.fixture
def queue(aws, monkeypatch):
    from chalicelib.config import reset_settings

    monkeypatch.setenv("SQS_REPORT_BATCH_ITEM_FAILURES", "true")
    reset_settings()
    clients.reset_clients()
    yield Queue()
    clients.reset_clients()
    reset_settings()


def _due(tenant: str, count: int) -> set[str]:
    plan = billing.plan(tenant, usage_prices=[])
    return {billing.subscribed_account(tenant, plan, ANCHOR) for _ in range(count)}


def _drain(queue: Queue, page_size: int) -> list[dict]:
    """Run the queue's step messages (each with ``page_size``) until none is left; the account messages."""
    sent = []
    while True:
        taken = queue.take()
        sent += [m for m in taken if m["kind"] != "select"]
        steps = [m for m in taken if m["kind"] == "select"]
        if not steps:
            return sent
        for message in steps:
            rebill.step(message, queue.url, page_size)


def _bill(sent: list[dict]) -> None:
    for start in range(0, len(sent), 10):
        records = [{"messageId": str(i), "body": json.dumps(m)} for i, m in enumerate(sent[start : start + 10])]
        assert rebill_batch.process(records, now=AS_OF) == {"batchItemFailures": []}


def test_a_run_sends_every_due_account_once_and_its_chains_finish_when_all_are_sent(make_tenant, gateway, queue):
    renewals = set()
    for name in ("A", "B", "C"):
        tenant = make_tenant(name)
        renewals |= _due(tenant, 7)
        billing.subscribed_account(tenant, billing.plan(tenant, code="later"), FEB_28)  # due on Mar 31
    tenant = make_tenant("D")
    declined, unsettled = _due(tenant, 2)
    gateway.script(declined, ["decline"])
    gateway.script(unsettled, ["timeout"])
    assert rebill.renew(tenant, declined, FEB_28, FEB_28) == "declined"  # its retry falls on Mar 1, 00:00
    with pytest.raises(payments.GatewayTimeout):
        rebill.renew(tenant, unsettled, FEB_28, FEB_28)  # its payment stays pending

    run = rebill.start(AS_OF, queue.url, partitions=4)
    assert (run["chains"], run["stalled"]) == (6, 0)
    first = queue.take()
    assert sorted((m["kind"], m["chain"], m["step"]) for m in first) == [("select", c, 0) for c in range(6)]
    for message in first:
        queue.put(message)
    sent = _drain(queue, page_size=2)

    expected = {(a, "renewal") for a in renewals} | {(declined, "retry"), (unsettled, "settle")}
    assert Counter((m["accountId"], m["kind"]) for m in sent) == Counter(expected)
    assert {m["asOf"] for m in sent} == {rebill._iso(AS_OF)}
    progress = rebill.progress_of(run["run"])
    assert all(chain["done"] for chain in progress)
    assert [chain["source"] for chain in progress] == ["renewal"] * 4 + ["retry", "settle"]
    assert sum(chain["enqueued"] for chain in progress) == len(expected)
    for chain in progress[:4]:  # each renewal chain sent its own buckets' accounts, in pages of two
        first_bucket = chain["chain"] * 64
        mine = [a for a in renewals if first_bucket <= uuid.UUID(a).bytes[15] < first_bucket + 64]
        assert chain["enqueued"] == len(mine) and chain["step"] == len(mine) // 2 + 1


def test_a_step_that_dies_after_sending_is_redelivered_and_resumes_without_a_gap_or_a_second_charge(
    make_tenant, gateway, queue, monkeypatch
):
    tenant = make_tenant()
    due = _due(tenant, 12)
    sqs = clients.client("sqs")
    real_send = sqs.send_message_batch
    crashes = []

    def send_then_die(**kwargs):
        response = real_send(**kwargs)
        if not crashes and '"select"' in kwargs["Entries"][0]["MessageBody"]:
            crashes.append(kwargs["Entries"][0]["MessageBody"])
            raise ConnectionResetError("the invocation dies after the next step's message went out")
        return response

    rebill.start(AS_OF, queue.url, partitions=1)
    monkeypatch.setattr(sqs, "send_message_batch", send_then_die)
    sent = []
    while steps := [m for m in _taken(queue, sent) if m["kind"] == "select"]:
        for message in steps:
            try:
                rebill.step(message, queue.url, page_size=5)
            except ConnectionResetError:
                queue.put(message)  # not acknowledged: SQS delivers it again

    assert len(crashes) == 1 and json.loads(crashes[0])["step"] == 1
    counts = Counter(m["accountId"] for m in sent)
    assert set(counts) == due  # no gap
    assert sorted(counts.values()) == [1] * 7 + [2] * 5  # the dead step's one page, sent again
    _bill(sent)
    for account in due:
        assert billing.state(tenant, account)["charges_by_period"] == [FEB_28]
    assert len(gateway.charges) == 12


def _taken(queue: Queue, sent: list) -> list[dict]:
    taken = queue.take()
    sent += [m for m in taken if m["kind"] != "select"]
    return taken


def test_a_step_whose_page_sqs_refuses_fails_and_its_redelivery_sends_the_page(make_tenant, queue, monkeypatch):
    due = _due(make_tenant(), 3)
    run = rebill.start(AS_OF, queue.url, partitions=1)
    step = next(m for m in queue.take() if m["chain"] == 0)
    sqs = clients.client("sqs")
    real_send = sqs.send_message_batch

    def refuse(**kwargs):
        return {"Successful": [], "Failed": [{"Id": e["Id"], "SenderFault": False} for e in kwargs["Entries"]]}

    monkeypatch.setattr(sqs, "send_message_batch", refuse)
    with pytest.raises(rebill.EnqueueFailed):
        rebill.step(step, queue.url)
    assert rebill.progress_of(run["run"])[0] == {
        "chain": 0,
        "source": "renewal",
        "step": 0,
        "enqueued": 0,
        "done": False,
    }
    monkeypatch.setattr(sqs, "send_message_batch", real_send)

    assert rebill.step(step, queue.url) == rebill.Step(sent=3, finished=True)
    assert {m["accountId"] for m in queue.take()} == due


def test_a_redelivered_or_duplicate_step_sends_nothing(make_tenant, queue):
    tenant = make_tenant()
    _due(tenant, 6)
    run = rebill.start(AS_OF, queue.url, partitions=1)
    step = next(m for m in queue.take() if m["chain"] == 0)

    assert rebill.step(step, queue.url, page_size=2) == rebill.Step(sent=2, finished=False)
    assert rebill.step(step, queue.url, page_size=2) is None  # redelivered after its commit
    assert rebill.handle(json.dumps(step)) is False  # the same, through the one-message path
    [following] = [m for m in queue.take() if m["kind"] == "select"]
    outcomes = []
    billing.in_threads(*[lambda: outcomes.append(rebill.step(following, queue.url, page_size=2))] * 2)

    assert sorted(outcomes, key=str) == [None, rebill.Step(sent=2, finished=False)]  # one of two copies at once
    taken = queue.take()
    assert Counter(m["kind"] for m in taken) == {"renewal": 2, "select": 1}
    assert rebill.progress_of(run["run"])[0]["step"] == 2


def test_a_next_step_taken_before_the_step_that_sent_it_commits_waits_for_it_and_goes_on(
    make_tenant, queue, monkeypatch
):
    due = _due(make_tenant(), 4)
    rebill.start(AS_OF, queue.url, partitions=1)
    first = next(m for m in queue.take() if m["chain"] == 0)
    sqs = clients.client("sqs")
    real_send = sqs.send_message_batch
    early = []

    def take_next_step(message):
        try:
            early.append(rebill.step(message, queue.url, page_size=2))
        finally:
            reset_connection()

    def send_and_race(**kwargs):
        response = real_send(**kwargs)
        body = json.loads(kwargs["Entries"][0]["MessageBody"])
        if body["kind"] == "select" and not early:  # another processor takes the next step at once
            early.append(threading.Thread(target=take_next_step, args=(body,)))
            early[0].start()
            time.sleep(0.5)  # it reaches the chain's row while this step has not committed
        return response

    monkeypatch.setattr(sqs, "send_message_batch", send_and_race)
    assert rebill.step(first, queue.url, page_size=2) == rebill.Step(sent=2, finished=False)
    early[0].join()

    assert early[1] == rebill.Step(sent=2, finished=False)  # not dropped as stale: the chain goes on
    assert {m["accountId"] for m in queue.take() if m["kind"] != "select"} == due


def test_an_invocation_selects_at_most_its_budget_however_many_steps_its_batch_holds(
    make_tenant, gateway, queue, monkeypatch
):
    tenant = make_tenant()
    due = _due(tenant, 20)
    monkeypatch.setattr(rebill, "STEP_BUDGET", 4)
    rebill.start(AS_OF, queue.url, partitions=4)
    pending, sent, invocations = queue.take(), [], 0
    while pending:
        batch, pending = pending[:10], pending[10:]
        records = [{"messageId": str(i), "body": json.dumps(m)} for i, m in enumerate(batch)]
        assert rebill_batch.process(records, now=AS_OF) == {"batchItemFailures": []}  # bills and selects
        out = queue.take()
        steps = sum(m["kind"] == "select" for m in batch)  # more steps than the budget: one account each
        assert len([m for m in out if m["kind"] != "select"]) <= max(4, steps)
        sent += [m for m in out if m["kind"] != "select"]
        pending += out
        invocations += 1

    assert Counter(m["accountId"] for m in sent) == Counter(due)
    assert invocations >= 20 // 4
    assert all(billing.state(tenant, a)["charges_by_period"] == [FEB_28] for a in due)
    assert len(gateway.charges) == 20


def test_the_next_run_reports_and_forgets_chains_that_stopped_short(make_tenant, queue, owner_conn):
    _due(make_tenant(), 2)
    first = rebill.start(AS_OF, queue.url, partitions=2)
    lost = queue.take()  # the first run's step messages go to the dead-letter queue
    owner_conn.run("UPDATE rebill_chains SET updated_at = now() - interval '2 hours'")

    second = rebill.start(AS_OF, queue.url, partitions=2)

    assert second["stalled"] == 4
    assert rebill.progress_of(first["run"]) == []
    assert [rebill.step(m, queue.url) for m in lost] == [None] * 4  # redriven by hand: nothing to do
    assert len(rebill.progress_of(second["run"])) == 4


def test_a_schedule_whose_first_steps_cannot_be_sent_opens_no_run(make_tenant, queue, owner_conn, monkeypatch):
    _due(make_tenant(), 2)
    sqs = clients.client("sqs")

    def unreachable(**kwargs):
        raise ConnectionError("SQS is unreachable")

    monkeypatch.setattr(sqs, "send_message_batch", unreachable)
    with pytest.raises(ConnectionError):
        rebill.start(AS_OF, queue.url)
    assert owner_conn.run("SELECT count(*) FROM rebill_chains") == [[0]]


def test_the_operators_enqueue_walks_the_same_chains_in_process_and_sends_every_due_account_once(make_tenant, queue):
    due = _due(make_tenant("A"), 5) | _due(make_tenant("B"), 4)
    progress = []

    assert rebill.enqueue_due(AS_OF, queue.url, progress.append, partitions=3) == 9

    taken = queue.take()
    assert Counter(m["accountId"] for m in taken) == Counter(due)  # and no step message: the chains ran here
    assert progress[-1] == 9


def test_a_selection_step_message_is_parsed_and_a_malformed_one_is_poison():
    run = str(uuid.uuid4())
    good = {"kind": "select", "runId": run, "chain": 3, "step": 0, "extra": "ignored"}
    assert events.parse_rebill(json.dumps(good)) == {"kind": "select", "runId": run, "chain": 3, "step": 0}
    for bad in (
        {"kind": "select", "runId": "nope", "chain": 0, "step": 0},
        {"kind": "select", "runId": run, "chain": True, "step": 0},
        {"kind": "select", "runId": run, "chain": 0, "step": -1},
        {"kind": "select", "runId": run, "chain": 0, "step": 1.0},
        {"kind": "select", "runId": run, "chain": 0},
    ):
        with pytest.raises(events.PoisonMessage):
            events.parse_rebill(json.dumps(bad))
