"""The subscription lifecycle worked by hand: every figure below can be checked on paper.

Proration rule (``lines.prorate``): amount x seconds left / seconds the period was paid for,
rounded half to even once per line. Plans here have no metered usage unless a test adds it.
"""

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib import errors
from chalicelib.billing import engine, invoices, lifecycle, rebill, subscriptions, trials
from chalicelib.db import transaction
from tests import billing

APR_1 = datetime(2027, 4, 1, tzinfo=UTC)  # April has 30 days
APR_16 = datetime(2027, 4, 16, tzinfo=UTC)  # halfway through April
MAY_1 = datetime(2027, 5, 1, tzinfo=UTC)


@pytest.fixture
def tenant(make_tenant):
    tenant_id = make_tenant()
    billing.priced_plan(tenant_id, "basic", 900)
    billing.priced_plan(tenant_id, "pro", 4900)
    return tenant_id


def _update(tenant, subscription, at, **fields):
    with transaction(tenant_id=tenant) as tx:
        return lifecycle.update(tx, billing.actor(tenant), lifecycle.Update(subscription, **fields), now=at)


def _renew(tenant, account, at):
    return rebill.renew(tenant, account, at, at)


def _entries(tenant, account):
    return billing.state(tenant, account)["entries"]


def test_an_upgrade_halfway_through_a_30_day_period_credits_half_the_old_price_and_charges_half_the_new(
    tenant, gateway
):
    account, subscription = billing.subscribe(tenant, "basic", APR_1)

    _update(tenant, subscription, APR_16, plan="pro")  # an upgrade: now, prorations on the next invoice

    with transaction(tenant_id=tenant) as tx:
        pending = subscriptions.get(tx, subscription)["pending_prorations"]
    assert [(p["amount"], p["period_start"], p["period_end"]) for p in pending] == [
        (-450, "2027-04-16T00:00:00Z", "2027-05-01T00:00:00Z"),  # 900 x 15/30 days unused
        (2450, "2027-04-16T00:00:00Z", "2027-05-01T00:00:00Z"),  # 4900 x 15/30 days remaining
    ]
    assert _renew(tenant, account, MAY_1) == "succeeded"
    first, renewal = billing.invoices_of(tenant, account)
    assert first["total"] == 900
    assert [(kind, amount) for kind, _q, amount, _s, _e in renewal["lines"]] == [
        ("proration", -450),
        ("proration", 2450),
        ("subscription", 4900),
    ]
    assert renewal["total"] == 6900  # April: 450 + 2450 for the halves; May: 4900 in advance
    assert billing.state(tenant, account)["balance"] == 0


def test_an_upgrade_invoiced_now_collects_the_difference_at_once(tenant, gateway):
    account, subscription = billing.subscribe(tenant, "basic", APR_1)

    _update(tenant, subscription, APR_16, plan="pro", proration_behavior="always_invoice")

    update = billing.invoices_of(tenant, account)[-1]
    assert (update["billing_reason"], update["total"], update["period_start"]) == ("subscription_update", 2000, APR_16)
    with transaction(tenant_id=tenant) as tx:
        assert subscriptions.get(tx, subscription)["pending_prorations"] == []
    billing_settles = rebill.handle(_settle(tenant, account), now=APR_16)
    assert billing_settles
    assert _entries(tenant, account) == [("charge", 900), ("payment", -900), ("charge", 2000), ("payment", -2000)]


def test_a_downgrade_waits_for_the_period_end_and_bills_the_new_price_from_there(tenant, gateway):
    account, subscription = billing.subscribe(tenant, "pro", APR_1)

    after = _update(tenant, subscription, APR_16, plan="basic")

    assert after["plan"] == "pro" and after["pending_change"] == {
        "plan": "basic",
        "billing_cycle": "monthly",
        "quantity": 1,
        "amount": 900,
        "effective_at": MAY_1,
    }
    assert _renew(tenant, account, MAY_1) == "succeeded"
    renewal = billing.invoices_of(tenant, account)[-1]
    assert [(kind, amount) for kind, _q, amount, _s, _e in renewal["lines"]] == [("subscription", 900)]
    with transaction(tenant_id=tenant) as tx:
        now_on = subscriptions.get(tx, subscription)
    assert (now_on["plan"], now_on["pending_change"], now_on["current_period_end"]) == (
        "basic",
        None,
        datetime(2027, 6, 1, tzinfo=UTC),
    )


def test_a_scheduled_change_can_be_canceled_before_it_applies(tenant, gateway):
    account, subscription = billing.subscribe(tenant, "pro", APR_1)
    _update(tenant, subscription, APR_16, plan="basic")

    with transaction(tenant_id=tenant) as tx:
        after = lifecycle.cancel_pending_change(tx, billing.actor(tenant), subscription, now=APR_16)
    with transaction(tenant_id=tenant) as tx, pytest.raises(errors.UnprocessableState) as again:
        lifecycle.cancel_pending_change(tx, billing.actor(tenant), subscription, now=APR_16)

    assert after["pending_change"] is None and again.value.code == "no_pending_change"
    _renew(tenant, account, MAY_1)
    assert billing.invoices_of(tenant, account)[-1]["total"] == 4900


def test_a_14_day_trial_bills_nothing_then_the_first_paid_period_starts_at_its_end(tenant, gateway):
    account, subscription = billing.subscribe(tenant, "pro", APR_1, trial_days=14)
    trial_end = APR_1 + timedelta(days=14)

    with transaction(tenant_id=tenant) as tx:
        during = subscriptions.get(tx, subscription)
    assert (during["status"], during["trial_end"], billing.invoices_of(tenant, account)) == (
        "trialing",
        trial_end,
        [],
    )
    assert trials.remind(trial_end - timedelta(days=4)) == 0
    assert trials.remind(trial_end - timedelta(days=3)) == 1  # subscription.trial_will_end, once
    assert trials.remind(trial_end - timedelta(days=2)) == 0

    assert _renew(tenant, account, trial_end) == "succeeded"
    [first] = billing.invoices_of(tenant, account)
    assert (first["total"], first["period_start"], first["period_end"]) == (4900, trial_end, MAY_1 + timedelta(days=14))
    with transaction(tenant_id=tenant) as tx:
        assert subscriptions.get(tx, subscription)["status"] == "active"
    assert _entries(tenant, account) == [("charge", 4900), ("payment", -4900)]


def test_ending_a_trial_now_starts_the_first_paid_period_now(tenant, gateway):
    account, subscription = billing.subscribe(tenant, "pro", APR_1, trial_days=14)

    after = _update(tenant, subscription, APR_1 + timedelta(days=5), trial_end="now")

    started = APR_1 + timedelta(days=5)
    assert (after["status"], after["current_period_start"], after["billing_anchor"]) == ("active", started, started)
    [first] = billing.invoices_of(tenant, account)
    assert (first["total"], first["period_start"]) == (4900, started)


def test_a_seat_change_from_3_to_5_on_day_10_of_31_prorates_the_22_days_left(tenant, gateway):
    billing.priced_plan(tenant, "seat", 1000)
    mar_1, mar_10 = datetime(2027, 3, 1, tzinfo=UTC), datetime(2027, 3, 10, tzinfo=UTC)
    account, subscription = billing.subscribe(tenant, "seat", mar_1, quantity=3)

    _update(tenant, subscription, mar_10, quantity=5)

    _renew(tenant, account, APR_1)
    first, renewal = billing.invoices_of(tenant, account)
    assert first["lines"][0][:3] == ("subscription", 3, 3000)
    # 3000 x 22/31 = 2129.03 -> 2129 credited; 5000 x 22/31 = 3548.39 -> 3548 charged; April 5 x 1000.
    assert [line[:3] for line in renewal["lines"]] == [
        ("proration", 3, -2129),
        ("proration", 5, 3548),
        ("subscription", 5, 5000),
    ]
    assert renewal["total"] == 6419


def test_a_jan_31_anchor_changed_on_feb_15_of_a_leap_year_prorates_over_29_days_and_keeps_its_anchor(tenant, gateway):
    jan_31, feb_15, feb_29 = (
        datetime(2028, 1, 31, tzinfo=UTC),
        datetime(2028, 2, 15, tzinfo=UTC),
        datetime(2028, 2, 29, tzinfo=UTC),
    )
    account, subscription = billing.subscribe(tenant, "basic", jan_31)

    _update(tenant, subscription, feb_15, plan="pro")

    _renew(tenant, account, feb_29)
    renewal = billing.invoices_of(tenant, account)[-1]
    # The period is Jan 31 - Feb 29 (29 days, a leap February); 14 days are left on Feb 15.
    # 900 x 14/29 = 434.48 -> 434 credited; 4900 x 14/29 = 2365.52 -> 2366 charged.
    assert [line[:3] for line in renewal["lines"]] == [
        ("proration", 1, -434),
        ("proration", 1, 2366),
        ("subscription", 1, 4900),
    ]
    assert (renewal["period_start"], renewal["period_end"]) == (feb_29, datetime(2028, 3, 31, tzinfo=UTC))


def test_a_new_interval_starts_a_new_period_and_anchor_at_the_change_with_the_unused_time_credited(tenant, gateway):
    billing.priced_plan(tenant, "pro", 49000, interval="year")
    account, subscription = billing.subscribe(tenant, "pro", APR_1)

    # Yearly at 49000 costs less per day than monthly at 4900: a downgrade, so "now" is asked for.
    after = _update(tenant, subscription, APR_16, billing_cycle="yearly", effective="now")

    assert (after["billing_anchor"], after["current_period_end"]) == (APR_16, datetime(2028, 4, 16, tzinfo=UTC))
    update = billing.invoices_of(tenant, account)[-1]
    assert [line[:3] for line in update["lines"]] == [("proration", 1, -2450), ("subscription", 1, 49000)]
    assert update["total"] == 46550


def test_a_cancel_now_with_prorate_credits_the_unused_fee_and_a_later_invoice_uses_the_credit(tenant, gateway):
    account, subscription = billing.subscribe(tenant, "pro", APR_1)
    with transaction(tenant_id=tenant) as tx:
        command = subscriptions.Cancel(subscription, prorate=True)
        subscriptions.cancel(tx, billing.actor(tenant), command, now=APR_16)

    final = billing.invoices_of(tenant, account)[-1]
    assert (final["billing_reason"], final["total"], final["status"]) == ("subscription_cancel", -2450, "paid")
    rebill.handle(_settle(tenant, account), now=APR_16)
    assert billing.state(tenant, account)["balance"] == -2450  # the account's credit

    with transaction(tenant_id=tenant) as tx:
        command = subscriptions.NewSubscription(account_id=account, plan="basic")
        again = subscriptions.create(tx, billing.actor(tenant), command, now=APR_16 + timedelta(days=1))
    with transaction(tenant_id=tenant) as tx:
        engine.bill_first_period(tx, tenant, str(again["id"]))
    first_again = billing.invoices_of(tenant, account)[-1]
    assert (first_again["total"], first_again["credit_applied"], first_again["amount_due"]) == (900, 900, 0)
    assert first_again["status"] == "paid" and billing.state(tenant, account)["balance"] == -1550


def test_a_void_pause_moves_the_period_end_by_the_time_paused(tenant, gateway):
    account, subscription = billing.subscribe(tenant, "pro", APR_1)
    with transaction(tenant_id=tenant) as tx:
        lifecycle.pause(tx, billing.actor(tenant), lifecycle.Pause(subscription), now=APR_16)
    assert billing.state(tenant, account)["next_billing_at"] is None  # not selected by the daily run

    resumed_at = APR_16 + timedelta(days=40)
    with transaction(tenant_id=tenant) as tx:
        after = lifecycle.resume(tx, billing.actor(tenant), lifecycle.Resume(subscription), now=resumed_at)

    # 15 paid days were left at the pause: the period now ends 15 days after the resume.
    assert (after["status"], after["current_period_end"]) == ("active", resumed_at + timedelta(days=15))
    assert billing.state(tenant, account)["next_billing_at"] == resumed_at + timedelta(days=15)
    assert [i["total"] for i in billing.invoices_of(tenant, account)] == [4900]


def test_a_keep_as_draft_pause_puts_the_paused_time_on_a_draft_that_charges_nothing(tenant, gateway):
    account, subscription = billing.subscribe(tenant, "pro", APR_1)
    with transaction(tenant_id=tenant) as tx:
        lifecycle.pause(tx, billing.actor(tenant), lifecycle.Pause(subscription, "keep_as_draft"), now=APR_16)
    with transaction(tenant_id=tenant) as tx:
        lifecycle.resume(tx, billing.actor(tenant), lifecycle.Resume(subscription), now=APR_16 + timedelta(days=6))

    draft = billing.invoices_of(tenant, account)[-1]
    assert (draft["status"], draft["total"]) == ("draft", 980)  # 4900 x 6/30 days
    assert _entries(tenant, account) == [("charge", 4900), ("payment", -4900)]


def test_a_scheduled_resume_is_done_by_the_daily_run(tenant, gateway):
    account, subscription = billing.subscribe(tenant, "pro", APR_1)
    resumes_at = APR_16 + timedelta(days=10)
    with transaction(tenant_id=tenant) as tx:
        lifecycle.pause(tx, billing.actor(tenant), lifecycle.Pause(subscription, resumes_at=resumes_at), now=APR_16)

    assert billing.state(tenant, account)["next_billing_at"] == resumes_at
    assert _renew(tenant, account, resumes_at) == "succeeded"
    with transaction(tenant_id=tenant) as tx:
        after = subscriptions.get(tx, subscription)
    assert (after["status"], after["current_period_end"], after["pause"]) == (
        "active",
        MAY_1 + timedelta(days=10),
        None,
    )


def test_invalid_transitions_are_refused_with_a_code(tenant, gateway):
    _account, trialing = billing.subscribe(tenant, "pro", APR_1, trial_days=14)
    _other, live = billing.subscribe(tenant, "pro", APR_1)

    def refused(work):
        with transaction(tenant_id=tenant) as tx, pytest.raises(errors.BillingError) as caught:
            work(tx)
        return caught.value.code

    actor = billing.actor(tenant)
    assert refused(lambda tx: lifecycle.pause(tx, actor, lifecycle.Pause(trialing), now=APR_1)) == (
        "subscription_trialing"
    )
    assert refused(lambda tx: lifecycle.update(tx, actor, lifecycle.Update(live, trial_end="now"), now=APR_16)) == (
        "not_trialing"
    )
    billing.priced_plan(tenant, "huge", 10_000_000)
    too_much = lifecycle.Update(live, plan="huge", quantity=200_000)  # 2 x 10^12 minor units a month
    assert refused(lambda tx: lifecycle.update(tx, actor, too_much, now=APR_16)) == "amount_too_large"
    with transaction(tenant_id=tenant) as tx, pytest.raises(errors.InvalidRequest) as quantity:
        lifecycle.update(tx, actor, lifecycle.Update(live, quantity=10**7), now=APR_16)
    assert quantity.value.details == [{"field": "quantity", "issue": "must be between 1 and 1000000"}]
    assert refused(lambda tx: lifecycle.update(tx, actor, lifecycle.Update(live, plan="pro"), now=MAY_1)) == (
        "renewal_pending"
    )
    with transaction(tenant_id=tenant) as tx:
        subscriptions.cancel(tx, actor, subscriptions.Cancel(live), now=APR_16)
    assert refused(lambda tx: lifecycle.update(tx, actor, lifecycle.Update(live, plan="basic"), now=APR_16)) == (
        "already_canceled"
    )


def _settle(tenant, account):
    return rebill.json.dumps(
        {"tenantId": tenant, "accountId": account, "kind": "settle", "dueAt": "2027-04-16T00:00:00Z"}
    )


def test_a_switch_without_proration_leaves_the_period_paid_at_the_old_price_and_credits_it_so(tenant, gateway):
    account, subscription = billing.subscribe(tenant, "basic", APR_1)
    _update(tenant, subscription, APR_1 + timedelta(hours=1), plan="pro", proration_behavior="none")

    with transaction(tenant_id=tenant) as tx:
        command = subscriptions.Cancel(subscription, prorate=True)
        subscriptions.cancel(tx, billing.actor(tenant), command, now=APR_1 + timedelta(days=1))

    final = billing.invoices_of(tenant, account)[-1]
    # 29 of 30 days unused, credited at the 900 paid for them (not at the 4900 switched to): 870.
    assert [line[:3] for line in final["lines"]] == [("proration", 1, -870)]


def test_a_change_whose_next_invoice_could_never_be_billed_is_refused_when_it_is_made(tenant, gateway):
    billing.priced_plan(tenant, "whale", 999_999)
    _account, subscription = billing.subscribe(tenant, "whale", APR_1)

    with pytest.raises(errors.UnprocessableState) as refused:
        # + 999,999 x 999,999 x 1/2 of a period pending, then a 999,998,000,001 renewal: over the largest amount.
        _update(tenant, subscription, APR_16, quantity=1_000_000)

    assert refused.value.code == "amount_too_large"
    with transaction(tenant_id=tenant) as tx:
        assert subscriptions.get(tx, subscription)["quantity"] == 1


def test_a_credit_posted_while_an_invoice_is_in_dunning_pays_part_of_it_at_the_retry(tenant, gateway):
    gateway.default = "decline"
    account, subscription = billing.subscribe(tenant, "pro", APR_1)
    gateway.default = "succeed"
    retry_at = billing.state(tenant, account)["payment_retry_at"]
    with transaction(tenant_id=tenant) as tx:
        command = subscriptions.Cancel(subscription, prorate=True)
        subscriptions.cancel(tx, billing.actor(tenant), command, now=APR_1 + timedelta(hours=12))

    assert rebill.retry_payment(tenant, account, retry_at, retry_at) == "succeeded"

    # 4900 x 29.5/30 = 4818.33 -> 4818 credited, so the retry collects the 82 left, not 4900.
    assert [c[2] for c in gateway.charges] == [82]
    assert _entries(tenant, account) == [("charge", 4900), ("payment_failed", 0), ("credit", -4818), ("payment", -82)]
    assert billing.state(tenant, account)["balance"] == 0


def test_a_paused_subscription_cannot_be_set_to_cancel_at_a_period_end_it_does_not_have(tenant, gateway):
    _account, subscription = billing.subscribe(tenant, "pro", APR_1)
    with transaction(tenant_id=tenant) as tx:
        lifecycle.pause(tx, billing.actor(tenant), lifecycle.Pause(subscription), now=APR_16)

    with transaction(tenant_id=tenant) as tx, pytest.raises(errors.UnprocessableState) as refused:
        subscriptions.cancel(tx, billing.actor(tenant), subscriptions.Cancel(subscription, at_period_end=True))

    assert refused.value.code == "subscription_paused"


def test_what_the_daily_run_changes_is_announced_and_audited(tenant, gateway):
    trial_account, trialing = billing.subscribe(tenant, "pro", APR_1, trial_days=14)
    paused_account, paused = billing.subscribe(tenant, "pro", APR_1)
    with transaction(tenant_id=tenant) as tx:
        pause = lifecycle.Pause(paused, resumes_at=APR_16 + timedelta(days=1))
        lifecycle.pause(tx, billing.actor(tenant), pause, now=APR_16)

    _renew(tenant, trial_account, APR_1 + timedelta(days=14))
    _renew(tenant, paused_account, APR_16 + timedelta(days=1))

    with transaction(tenant_id=tenant) as tx:
        events = tx.all(
            "SELECT event_type, payload FROM outbox WHERE event_type IN ('subscription.updated',"
            " 'subscription.resumed') ORDER BY created_at"
        )
        audited = [r[0] for r in tx.run("SELECT action FROM audit_logs WHERE actor = 'system:rebill' ORDER BY seq")]
    assert [(e["event_type"], e["payload"]["subscriptionId"]) for e in events] == [
        ("subscription.updated", trialing),
        ("subscription.resumed", paused),
    ]
    assert audited == ["subscription.updated", "subscription.resumed"]


def test_moving_a_trials_end_re_arms_its_reminder(tenant, gateway):
    _account, subscription = billing.subscribe(tenant, "pro", APR_1, trial_days=5)
    assert trials.remind(APR_1 + timedelta(days=2)) == 1
    _update(tenant, subscription, APR_1 + timedelta(days=3), trial_end=APR_1 + timedelta(days=20))

    assert trials.remind(APR_1 + timedelta(days=10)) == 0
    assert trials.remind(APR_1 + timedelta(days=17)) == 1


def test_a_seat_change_keeps_the_plan_price_it_is_on(tenant, gateway):
    billing.priced_plan(tenant, "team", 13000, interval="month", interval_count=3)
    _account, subscription = billing.subscribe(tenant, "team", APR_1)  # its only price: quarterly
    billing.priced_plan(tenant, "team", 4900)  # then a monthly one, which a lookup by cycle would find

    after = _update(tenant, subscription, APR_16, quantity=2)

    assert (after["amount"], after["quantity"]) == (13000, 2)
    assert after["current_period_end"] == datetime(2027, 7, 1, tzinfo=UTC)


def test_usage_during_a_trial_is_billed_at_its_end_when_the_plan_says_so(tenant, gateway):
    metered = [{"metric": "api_calls", "aggregation": "sum", "unit_amount": 2}]
    billing.priced_plan(tenant, "metered", 1000, usage_prices=metered, trial_usage="billed")
    billing.priced_plan(tenant, "free-trial", 1000, usage_prices=metered)  # trial_usage defaults to free
    billed, _ = billing.subscribe(tenant, "metered", APR_1, trial_days=14)
    free, _ = billing.subscribe(tenant, "free-trial", APR_1, trial_days=14)
    for account in (billed, free):
        billing.usage(tenant, account, APR_1 + timedelta(days=3), 50, f"trial-{account}")

    for account in (billed, free):
        _renew(tenant, account, APR_1 + timedelta(days=14))

    assert [line[:3] for line in billing.invoices_of(tenant, billed)[0]["lines"]] == [
        ("subscription", 1, 1000),
        ("usage", 50, 100),
    ]
    assert [line[:3] for line in billing.invoices_of(tenant, free)[0]["lines"]] == [("subscription", 1, 1000)]


def test_a_subscription_set_to_cancel_is_reactivated_by_an_update_and_renews(tenant, gateway):
    account, subscription = billing.subscribe(tenant, "pro", APR_1)
    with transaction(tenant_id=tenant) as tx:
        subscriptions.cancel(tx, billing.actor(tenant), subscriptions.Cancel(subscription, at_period_end=True))

    after = _update(tenant, subscription, APR_16, cancel_at_period_end=False)

    assert after["cancel_at_period_end"] is False
    assert _renew(tenant, account, MAY_1) == "succeeded"
    assert [i["billing_reason"] for i in billing.invoices_of(tenant, account)] == [
        "subscription_create",
        "subscription_cycle",
    ]


def _keep_paused_time_as_draft(tenant):
    account, subscription = billing.subscribe(tenant, "pro", APR_1)
    with transaction(tenant_id=tenant) as tx:
        lifecycle.pause(tx, billing.actor(tenant), lifecycle.Pause(subscription, "keep_as_draft"), now=APR_16)
    with transaction(tenant_id=tenant) as tx:
        lifecycle.resume(tx, billing.actor(tenant), lifecycle.Resume(subscription), now=APR_16 + timedelta(days=6))
    return account, billing.invoices_of(tenant, account)[-1]["id"]


def test_a_finalized_draft_is_numbered_charged_and_collected(tenant, gateway):
    account, draft = _keep_paused_time_as_draft(tenant)

    finalized = invoices.finalize(tenant, billing.actor(tenant), str(draft), now=MAY_1)

    assert (finalized["status"], finalized["total"], finalized["amount_paid"]) == ("paid", 980, 980)
    # numbered in the tenant's gapless series, after the paused subscription's first invoice
    assert finalized["number"] == f"{tenant.replace('-', '')[:8].upper()}-000002"
    assert _entries(tenant, account) == [("charge", 4900), ("payment", -4900), ("charge", 980), ("payment", -980)]
    with pytest.raises(errors.UnprocessableState) as again:
        invoices.finalize(tenant, billing.actor(tenant), str(draft), now=MAY_1)
    assert again.value.code == "invoice_not_draft"


def test_a_voided_draft_bills_nothing(tenant, gateway):
    account, draft = _keep_paused_time_as_draft(tenant)

    with transaction(tenant_id=tenant) as tx:
        voided = invoices.void(tx, billing.actor(tenant), str(draft))

    assert (voided["status"], voided["amount_due"]) == ("void", 0)
    assert _entries(tenant, account) == [("charge", 4900), ("payment", -4900)]
