"""Property: whatever a subscription goes through over three years of periods (maybe a trial
first, then up to 6 changes: upgrades, downgrades, seat changes, interval changes, with any
proration behavior or scheduled for the period end, pauses resumed by hand or by the daily run,
a cancel, at random instants), with every rebill and settle message delivered three times:

(a) what the ledger charged and credited equals the price in force, weighted by the time it was
    in force, to within one minor unit per proration line (with ``proration_behavior: none``
    the price in force for the rest of that period is the one paid for it: no money moves);
(b) no flat-fee period is billed twice and none is skipped: each period's fee starts where the
    last ended, later by exactly the time paused, or earlier only where a new interval cut it;
(c) the books balance: balance = sum(ledger) = what open invoices ask for less the unused
    credit (negative invoices less the credit invoices used);
(d) a second and third delivery of any message changes nothing.

The expectation is computed as a continuous integral (the price per second of the period's
paid time, times the seconds in force), independently of how the engine bills it (advance
fees, credits and charges for unused and remaining time, rounded per line).
"""

import json
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chalicelib import errors
from chalicelib.billing import lifecycle, rebill, subscriptions
from chalicelib.db import transaction
from tests import billing

T0 = datetime(2027, 1, 31, 9, tzinfo=UTC)  # a Jan 31 anchor: month ends clamp and recover
END = T0 + timedelta(days=3 * 365)
SECONDS = 3 * 365 * 86_400
BEHAVIORS = st.sampled_from(["create_prorations", "always_invoice", "none"])
EFFECTIVE = st.sampled_from([None, "now", "period_end"])

ACTIONS = st.one_of(
    st.tuples(st.just("plan"), st.sampled_from(["basic", "pro"]), BEHAVIORS, EFFECTIVE),
    st.tuples(st.just("quantity"), st.integers(1, 5), BEHAVIORS, EFFECTIVE),
    st.tuples(st.just("interval"), st.sampled_from(["monthly", "yearly"]), BEHAVIORS, EFFECTIVE),
    st.tuples(st.just("pause"), st.integers(3_600, 90 * 86_400), st.booleans()),  # resumed by the daily run?
    st.tuples(st.just("cancel"), st.booleans()),
)


@pytest.fixture
def lifecycle_tenant(make_tenant):
    tenant_id = make_tenant()
    for code, monthly in (("basic", 900), ("pro", 4900)):
        billing.priced_plan(tenant_id, code, monthly)
        billing.priced_plan(tenant_id, code, monthly * 10, interval="year")
    return tenant_id


# What the state may refuse along the way: a second cancel at period end, a pause during a trial,
# a change scheduled on a subscription set to cancel.
REFUSALS = {"already_canceling", "subscription_trialing", "cancel_scheduled"}


class Life:
    """One subscription driven through time, with the continuous expectation beside it."""

    def __init__(self, tenant: str, trial_days: int | None):
        self.tenant = tenant
        self.account, self.subscription = billing.subscribe(tenant, "basic", T0, trial_days=trial_days)
        self.expected = Fraction(0)
        self.since = T0  # start of the segment in force (None while paused or ended)
        self.pauses = []

    def state(self) -> dict:
        with transaction(tenant_id=self.tenant) as tx:
            return tx.one(
                "SELECT s.status, COALESCE(s.current_period_paid, p.amount * s.quantity) AS fee,"
                " s.current_period_start, s.current_period_end,"
                " s.current_period_paused_s, a.next_billing_at FROM subscriptions s"
                " JOIN plans p ON p.id = s.plan_id JOIN accounts a ON a.id = s.account_id WHERE s.id = :s",
                s=self.subscription,
            )

    def accrue(self, until: datetime) -> None:
        """The price in force from ``since`` to ``until``, per second of the period's paid time."""
        state = self.state()
        if self.since is not None and state["status"] not in ("trialing", "paused", "canceled"):
            paid = state["current_period_end"] - state["current_period_start"]
            paid_s = paid.total_seconds() - state["current_period_paused_s"]
            self.expected += Fraction(state["fee"]) * Fraction(int((until - self.since).total_seconds()), int(paid_s))
        self.since = until

    def deliver(self, kind: str, at: datetime) -> None:
        """A rebill message delivered three times: the second and third change nothing (d)."""
        body = json.dumps({"tenantId": self.tenant, "accountId": self.account, "kind": kind, "dueAt": rebill._iso(at)})
        rebill.handle(body, now=at)
        once = billing.snapshot_books(self.tenant, self.account)
        rebill.handle(body, now=at)
        rebill.handle(body, now=at)
        assert billing.snapshot_books(self.tenant, self.account) == once

    def run_until(self, t: datetime) -> None:
        """The daily run: every renewal due up to ``t``, at its boundary."""
        while (due := self.state()["next_billing_at"]) is not None and due <= t:
            paused = self.state()["status"] == "paused"  # a scheduled resume
            self.accrue(due)
            self.deliver("renewal", due)
            if self.state()["status"] == "canceled":
                self.since = None
            elif paused:
                self.since = due

    def act(self, t: datetime, action: tuple) -> datetime:
        """Do ``action`` at ``t``; when the subscription may next change."""
        self.run_until(t)
        if self.state()["status"] == "canceled":
            return t
        self.accrue(t)
        before = self.state()
        actor, kind = billing.actor(self.tenant), action[0]
        try:
            with transaction(tenant_id=self.tenant) as tx:
                if kind == "pause":
                    resumes_at = t + timedelta(seconds=action[1]) if action[2] else None
                    lifecycle.pause(tx, actor, lifecycle.Pause(self.subscription, resumes_at=resumes_at), now=t)
                elif kind == "cancel":
                    subscriptions.cancel(tx, actor, subscriptions.Cancel(self.subscription, action[1], True), now=t)
                else:
                    lifecycle.update(tx, actor, _update(self.subscription, action), now=t)
        except errors.UnprocessableState as refused:  # the API's 422: nothing changed
            assert refused.code in REFUSALS, refused.code
            return t
        self.deliver("settle", t)
        self.forfeit(before, t, action)
        if kind == "cancel" and not action[1]:
            self.since = None
        if kind != "pause":
            return t
        self.since = None
        resumed = t + timedelta(seconds=action[1])
        self.pauses.append((t, resumed))
        if action[2]:
            self.run_until(resumed)  # the daily run resumes it
            return resumed
        with transaction(tenant_id=self.tenant) as tx:
            lifecycle.resume(tx, actor, lifecycle.Resume(self.subscription), now=resumed)
        self.since = resumed
        return resumed

    def forfeit(self, before: dict, t: datetime, action: tuple) -> None:
        """A new interval without proration (Stripe's ``none``) starts a new period now and credits
        nothing: the old period's unused time, paid for, is the customer's loss, so it is owed too."""
        restarted = self.state()["current_period_start"] == t
        if action[0] != "interval" or action[2] != "none" or not restarted or before["status"] != "active":
            return
        paid_s = (before["current_period_end"] - before["current_period_start"]).total_seconds()
        paid_s -= before["current_period_paused_s"]
        unused_s = int((before["current_period_end"] - t).total_seconds())
        self.expected += Fraction(before["fee"]) * Fraction(unused_s, int(paid_s))

    def close(self) -> None:
        """Run to the end of the three years, then cancel now with a prorated credit: nothing prepaid is left."""
        self.run_until(END)
        if self.state()["status"] != "canceled":
            self.act(END, ("cancel", False))


def _update(subscription: str, action: tuple) -> lifecycle.Update:
    kind, value, behavior, effective = action
    field = {"plan": "plan", "quantity": "quantity", "interval": "billing_cycle"}[kind]
    return lifecycle.Update(subscription, **{field: value}, proration_behavior=behavior, effective=effective)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    trial_days=st.sampled_from([None, 14]),
    actions=st.lists(ACTIONS, max_size=6),
    offsets=st.lists(st.integers(1, SECONDS - 1), min_size=6, max_size=6, unique=True),
)
@example(  # a month's fee, then a year's invoiced now, then back to monthly without proration: forfeited
    trial_days=None,
    actions=[("interval", "yearly", "create_prorations", "now"), ("interval", "monthly", "none", None)],
    offsets=[1, 2, 3, 4, 5, 6],
)
def test_any_life_bills_the_time_weighted_price_once_with_balanced_books(
    lifecycle_tenant, gateway, trial_days, actions, offsets
):
    life = Life(lifecycle_tenant, trial_days)
    not_before = T0
    for action, offset in zip(actions, sorted(offsets), strict=False):
        at = max(T0 + timedelta(seconds=offset), not_before + timedelta(seconds=1))
        if at >= END:
            break
        not_before = life.act(at, action)
        if life.state()["status"] == "canceled":
            break
    life.close()

    lines = billing.flat_fee_lines(lifecycle_tenant, life.account)
    prorations = sum(1 for line in lines if line["kind"] == "proration")
    books = billing.books(lifecycle_tenant, life.account)
    charged = books["charged"] + billing.credits(lifecycle_tenant, life.account)
    assert abs(charged - life.expected) <= prorations + 1, (charged, float(life.expected), prorations)  # (a)
    _assert_each_period_billed_once(lines, life.pauses)  # (b)
    credit = billing.unused_credit(lifecycle_tenant, life.account)
    assert books["balance"] == books["due"] - credit  # (c)
    assert sum(c[2] for c in gateway.charges if c[1] == life.account) == books["paid"]


def _assert_each_period_billed_once(lines: list[dict], pauses: list) -> None:
    fees = sorted((line for line in lines if line["kind"] == "subscription"), key=lambda line: line["period_start"])
    for before, after in zip(fees, fees[1:], strict=False):
        if after["period_start"] < before["period_end"]:
            assert after["billing_reason"] == "subscription_update", "only a new interval cuts a period short"
            continue
        gap = after["period_start"] - before["period_end"]
        paused = sum(
            (end - start for start, end in pauses if before["period_start"] <= start < after["period_start"]),
            timedelta(0),
        )
        assert gap == paused, (before, after, pauses)
