"""What a change to a live subscription bills: pure functions to ``periods.Bill``s. No I/O.

A subscription's flat fee is paid in advance for its period, so a change part-way
through is settled by proration (Stripe's model): a *credit* for the unused time of
the old terms and a *charge* for the same time on the new ones, each its own line
with its own period, each rounded once by ``lines.prorate`` (the time in force over
the time the period was paid for, to the second). Where the lines go is the
``proration_behavior``:

- ``create_prorations`` (default): onto the subscription's next invoice, whatever its reason;
- ``always_invoice``: onto an invoice now (``subscription_update``), collected as any other;
- ``none``: nowhere; the new terms apply from now, and the rest of the period stays paid
  (and is credited later, if at all) at what was paid for it (``current_period_paid``).

A new interval (monthly -> yearly) starts a new period, and anchor, at the change: the
old period's usage is billed on its terms and the new period in advance, on an invoice
now, with the unused time credited. A change scheduled for the period end (``schedule``)
is applied by the renewal at that boundary (``periods.renewal``), with no proration.

Trials bill nothing: a change during a trial just changes the terms; ending it (or
extending it) moves the first paid period's start. Pausing stops billing; resuming
moves the period's end on by the time paused (the customer keeps the paid time it had
left), and ``keep_as_draft`` puts the paused time on a draft invoice for the tenant.
"""

from dataclasses import replace
from datetime import datetime

from chalicelib.billing import calendar, periods, usage_charges
from chalicelib.billing.lines import Line, prorate, total_of
from chalicelib.billing.periods import Bill, Subscription

PRORATION_BEHAVIORS = ("create_prorations", "always_invoice", "none")
_UPDATE = "subscription_update"


def rate(terms: dict) -> tuple[int, int]:
    """A price's flat fee per unit of time, as an exact fraction (amount, seconds), to compare two prices."""
    seconds = {"day": 86_400, "week": 604_800, "month": 2_629_746, "year": 31_556_952}[terms["interval"]]
    return terms["amount"] * terms["quantity"], seconds * terms["interval_count"]


def is_upgrade(sub: Subscription, terms: dict) -> bool:
    """The new terms cost more per unit of time (or the same: an interval change at the same rate)."""
    (new_amount, new_seconds), (old_amount, old_seconds) = rate(terms), rate(sub.terms())
    return new_amount * old_seconds >= old_amount * new_seconds


def unused(sub: Subscription, at: datetime) -> tuple[Line, ...]:
    """A credit for the flat fee's unused time from ``at`` (or from the pause) to the period's end."""
    start = sub.paused_at if sub.status == "paused" else at
    if sub.trialing or start >= sub.current_period_end:
        return ()
    amount = prorate(sub.paid_fee, sub.current_period_end - start, sub.paid_length)
    description = f"Unused time on {_terms_name(sub)} after {start:%Y-%m-%d %H:%M} UTC"
    # Per unit when the rest was paid at the current terms; else the fee it was paid at, as one.
    quantity, unit = (sub.quantity, sub.amount) if sub.paid_fee == sub.amount * sub.quantity else (1, sub.paid_fee)
    return (Line("proration", description, quantity, -unit, -amount, None, start, sub.current_period_end),)


def remaining(sub: Subscription, new: Subscription, at: datetime) -> tuple[Line, ...]:
    """A charge for the new terms over the rest of the period from ``at``, at the period's paid rate."""
    if at >= sub.current_period_end:
        return ()
    amount = prorate(new.amount * new.quantity, sub.current_period_end - at, sub.paid_length)
    description = f"Remaining time on {_terms_name(new)} after {at:%Y-%m-%d %H:%M} UTC"
    return (Line("proration", description, new.quantity, new.amount, amount, None, at, sub.current_period_end),)


def change(sub: Subscription, account_status: str, terms: dict, at: datetime, behavior: str, usage: dict) -> Bill:
    """Change the terms now. ``usage``: the metered totals since the period began (billed only when a
    new interval closes the period now)."""
    new = replace(sub, **terms, pending_change=None)
    if sub.trialing:
        return _restate(sub, at, new)
    if (new.interval, new.interval_count) != (sub.interval, sub.interval_count):
        return _new_interval(sub, account_status, new, at, behavior, usage)
    if behavior == "none":  # the rest of the period stays paid at what was paid for it
        return _restate(sub, at, replace(new, current_period_paid=sub.paid_fee))
    prorations = (*unused(sub, at), *remaining(sub, new, at))
    paid = replace(new, current_period_paid=new.amount * new.quantity)
    if behavior == "always_invoice":
        lines = (*sub.pending_prorations, *prorations)
        then = replace(paid, pending_prorations=())
        return Bill(
            sub, _UPDATE, at, at, sub.current_period_end, lines, periods.collects(account_status, lines), then=then
        )
    then = replace(paid, pending_prorations=(*sub.pending_prorations, *prorations))
    total_of((*then.pending_prorations, periods.flat_fee(then)))  # the next renewal must stay billable
    return _restate(sub, at, then)


def schedule(sub: Subscription, terms: dict | None, at: datetime) -> Bill:
    """Change the terms at the end of the current period (``None``: cancel the scheduled change)."""
    return _restate(sub, at, replace(sub, pending_change=terms))


def end_trial(sub: Subscription, account_status: str, at: datetime, usage: dict) -> Bill:
    """End the trial now: the first paid period starts at ``at``, billed as a renewal there."""
    started = replace(sub, trial_end=at, billing_anchor=at, current_period_end=at)
    return periods.renewal(started, account_status, at, usage)


def extend_trial(sub: Subscription, trial_end: datetime, at: datetime) -> Bill:
    return _restate(sub, at, replace(sub, trial_end=trial_end, billing_anchor=trial_end, current_period_end=trial_end))


def cancel_at_period_end(sub: Subscription, cancel: bool, at: datetime) -> Bill:
    """End at the period end (the renewal there issues the final invoice instead), or no longer (reactivate)."""
    return _restate(sub, at, replace(sub, cancel_at_period_end=cancel))


def pause(sub: Subscription, at: datetime, behavior: str, resumes_at: datetime | None) -> Bill:
    then = replace(sub, status="paused", paused_at=at, pause_behavior=behavior, resumes_at=resumes_at)
    return _restate(sub, at, then)


def schedule_resume(sub: Subscription, resumes_at: datetime, at: datetime) -> Bill:
    """Resume at ``resumes_at``: the account is due then, and the daily run resumes it (``resume``)."""
    return _restate(sub, at, replace(sub, resumes_at=resumes_at))


def resume(sub: Subscription, at: datetime) -> Bill:
    """Resume at ``at``: the period's end (and the anchor of the periods after it) moves on by the time
    paused, so the customer keeps the paid time it had left. ``void``: the paused time is free;
    ``keep_as_draft``: it is billed at the period's paid rate on a draft invoice (no charge, no
    payment, until the tenant finalizes it)."""
    paused = at - sub.paused_at
    end = sub.current_period_end + paused
    then = replace(
        sub,
        status="active",
        paused_at=None,
        pause_behavior=None,
        resumes_at=None,
        billing_anchor=end,
        current_period_end=end,
        current_period_paused_s=sub.current_period_paused_s + int(paused.total_seconds()),
    )
    if sub.pause_behavior != "keep_as_draft" or paused.total_seconds() < 1:
        return _restate(sub, at, then)
    amount = prorate(sub.paid_fee, paused, sub.paid_length)
    description = f"Paused time on {_terms_name(sub)}"
    line = Line("subscription", description, sub.quantity, sub.amount, amount, None, sub.paused_at, at)
    return Bill(sub, _UPDATE, at, sub.paused_at, at, (line,), False, then=then, draft=True)


def _new_interval(sub: Subscription, account_status: str, new: Subscription, at: datetime, behavior, usage) -> Bill:
    end = calendar.period_boundary(at, new.interval, new.interval_count, 1)
    credit = () if behavior == "none" else unused(sub, at)
    closed = usage_charges.lines(sub.usage_prices, usage, sub.current_period_start, at)
    lines = (*sub.pending_prorations, *credit, periods.flat_fee(new), *closed)
    then = replace(
        new,
        billing_anchor=at,
        current_period_start=at,
        current_period_end=end,
        current_period_paused_s=0,
        current_period_paid=new.amount * new.quantity,
        pending_prorations=(),
    )
    return Bill(sub, _UPDATE, at, at, end, lines, periods.collects(account_status, lines), then=then)


def _restate(sub: Subscription, at: datetime, then: Subscription) -> Bill:
    """No invoice: the subscription's new state only."""
    return Bill(sub, _UPDATE, at, at, max(sub.current_period_end, at), (), False, then=then)


def _terms_name(sub: Subscription) -> str:
    seats = f" x {sub.quantity}" if sub.quantity != 1 else ""
    return f"{sub.plan_name} ({sub.plan_code}){seats}"
