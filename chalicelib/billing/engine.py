"""The billing engine: every billing instant of every subscription goes through here, once.

Top to bottom, one flow for a subscription's first period, its renewals, its final
invoice and a batch of a hundred renewals alike (a single account is a batch of one):

1. load the state under the accounts' row locks (``billing_state``: one call that locks in
   id order, then reads each account's subscription, the usage of the period its renewal
   closes and its pending invoice items; the first and final bills lock their account
   before they write);
2. compute what is billed (``periods``: pure functions);
3. write it (``invoicing.issue``: the one writer, one statement);
4. after commit, collect it (``collection.settle_many``: one settler per attempt, the
   successes recorded in one statement).

A round of renewals is therefore three statements of its own (load, write, record) in two
transactions, whatever its size, and three more when it announces lifecycle changes (their
audit rows, the subscriptions their events carry, the events).

A renewal is due when the account's ``next_billing_at`` has come and is not earlier
than the period its message names; the lock and the advanced ``next_billing_at``
make a duplicate, a second run or a redelivery find nothing due, and the ledger's
one charge per account and boundary backs that up. A subscription set to cancel at
period end gets its final invoice (the last period's metered usage, no new fee) at
that boundary instead of a renewal, then ends.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from chalicelib import audit, encoding, outbox
from chalicelib.billing import accounts, changes, collection, invoicing, periods, subscription_views
from chalicelib.config import get_settings
from chalicelib.db import transaction
from chalicelib.db.queries import load
from chalicelib.observability import emit_metric

Q = load("engine")
# What an account's renewal came to. Recorded outcomes: succeeded (paid or nothing to
# pay), invoiced (in dunning: its retry collects), declined, inactive, canceled (the
# final invoice was issued and the subscription ended); nothing written: not_due,
# no_subscription; payment unresolved: timeout, in_progress, unsettled (an earlier payment
# is still pending: settle it first, then bill).
BILLED = ("succeeded", "invoiced", "declined", "inactive", "canceled")


@dataclass(frozen=True)
class Renewal:
    outcome: str
    next_billing_at: datetime | None = None  # after this renewal, when it was billed and goes on


def renew(tenant_id: str, due: dict[str, datetime], now: datetime) -> dict[str, Renewal]:
    """Bill each account's due renewal (``due``: account id -> the period start its message names),
    then keep billing accounts still overdue (a scheduler outage), up to REBILL_CATCH_UP_PERIODS each."""
    results = bill_due(tenant_id, due, now)
    for _ in range(get_settings().rebill_catch_up_periods - 1):
        behind = {
            account_id: result.next_billing_at
            for account_id, result in results.items()
            if result.outcome in ("succeeded", "invoiced") and result.next_billing_at and result.next_billing_at <= now
        }
        if not behind:
            break
        results.update(bill_due(tenant_id, behind, now))
    return results


def bill_due(tenant_id: str, due: dict[str, datetime], now: datetime) -> dict[str, Renewal]:
    """One round: every due account's bill in one transaction, then their payments."""
    with transaction(tenant_id=tenant_id) as tx:
        rows = _states(tx, due)
        results = {account_id: Renewal("not_due") for account_id in due}
        # A payment still pending (a timeout, a crash) is settled first, message by message
        # (rebill.handle), whether or not a period is due.
        results.update({row["account_key"]: Renewal("unsettled") for row in rows if row["unsettled"]})
        live = [row for row in rows if not row["unsettled"] and _is_due(row, due[row["account_key"]], now)]
        orphans = sorted(row["account_key"] for row in live if row["id"] is None)
        if orphans:
            tx.run(Q["stop_billing"], ids=encoding.dumps(orphans))
            results.update({account_id: Renewal("no_subscription") for account_id in orphans})
        live = [row for row in live if row["id"] is not None]
        bills = _bills(live)
        audited, events = _announcements(bills)
        # Nothing to announce (the usual round): the write is the last statement and takes the COMMIT.
        last = not audited
        issued = invoicing.issue(tx, tenant_id, bills, settle_now=True, pending=_pending(rows, live), commit=last)
        _announce(tx, audited, events)
    settled = collection.settle_many(tenant_id, [i.intent for i in issued.values() if i.intent], now, claimed=True)
    for account_id, item in issued.items():
        results[account_id] = _result(item, settled)
        if results[account_id].outcome not in BILLED:
            emit_metric("rebill_failures", 1, TenantId=tenant_id)
    return results


def bill_first_period(tx, tenant_id: str, subscription_id: str) -> invoicing.Issued | None:
    """The new subscription's first invoice (its plan price, in advance), in the caller's transaction.

    Issued even when the subscription was canceled before this ran: the first period was
    owed when it was created, so what is billed does not depend on when the event arrived.
    Nothing for a subscription that started with a trial, one whose first invoice exists
    (a change bills it first, on the terms it started with), or an account billing has
    stopped for (INACTIVE).
    """
    state = invoicing.subscription_state(tx, subscription_id)
    if state is None or state["first_invoiced"]:
        return None
    account = accounts.find_locked(tx, str(state["account_id"]))
    if account is None or account["status"] == "INACTIVE":
        return None
    # Read again under the account's lock: its discounts (a once discount another invoice may have just
    # used) and whether a concurrent consumer issued the first invoice meanwhile.
    state = invoicing.subscription_state(tx, subscription_id)
    if state["first_invoiced"]:
        return None
    bill = periods.first(periods.Subscription.of(state), account["status"])
    return invoicing.issue(tx, tenant_id, [bill])[bill.account_id] if bill else None


Compute = Callable[[periods.Subscription, str, dict], periods.Bill]


def change(tx, tenant_id: str, subscription_id: str, at: datetime, compute: Compute, *, ending_now=False):
    """Bill a change to a live subscription at ``at``, in the caller's transaction: ``compute``
    (``changes``, ``periods.final``) gets the subscription, its account's status and the metered
    usage of its period so far, and returns the bill; the one writer writes it.

    The account is locked first, the order every billing path takes. The payment a bill
    opens is collected when the change's event reaches the generate-invoice consumer, or
    by the daily settle.
    """
    account_id = str(invoicing.subscription_state(tx, subscription_id)["account_id"])
    account = accounts.find_locked(tx, account_id)
    sub = periods.Subscription.of(invoicing.subscription_state(tx, subscription_id))
    window = periods.usage_window(sub, at, ending_now=ending_now)
    usage = invoicing.usage_totals(tx, [(sub.account_id, *window, sub.usage_prices)])[sub.account_id]
    bill = compute(sub, account["status"], usage)
    return invoicing.issue(tx, tenant_id, [bill])[bill.account_id]


def end_now(tx, tenant_id: str, subscription_id: str, now: datetime, *, prorate: bool = False) -> invoicing.Issued:
    """End a live subscription now: its final invoice for the usage since its period began and,
    with ``prorate``, a credit for the flat fee's unused time."""

    def final(sub, status, usage):
        credit = changes.unused(sub, now) if prorate else ()
        until = periods.usage_window(sub, now, ending_now=True)[1]
        return periods.final(sub, status, now, usage, credit=credit, usage_until=until)

    return change(tx, tenant_id, subscription_id, now, final, ending_now=True)


def preview(tenant_id: str, due: dict[str, datetime], now: datetime) -> list[periods.Bill]:
    """The bills a round would write, computed exactly as ``bill_due`` computes them (held for the grace
    period, with the pending invoice items, discounted and taxed: ``invoicing.prepare``); writes nothing."""
    with transaction(tenant_id=tenant_id) as tx:
        rows = _states(tx, due)
        live = [row for row in rows if row["id"] is not None and _is_due(row, due[row["account_key"]], now)]
        return invoicing.prepare(_bills(live), _pending(rows, live))


def upcoming(tx, account_id: str) -> periods.Bill | None:
    """The account's next invoice as the daily round would issue it at its next billing instant, on the
    usage recorded so far, in the caller's transaction; writes nothing. None when billing has stopped
    for it (no live subscription, INACTIVE, nothing due ever again)."""
    rows = _states(tx, {account_id: None})
    # Due as the round sees it (``_is_due``), at the instant it is next billed.
    live = [
        row for row in rows if row["id"] is not None and _is_due(row, row["next_billing_at"], row["next_billing_at"])
    ]
    return invoicing.prepare(_bills(live), _pending(rows, live))[0] if live else None


# The instants of a state row: read from its JSON as datetimes.
_STAMPS = (
    "next_billing_at",
    "billing_anchor",
    "current_period_start",
    "current_period_end",
    "trial_end",
    "paused_at",
    "resumes_at",
)


def _states(tx, due: dict[str, datetime]) -> list[dict]:
    """The due accounts' state (``billing_state``: locked, one JSON object each), in account id order."""
    rows = []
    for key, state in tx.run(Q["billing_state"], ids=encoding.dumps(sorted(due))):
        for name in _STAMPS:
            if state[name] is not None:
                state[name] = datetime.fromisoformat(state[name])
        rows.append({**state, "account_key": key})
    return rows


def _is_due(row: dict, named: datetime, now: datetime) -> bool:
    next_at = row["next_billing_at"]
    return row["account_status"] != "INACTIVE" and next_at is not None and named <= next_at <= now


def _bills(rows: list[dict]) -> list[periods.Bill]:
    """Each due subscription's bill at its boundary, from its state row (the metered usage of the period
    it closes was read with it: ``periods.usage_window``, from the period's start to the boundary)."""
    bills = []
    for row in rows:
        sub = periods.Subscription.of(row)
        status, boundary, totals = row["account_status"], row["next_billing_at"], row["usage"] or []
        if sub.status == "paused":  # a scheduled resume
            bills.append(changes.resume(sub, boundary))
        elif sub.cancel_at_period_end:
            bills.append(periods.final(sub, status, boundary, totals))
        else:
            bills.append(periods.renewal(sub, status, boundary, totals))
    return bills


def _pending(rows: list[dict], live: list[dict]) -> invoicing.Pending:
    """What the writer adds to the round's bills, read with their state: the tenant's grace hours and the
    pending invoice items of the accounts billed."""
    items = {
        row["account_key"]: (row["account_status"], tuple(invoicing.item_line(item) for item in row["items"]))
        for row in live
        if row["items"]
    }
    return invoicing.Pending(rows[0]["grace_hours"] if rows else 0, items)


def _announcements(bills: list[periods.Bill]) -> tuple[list, list]:
    """The audit rows, and the events, of what a round changed besides billing: a subscription that
    ended, a scheduled resume, a trial's end, a scheduled change applied."""
    audited, events = [], []
    for bill in bills:
        sub = bill.subscription
        if bill.ends:
            audited.append(("subscription.ended", "subscription", sub.id, {}))
            continue
        if sub.status == "paused":
            event_type, details = "subscription.resumed", {"resumed_at": bill.boundary}
        elif sub.trialing:
            event_type, details = "subscription.updated", {"changes": [{"trial_ended": bill.boundary}]}
        elif sub.pending_change:
            event_type, details = "subscription.updated", {"changes": [{"pending_change_applied": bill.boundary}]}
        else:
            continue
        audited.append((event_type, "subscription", sub.id, details))
        fields = {"subscriptionId": sub.id, "accountId": sub.account_id, "status": bill.then.status}
        events.append((event_type, {**fields, "details": details, "timestamp": bill.boundary}))
    return audited, events


def _announce(tx, audited: list, events: list) -> None:
    """The round's announcements written: one statement each, and one that reads the subscriptions the
    events carry (none when nothing changed)."""
    audit.record_many(tx, "system:rebill", audited)
    # Each event carries its subscription as the round left it, all read in one statement.
    objects = subscription_views.get_many(tx, [fields["subscriptionId"] for _type, fields in events])
    outbox.add_many(tx, [(kind, {**fields, "object": objects[fields["subscriptionId"]]}) for kind, fields in events])


def _result(item: invoicing.Issued, settled: dict[str, str]) -> Renewal:
    bill = item.bill
    next_at = bill.then.next_billing_at if bill.then else None
    if item.intent is not None:
        outcome = settled[item.intent.attempt_id]
        if bill.ends and outcome in BILLED:
            outcome = "canceled"
        return Renewal(outcome, next_at)
    if bill.ends:
        return Renewal("canceled")
    if item.invoice_id is None and bill.lines:
        return Renewal("not_due")  # already invoiced: a retry that found the work done
    # Nothing to pay (paid on issue), or an account in dunning whose retry collects it.
    return Renewal("invoiced" if item.amount_due else "succeeded", next_at)
