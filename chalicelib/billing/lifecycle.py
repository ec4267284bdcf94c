"""Changing a live subscription: its plan price, quantity and interval, its trial, a pause, a resume.

The commands; what each bills is ``changes``' (pure), written by the engine's one path
(``engine.change`` -> ``invoicing.issue``). Every command locks the account, then the
subscription, bills the first period first if its event has not yet (so it is billed on
the terms it started with), and records an audit row and a domain event with the change.

When a change applies (``effective``): an upgrade (the new terms cost at least as much
per unit of time) applies now, and a downgrade at the period end, as the customer paid
for this period's terms; either may be asked for. A change during a trial always
applies now (nothing was paid). The latest change wins: a new one replaces one
scheduled before.
"""

from dataclasses import dataclass
from datetime import datetime

from chalicelib import audit, errors, outbox
from chalicelib.billing import calendar, changes, engine, invoicing, periods, subscription_views, subscriptions

EFFECTIVE = ("now", "period_end")
PAUSE_BEHAVIORS = ("void", "keep_as_draft")


@dataclass(frozen=True)
class Update:
    subscription_id: str
    plan: str | None = None
    billing_cycle: str | None = None
    quantity: int | None = None
    proration_behavior: str = "create_prorations"
    effective: str | None = None  # now | period_end; None: now for an upgrade, period end for a downgrade
    trial_end: datetime | str | None = None  # "now" ends the trial now
    cancel_at_period_end: bool | None = None  # False reactivates a subscription set to cancel

    @classmethod
    def of(cls, subscription_id: str, body: dict) -> "Update":
        trial_end = calendar.timestamp(body, "trial_end", allow_now=True)
        return cls(subscription_id, **{**body, "trial_end": trial_end})


@dataclass(frozen=True)
class Pause:
    subscription_id: str
    behavior: str = "void"
    resumes_at: datetime | None = None

    @classmethod
    def of(cls, subscription_id: str, body: dict) -> "Pause":
        return cls(subscription_id, **{**body, "resumes_at": calendar.timestamp(body, "resumes_at")})


@dataclass(frozen=True)
class Resume:
    subscription_id: str
    resumes_at: datetime | None = None  # later: a scheduled resume, done by the daily run

    @classmethod
    def of(cls, subscription_id: str, body: dict) -> "Resume":
        return cls(subscription_id, resumes_at=calendar.timestamp(body, "resumes_at"))


def update(tx, actor, command: Update, now: datetime | None = None) -> dict:
    now = now or calendar.utcnow()
    account, row = _lock_changeable(tx, actor, command.subscription_id, now)
    done, sub = [], _state(tx, command.subscription_id)
    terms = _new_terms(tx, account, sub, command)
    if terms is not None:
        done.append(_change_terms(tx, actor, sub, command, terms, now))
    if command.trial_end is not None:  # a terms change leaves a trial a trial
        done.append(_change_trial(tx, actor, sub, command, now))
    if command.cancel_at_period_end is not None and command.cancel_at_period_end != row["cancel_at_period_end"]:
        flag = command.cancel_at_period_end
        _apply(tx, actor, command.subscription_id, now, lambda s, _st, _u: changes.cancel_at_period_end(s, flag, now))
        done.append({"cancel_at_period_end": flag})
    if not done:
        return subscriptions.get(tx, command.subscription_id)
    return _record(tx, actor, command.subscription_id, "subscription.updated", {"changes": done}, now)


def cancel_pending_change(tx, actor, subscription_id: str, now: datetime | None = None) -> dict:
    now = now or calendar.utcnow()
    _account, row = subscriptions.lock_live(tx, subscription_id)
    if row["pending_change"] is None:
        raise errors.UnprocessableState("the subscription has no scheduled change", code="no_pending_change")
    _apply(tx, actor, subscription_id, now, lambda sub, _s, _u: changes.schedule(sub, None, now))
    details = {"changes": [{"pending_change": None}]}
    return _record(tx, actor, subscription_id, "subscription.updated", details, now)


def pause(tx, actor, command: Pause, now: datetime | None = None) -> dict:
    now = now or calendar.utcnow()
    _account, row = _lock_changeable(tx, actor, command.subscription_id, now)
    if row["status"] == "trialing":
        raise errors.UnprocessableState(
            "a trialing subscription cannot be paused: end or extend its trial instead", code="subscription_trialing"
        )
    if command.resumes_at is not None and command.resumes_at <= now:
        issue = "must be in the future"
        raise errors.InvalidRequest("invalid resumes_at", details=[{"field": "resumes_at", "issue": issue}])
    behavior, resumes_at = command.behavior, command.resumes_at
    _apply(tx, actor, command.subscription_id, now, lambda sub, _s, _u: changes.pause(sub, now, behavior, resumes_at))
    details = {"behavior": behavior, "resumes_at": resumes_at}
    return _record(tx, actor, command.subscription_id, "subscription.paused", details, now)


def resume(tx, actor, command: Resume, now: datetime | None = None) -> dict:
    """Resume now, or at ``resumes_at`` (the daily run resumes it that day)."""
    now = now or calendar.utcnow()
    account, row = subscriptions.lock_live(tx, command.subscription_id)
    if account["status"] == "INACTIVE":
        raise errors.UnprocessableState("the account is inactive", code="account_inactive")
    if row["status"] != "paused":
        raise errors.UnprocessableState("the subscription is not paused", code="subscription_not_paused")
    if command.resumes_at is not None and command.resumes_at <= now:
        issue = "must be in the future (leave it out to resume now)"
        raise errors.InvalidRequest("invalid resumes_at", details=[{"field": "resumes_at", "issue": issue}])
    if command.resumes_at is not None:
        later = command.resumes_at
        _apply(tx, actor, command.subscription_id, now, lambda sub, _s, _u: changes.schedule_resume(sub, later, now))
        return _record(tx, actor, command.subscription_id, "subscription.updated", {"resumes_at": later}, now)
    _apply(tx, actor, command.subscription_id, now, lambda sub, _s, _u: changes.resume(sub, now))
    return _record(tx, actor, command.subscription_id, "subscription.resumed", {}, now)


def _lock_changeable(tx, actor, subscription_id: str, now: datetime) -> tuple[dict, dict]:
    """Lock a subscription that may change now, its first period billed."""
    account, row = subscriptions.lock_live(tx, subscription_id)
    if account["status"] == "INACTIVE":
        raise errors.UnprocessableState("the account is inactive", code="account_inactive")
    if row["status"] == "paused":
        raise errors.UnprocessableState("the subscription is paused: resume it first", code="subscription_paused")
    if now >= row["current_period_end"]:
        raise errors.UnprocessableState(
            "the subscription's period has ended and its renewal is not billed yet: try again after the daily run",
            code="renewal_pending",
        )
    engine.bill_first_period(tx, actor.tenant_id, subscription_id)
    return account, row


def _state(tx, subscription_id: str) -> periods.Subscription:
    return periods.Subscription.of(invoicing.subscription_state(tx, subscription_id))


def _new_terms(tx, account: dict, sub: periods.Subscription, command: Update) -> dict | None:
    """The terms the command asks for (plan price, interval, quantity), None if they are the current ones."""
    if command.plan is None and command.billing_cycle is None and command.quantity is None:
        return None
    quantity = sub.quantity if command.quantity is None else command.quantity
    if command.plan is None and command.billing_cycle is None:  # seats only: the same plan price
        subscriptions.check_amount(sub.amount, quantity)
        return None if quantity == sub.quantity else {**sub.terms(), "quantity": quantity}
    cycle = command.billing_cycle or calendar.CYCLE_OF[sub.interval]
    plan = subscriptions.price_for(tx, account, command.plan or sub.plan_code, cycle)
    subscriptions.check_amount(plan["amount"], quantity)
    terms = {
        "plan_id": str(plan["id"]),
        "plan_code": plan["code"],
        "plan_name": plan["name"],
        "interval": plan["interval"],
        "interval_count": plan["interval_count"],
        "amount": plan["amount"],
        "currency": plan["currency"],
        "usage_prices": plan["usage_prices"],
        "trial_usage": plan["trial_usage"],
        "quantity": quantity,
    }
    return None if terms == sub.terms() else terms


def _change_terms(tx, actor, sub: periods.Subscription, command: Update, terms: dict, now: datetime) -> dict:
    upgrade = changes.is_upgrade(sub, terms)
    effective = "now" if sub.trialing else command.effective or ("now" if upgrade else "period_end")
    behavior = command.proration_behavior
    if effective == "period_end" and sub.cancel_at_period_end:
        raise errors.UnprocessableState(
            "the subscription cancels at its period end: reactivate it before scheduling a change",
            code="cancel_scheduled",
        )
    if effective == "now":
        compute = lambda s, status, usage: changes.change(s, status, terms, now, behavior, usage)  # noqa: E731
    else:
        compute = lambda s, _status, _usage: changes.schedule(s, terms, now)  # noqa: E731
    _apply(tx, actor, command.subscription_id, now, compute)
    kind = "upgrade" if upgrade else "downgrade"
    return {
        "terms": subscription_views.public_terms(terms),
        "kind": kind,
        "effective": effective,
        "proration_behavior": behavior,
    }


def _change_trial(tx, actor, sub: periods.Subscription, command: Update, now: datetime) -> dict:
    if not sub.trialing:
        raise errors.UnprocessableState("the subscription is not in a trial", code="not_trialing")
    if command.trial_end == "now":
        _apply(
            tx, actor, command.subscription_id, now, lambda s, status, usage: changes.end_trial(s, status, now, usage)
        )
        return {"trial_end": now}
    subscriptions.check_trial_end(command.trial_end, now)
    trial_end = command.trial_end
    _apply(tx, actor, command.subscription_id, now, lambda s, _st, _u: changes.extend_trial(s, trial_end, now))
    return {"trial_end": trial_end}


def _apply(tx, actor, subscription_id: str, now: datetime, compute) -> None:
    engine.change(tx, actor.tenant_id, subscription_id, now, compute)


def _record(tx, actor, subscription_id: str, event_type: str, details: dict, now: datetime) -> dict:
    """The audit row and the domain event of a change, and the subscription as it is now."""
    audit.record(tx, actor, event_type, "subscription", subscription_id, details)
    subscription = subscriptions.get(tx, subscription_id)
    fields = {
        "subscriptionId": str(subscription_id),
        "accountId": str(subscription["account_id"]),
        "status": subscription["status"],
        "details": details,
        "timestamp": now,
    }
    outbox.add(tx, event_type, fields, subscription)
    return subscription
