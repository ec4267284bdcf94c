"""Subscriptions: an account on a plan price, billed every period from its anchor.

An account has at most one live (not canceled) subscription; the account's
``next_billing_at`` is the end of that subscription's current period, which is
where the daily rebill picks it up. Canceling now ends it with a final invoice for
its metered usage up to that instant (``engine.end_now``); canceling at period end
leaves the final invoice to the rebill at that boundary.
"""

from dataclasses import dataclass

from chalicelib import audit, errors, outbox
from chalicelib.billing import accounts, calendar, engine, plans
from chalicelib.db import paging
from chalicelib.db.queries import load
from chalicelib.observability import emit_metric

Q = load("subscriptions")
STATUSES = ("active", "past_due", "canceled", "unpaid")


@dataclass(frozen=True)
class NewSubscription:
    account_id: str
    plan: str
    billing_cycle: str = "monthly"


@dataclass(frozen=True)
class Cancel:
    subscription_id: str
    at_period_end: bool = False


def create(tx, actor, command: NewSubscription) -> dict:
    account = accounts.lock(tx, command.account_id)
    plan = _price_for(tx, account, command)
    if tx.run(Q["live_for_account"], account_id=account["id"]):
        raise errors.Conflict("the account already has a live subscription", code="subscription_exists")
    start = calendar.utcnow()
    end = calendar.period_boundary(start, plan["interval"], plan["interval_count"], 1)
    subscription_id = tx.scalar(Q["create"], account_id=account["id"], plan_id=plan["id"], start=start, end=end)
    accounts.start_billing(tx, account["id"], plan["id"], anchor=start, next_billing_at=end)
    audit.record(tx, actor, "subscription.created", "subscription", subscription_id)
    fields = {
        "subscriptionId": str(subscription_id),
        "accountId": str(account["id"]),
        "planId": str(plan["id"]),
        "billingCycle": command.billing_cycle,
        "amount": plan["amount"],
        "currency": plan["currency"],
        "periodStart": start,
        "periodEnd": end,
        "timestamp": start,
    }
    outbox.add(tx, "subscription.created", fields)
    plan_id = str(plan["id"])
    emit_metric("subscription_count", 1, TenantId=actor.tenant_id, PlanId=plan_id)
    # Minor units: only meaningful per currency, hence the dimension.
    revenue = {"TenantId": actor.tenant_id, "PlanId": plan_id, "Currency": plan["currency"]}
    emit_metric("subscription_revenue", plan["amount"], "None", **revenue)
    return get(tx, subscription_id)


def _price_for(tx, account: dict, command: NewSubscription) -> dict:
    """The plan's price for the cycle, if the account may subscribe to it."""
    plan = plans.find(tx, command.plan, calendar.BILLING_CYCLES[command.billing_cycle])
    if plan is None:
        issue = f"no {command.billing_cycle} price for plan {command.plan!r}"
        raise errors.InvalidRequest("no such plan price", details=[{"field": "plan", "issue": issue}])
    if account["status"] == "INACTIVE":
        raise errors.UnprocessableState("the account is inactive", code="account_inactive")
    if plan["currency"] != account["currency"]:
        raise errors.UnprocessableState(
            f"the plan is priced in {plan['currency']}, the account bills in {account['currency']}",
            code="currency_mismatch",
        )
    return plan


def get(tx, subscription_id: str) -> dict:
    subscription = tx.one(Q["get"], id=subscription_id)
    if subscription is None:
        raise errors.NotFound("no such subscription")
    return subscription


def cancel(tx, actor, command: Cancel) -> dict:
    account_id = tx.scalar(Q["account_of"], id=command.subscription_id)
    if account_id is None:
        raise errors.NotFound("no such subscription")
    # The account first, then the subscription: the order every billing path locks them in.
    accounts.lock(tx, account_id)
    row = tx.one(Q["lock"], id=command.subscription_id)
    if row["status"] == "canceled":
        raise errors.UnprocessableState("the subscription is already canceled", code="already_canceled")
    if command.at_period_end:
        if row["cancel_at_period_end"]:
            raise errors.UnprocessableState(
                "the subscription is already set to cancel at period end", code="already_canceling"
            )
        tx.run(Q["cancel_at_period_end"], id=command.subscription_id)
    else:
        # Its final invoice bills the usage up to now; the payment is settled when
        # the subscription.canceled event reaches the generate-invoice consumer.
        engine.end_now(tx, actor.tenant_id, command.subscription_id, calendar.utcnow())
    details = {"at_period_end": command.at_period_end}
    audit.record(tx, actor, "subscription.canceled", "subscription", command.subscription_id, details)
    return get(tx, command.subscription_id)


def list_page(tx, page: paging.PageRequest, *, account_id: str | None = None, status: str | None = None) -> dict:
    accounts.check_visible(tx, account_id)
    paging.check_cursor(tx, Q["exists"], page, "subscription")
    rows = tx.all(Q["list"], account_id=account_id, status=status, after=page.starting_after, limit=page.limit + 1)
    return paging.page(rows, page, "/v1/subscriptions")
