"""Subscriptions: an account on a plan price times a quantity, billed every period from its anchor.

An account has at most one live (not canceled) subscription; the account's
``next_billing_at`` is the end of that subscription's current period (or trial), which
is where the daily rebill picks it up. A subscription may start with a trial
(``trial_days``, ``trial_end``, or the plan's default ``trial_days``): nothing is billed
until ``trial_end``, where the first paid period starts and its anchor is set.
Canceling now ends it with a final invoice for its metered usage up to that instant
and, with ``prorate``, a credit for the flat fee's unused time (``engine.end_now``);
canceling at period end leaves the final invoice to the rebill at that boundary.
Changing a live subscription is ``lifecycle``'s.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from chalicelib import audit, errors, outbox
from chalicelib.billing import accounts, calendar, changes, currency_prices, engine, plans, subscription_views
from chalicelib.billing.lines import MAX_AMOUNT
from chalicelib.db import paging
from chalicelib.db.queries import load
from chalicelib.observability import emit_metric

Q = load("subscriptions")
STATUSES = ("trialing", "active", "past_due", "paused", "canceled", "unpaid")
MAX_TRIAL_DAYS = 730
MAX_QUANTITY = 1_000_000  # the schemas' and the database's bound too


@dataclass(frozen=True)
class NewSubscription:
    account_id: str
    plan: str
    billing_cycle: str = "monthly"
    quantity: int = 1
    trial_days: int | None = None
    trial_end: datetime | None = None

    @classmethod
    def of(cls, body: dict) -> "NewSubscription":
        values = {**body, "trial_end": calendar.timestamp(body, "trial_end")}
        if values["trial_end"] is not None and body.get("trial_days") is not None:
            issue = "give trial_days or trial_end, not both"
            raise errors.InvalidRequest("conflicting trial", details=[{"field": "trial_end", "issue": issue}])
        return cls(**values)


@dataclass(frozen=True)
class Cancel:
    subscription_id: str
    at_period_end: bool = False
    prorate: bool = False


def check_amount(amount: int, quantity: int) -> None:
    """A quantity within 1..MAX_QUANTITY whose flat fee stays billable (``lines.MAX_AMOUNT``)."""
    if not 1 <= quantity <= MAX_QUANTITY:
        issue = f"must be between 1 and {MAX_QUANTITY}"
        raise errors.InvalidRequest("invalid quantity", details=[{"field": "quantity", "issue": issue}])
    if amount * quantity > MAX_AMOUNT:
        raise errors.UnprocessableState(
            f"{quantity} x {amount} is over the largest amount, {MAX_AMOUNT} minor units",
            code="amount_too_large",
        )


def check_trial_end(trial_end: datetime, now: datetime, field: str = "trial_end") -> None:
    if not now < trial_end <= now + timedelta(days=MAX_TRIAL_DAYS):
        issue = f"must be in the future and at most {MAX_TRIAL_DAYS} days ahead"
        raise errors.InvalidRequest(f"invalid {field}", details=[{"field": field, "issue": issue}])


def create(tx, actor, command: NewSubscription, now: datetime | None = None) -> dict:
    now = now or calendar.utcnow()
    account = accounts.lock(tx, command.account_id)
    plan = price_for(tx, account, command.plan, command.billing_cycle)
    check_amount(plan["amount"], command.quantity)
    if tx.run(Q["live_for_account"], account_id=account["id"]):
        raise errors.Conflict("the account already has a live subscription", code="subscription_exists")
    trial_end = _trial_end(command, plan, now)
    end = trial_end or calendar.period_boundary(now, plan["interval"], plan["interval_count"], 1)
    subscription_id = tx.scalar(
        Q["create"],
        account_id=account["id"],
        plan_id=plan["id"],
        start=now,
        end=end,
        anchor=trial_end or now,
        quantity=command.quantity,
        status="trialing" if trial_end else "active",
        trial_end=trial_end,
    )
    accounts.start_billing(tx, account["id"], plan["id"], anchor=trial_end or now, next_billing_at=end)
    audit.record(tx, actor, "subscription.created", "subscription", subscription_id)
    fields = {
        "subscriptionId": str(subscription_id),
        "accountId": str(account["id"]),
        "planId": str(plan["id"]),
        "billingCycle": command.billing_cycle,
        "amount": plan["amount"] * command.quantity,
        "quantity": command.quantity,
        "currency": plan["currency"],
        "periodStart": now,
        "periodEnd": end,
        "trialEnd": trial_end,
        "timestamp": now,
    }
    subscription = get(tx, subscription_id)
    outbox.add(tx, "subscription.created", fields, subscription)
    _count(actor, plan, command.quantity)
    return subscription


def _trial_end(command: NewSubscription, plan: dict, now: datetime) -> datetime | None:
    """The trial the command asks for, else the plan's default; None for none."""
    if command.trial_end is not None:
        check_trial_end(command.trial_end, now)
        return command.trial_end
    days = plan["trial_days"] if command.trial_days is None else command.trial_days
    return now + timedelta(days=days) if days else None


def _count(actor, plan: dict, quantity: int) -> None:
    plan_id = str(plan["id"])
    emit_metric("subscription_count", 1, TenantId=actor.tenant_id, PlanId=plan_id)
    # Minor units: only meaningful per currency, hence the dimension.
    revenue = {"TenantId": actor.tenant_id, "PlanId": plan_id, "Currency": plan["currency"]}
    emit_metric("subscription_revenue", plan["amount"] * quantity, "None", **revenue)


def price_for(tx, account: dict, code: str, billing_cycle: str) -> dict:
    """The plan's price for the cycle in the account's currency (its ``amount``, ``currency`` and
    ``usage_prices`` in that currency), if the account may subscribe to it: 422
    ``currency_not_offered`` when the plan has no price in the account's currency."""
    plan = plans.find(tx, code, calendar.BILLING_CYCLES[billing_cycle])
    if plan is None:
        issue = f"no {billing_cycle} price for plan {code!r}"
        raise errors.InvalidRequest("no such plan price", details=[{"field": "plan", "issue": issue}])
    if account["status"] == "INACTIVE":
        raise errors.UnprocessableState("the account is inactive", code="account_inactive")
    return {**plan, **currency_prices.in_currency(plan, account["currency"])}


def get(tx, subscription_id: str) -> dict:
    return subscription_views.get(tx, subscription_id)


def lock_live(tx, subscription_id: str) -> tuple[dict, dict]:
    """The subscription's account and the subscription, locked in that order (the order every billing
    path takes); 404 when absent, 422 when canceled."""
    account_id = tx.scalar(Q["account_of"], id=subscription_id)
    if account_id is None:
        raise errors.NotFound("no such subscription")
    account = accounts.lock(tx, account_id)
    row = tx.one(Q["lock"], id=subscription_id)
    if row["status"] == "canceled":
        raise errors.UnprocessableState("the subscription is already canceled", code="already_canceled")
    return account, row


def cancel(tx, actor, command: Cancel, now: datetime | None = None) -> dict:
    now = now or calendar.utcnow()
    _account, row = lock_live(tx, command.subscription_id)
    if command.at_period_end:
        if row["status"] == "paused":
            raise errors.UnprocessableState(
                "a paused subscription has no period end to cancel at: cancel it now, or resume it first",
                code="subscription_paused",
            )
        if row["cancel_at_period_end"]:
            raise errors.UnprocessableState(
                "the subscription is already set to cancel at period end", code="already_canceling"
            )
        at_end = lambda sub, _status, _usage: changes.cancel_at_period_end(sub, True, now)  # noqa: E731
        engine.change(tx, actor.tenant_id, command.subscription_id, now, at_end)
    else:
        # Its first period is billed on the terms it started with, then its final invoice bills
        # the usage up to now; the payment is settled when the subscription.canceled event
        # reaches the generate-invoice consumer.
        engine.bill_first_period(tx, actor.tenant_id, command.subscription_id)
        engine.end_now(tx, actor.tenant_id, command.subscription_id, now, prorate=command.prorate)
    details = {"at_period_end": command.at_period_end, "prorate": command.prorate}
    audit.record(tx, actor, "subscription.canceled", "subscription", command.subscription_id, details)
    return get(tx, command.subscription_id)


def list_page(tx, page: paging.PageRequest, *, account_id: str | None = None, status: str | None = None) -> dict:
    return subscription_views.list_page(tx, page, account_id=account_id, status=status)
