"""Subscriptions: an account on a plan price, billed every period from its anchor.

An account has at most one live (not canceled) subscription; the account's
``next_billing_at`` is the end of that subscription's current period, which is
where the daily rebill picks it up.
"""

from chalicelib import audit, errors, outbox, pagination
from chalicelib.billing import accounts, calendar, engine, plans
from chalicelib.db.queries import load
from chalicelib.observability import emit_metric

Q = load("subscriptions")
STATUSES = ("active", "past_due", "canceled", "unpaid")


def create(tx, request) -> tuple[int, dict]:
    body = request.body
    cycle = body.get("billing_cycle", "monthly")
    account = accounts.lock(tx, body["account_id"])
    plan = plans.find(tx, body["plan"], calendar.BILLING_CYCLES[cycle])
    if plan is None:
        raise errors.InvalidRequest(
            "no such plan price", details=[{"field": "plan", "issue": f"no {cycle} price for plan {body['plan']!r}"}]
        )
    if account["status"] == "INACTIVE":
        raise errors.UnprocessableState("the account is inactive", code="account_inactive")
    if plan["currency"] != account["currency"]:
        raise errors.UnprocessableState(
            f"the plan is priced in {plan['currency']}, the account bills in {account['currency']}",
            code="currency_mismatch",
        )
    if tx.run(Q["live_for_account"], account_id=account["id"]):
        raise errors.Conflict("the account already has a live subscription", code="subscription_exists")
    start = calendar.utcnow()
    end = calendar.period_boundary(start, plan["interval"], plan["interval_count"], 1)
    subscription_id = tx.scalar(Q["create"], account_id=account["id"], plan_id=plan["id"], start=start, end=end)
    accounts.start_billing(tx, account["id"], plan["id"], anchor=start, next_billing_at=end)
    audit.record(tx, request.principal, "subscription.created", "subscription", subscription_id)
    subscription = get(tx, subscription_id)
    outbox.add(
        tx,
        "subscription.created",
        {
            "subscriptionId": str(subscription_id),
            "accountId": str(account["id"]),
            "planId": str(plan["id"]),
            "billingCycle": cycle,
            "amount": plan["amount"],
            "currency": plan["currency"],
            "periodStart": start,
            "periodEnd": end,
            "timestamp": start,
        },
    )
    tenant_id, plan_id = request.principal.tenant_id, str(plan["id"])
    emit_metric("subscription_count", 1, TenantId=tenant_id, PlanId=plan_id)
    # Minor units: only meaningful per currency, hence the dimension.
    emit_metric(
        "subscription_revenue", plan["amount"], "None", TenantId=tenant_id, PlanId=plan_id, Currency=plan["currency"]
    )
    return 201, subscription


def get(tx, subscription_id: str) -> dict:
    subscription = tx.one(Q["get"], id=pagination.parse_id(subscription_id, "id"))
    if subscription is None:
        raise errors.NotFound("no such subscription")
    return subscription


def cancel(tx, request) -> tuple[int, dict]:
    subscription_id = pagination.parse_id(request.path_params["subscription_id"], "id")
    row = tx.one(Q["lock"], id=subscription_id)
    if row is None:
        raise errors.NotFound("no such subscription")
    if row["status"] == "canceled":
        raise errors.UnprocessableState("the subscription is already canceled", code="already_canceled")
    if request.body.get("at_period_end"):
        if row["cancel_at_period_end"]:
            raise errors.UnprocessableState(
                "the subscription is already set to cancel at period end", code="already_canceling"
            )
        tx.run(Q["cancel_at_period_end"], id=subscription_id)
    else:
        # Its final invoice bills the usage up to now; the payment is settled when
        # the subscription.canceled event reaches the generate-invoice consumer.
        engine.end_now(tx, request.principal.tenant_id, subscription_id, calendar.utcnow())
    audit.record(
        tx,
        request.principal,
        "subscription.canceled",
        "subscription",
        subscription_id,
        {"at_period_end": bool(request.body.get("at_period_end"))},
    )
    return 200, get(tx, subscription_id)


def list_page(tx, page: pagination.PageRequest, query: dict) -> dict:
    details = []
    account_id, status = pagination.common_filters(query, STATUSES, details)
    if details:
        raise errors.InvalidRequest("invalid filters", details=details)
    pagination.check_account_filter(tx, account_id)
    pagination.check_cursor(tx, Q["exists"], page, "subscription")
    rows = tx.all(Q["list"], account_id=account_id, status=status, after=page.starting_after, limit=page.limit + 1)
    return pagination.page(rows, page, "/v1/subscriptions")
