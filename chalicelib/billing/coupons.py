"""Coupons and discounts: a tenant's offers, and an offer applied to an account or a subscription.

A coupon takes ``percent_off`` (an exact decimal string) or ``amount_off`` in one currency, for a
``duration``: ``once`` (the next invoice that bills something), ``repeating``
(``duration_in_periods`` billing periods: each first or renewal invoice consumes one) or
``forever``; optionally ``max_redemptions``, ``redeem_by`` and ``applies_to: {plans: [codes]}``.
Applying it makes a *discount* (``POST /v1/accounts/{id}/discounts``,
``POST /v1/subscriptions/{id}/discounts``): one live discount per account and per subscription (a
new one replaces it), counted in ``times_redeemed``. A subscription's discount stays with it
across plan changes (its id stays). A coupon that is inactive, past ``redeem_by`` or fully
redeemed, or whose ``amount_off`` is in another currency than the account's, is a 422 with a
code, and nothing is written. ``adjustments`` applies discounts; ``invoicing`` records what
consumed them.
"""

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from chalicelib import audit, errors
from chalicelib.billing import accounts, calendar
from chalicelib.db import paging
from chalicelib.db.queries import load

Q = load("coupons")


@dataclass(frozen=True)
class NewCoupon:
    duration: str
    name: str | None = None
    percent_off: str | None = None
    amount_off: int | None = None
    currency: str | None = None
    duration_in_periods: int | None = None
    max_redemptions: int | None = None
    redeem_by: datetime | None = None
    plans: tuple[str, ...] | None = None

    @classmethod
    def of(cls, body: dict, now: datetime) -> "NewCoupon":
        """From the API's body (``coupon_create``); every problem named by its field, in one 400."""
        details = _problems(body, now)
        if details:
            raise errors.InvalidRequest("invalid coupon", details=details)
        redeem_by = calendar.timestamp(body, "redeem_by")
        plans = tuple(body["applies_to"]["plans"]) if "applies_to" in body else None
        names = ("name", "percent_off", "amount_off", "currency", "duration_in_periods", "max_redemptions")
        return cls(body["duration"], **{n: body.get(n) for n in names}, redeem_by=redeem_by, plans=plans)


def _problems(body: dict, now: datetime) -> list[dict]:
    details = []
    if ("percent_off" in body) == ("amount_off" in body):
        details.append({"field": "percent_off", "issue": "give percent_off or amount_off, one of them"})
    elif "percent_off" in body and Fraction(body["percent_off"]) == 0:
        details.append({"field": "percent_off", "issue": "must be more than 0"})
    if ("amount_off" in body) != ("currency" in body):
        details.append({"field": "currency", "issue": "goes with amount_off, and amount_off needs it"})
    if (body["duration"] == "repeating") != ("duration_in_periods" in body):
        details.append({"field": "duration_in_periods", "issue": "required with repeating, and only with it"})
    if "redeem_by" in body and calendar.timestamp(body, "redeem_by") <= now:
        details.append({"field": "redeem_by", "issue": "must be in the future"})
    return details


def create(tx, actor, command: NewCoupon) -> dict:
    coupon_id = tx.scalar(
        Q["create"],
        name=command.name,
        percent_off=command.percent_off,
        amount_off=command.amount_off,
        currency=command.currency,
        duration=command.duration,
        duration_in_periods=command.duration_in_periods,
        max_redemptions=command.max_redemptions,
        redeem_by=command.redeem_by,
        plans=list(command.plans) if command.plans is not None else None,
    )
    audit.record(tx, actor, "coupon.created", "coupon", coupon_id)
    return get(tx, coupon_id)


def get(tx, coupon_id: str) -> dict:
    coupon = tx.one(Q["get"], id=coupon_id)
    if coupon is None:
        raise errors.NotFound("no such coupon")
    return coupon


def update(tx, actor, coupon_id: str, body: dict) -> dict:
    """Rename it, or make it (in)active (``coupon_update``): its terms never change."""
    if tx.scalar(Q["update"], id=coupon_id, name=body.get("name"), active=body.get("active")) is None:
        raise errors.NotFound("no such coupon")
    audit.record(tx, actor, "coupon.updated", "coupon", coupon_id, {"fields": sorted(body)})
    return get(tx, coupon_id)


def list_page(tx, page: paging.PageRequest) -> dict:
    paging.check_cursor(tx, Q["exists"], page, "coupon")
    rows = tx.all(Q["list"], after=page.starting_after, limit=page.limit + 1)
    return paging.page(rows, page, "/v1/coupons")


def apply_to_account(tx, actor, account_id: str, coupon_id: str) -> dict:
    """The coupon as the account's discount (its invoice items and every subscription without a discount of
    its own), replacing the account's live one."""
    return _apply(tx, actor, accounts.lock(tx, account_id), None, coupon_id)


def apply_to_subscription(tx, actor, subscription_id: str, coupon_id: str) -> dict:
    """The coupon as the subscription's discount, replacing its live one; 422 for an ended subscription."""
    account_id, _status = _subscription(tx, subscription_id)
    account = accounts.lock(tx, account_id)
    if _subscription(tx, subscription_id)[1] == "canceled":
        raise errors.UnprocessableState("the subscription has ended", code="already_canceled")
    return _apply(tx, actor, account, subscription_id, coupon_id)


def _subscription(tx, subscription_id: str) -> tuple[str, str]:
    row = tx.one(Q["live_subscription"], id=subscription_id)
    if row is None:
        raise errors.NotFound("no such subscription")
    return str(row["account_id"]), row["status"]


def _apply(tx, actor, account: dict, subscription_id: str | None, coupon_id: str) -> dict:
    coupon = tx.one(Q["get"], id=coupon_id)
    if coupon is None:
        raise errors.NotFound("no such coupon", details=[{"field": "coupon", "issue": "no such coupon"}])
    if coupon["currency"] is not None and coupon["currency"] != account["currency"]:
        raise errors.UnprocessableState(
            f"the coupon takes {coupon['currency']} off; the account is billed in {account['currency']}",
            code="currency_mismatch",
            details=[{"field": "coupon", "issue": f"must take an amount off in {account['currency']}"}],
        )
    if tx.scalar(Q["redeem"], id=coupon_id) is None:
        raise _not_redeemable(tx.one(Q["get"], id=coupon_id))
    scope = {"account_id": str(account["id"]), "subscription_id": subscription_id}
    tx.run(Q["remove_live"], **scope)
    discount_id = tx.scalar(Q["create_discount"], coupon_id=coupon_id, **scope)
    audit.record(tx, actor, "discount.created", "discount", discount_id, {"coupon": coupon_id, **scope})
    return get_discount(tx, discount_id)


def _not_redeemable(coupon: dict) -> errors.UnprocessableState:
    if not coupon["active"]:
        return errors.UnprocessableState("the coupon is inactive", code="coupon_inactive")
    if coupon["max_redemptions"] is not None and coupon["times_redeemed"] >= coupon["max_redemptions"]:
        return errors.UnprocessableState("the coupon was redeemed as often as it may be", code="coupon_max_redeemed")
    return errors.UnprocessableState("the coupon's redeem_by has passed", code="coupon_expired")


def remove_from_account(tx, actor, account_id: str) -> dict:
    """End the account's live discount now (invoices from now on are not discounted by it)."""
    account = accounts.lock(tx, account_id)
    return _remove(tx, actor, {"account_id": str(account["id"]), "subscription_id": None})


def remove_from_subscription(tx, actor, subscription_id: str) -> dict:
    account_id, _status = _subscription(tx, subscription_id)
    accounts.lock(tx, account_id)
    return _remove(tx, actor, {"account_id": account_id, "subscription_id": subscription_id})


def _remove(tx, actor, scope: dict) -> dict:
    removed = tx.scalar(Q["remove_live"], **scope)
    if removed is None:
        raise errors.UnprocessableState("there is no discount to remove", code="no_discount")
    audit.record(tx, actor, "discount.deleted", "discount", removed)
    return get_discount(tx, removed)


def get_discount(tx, discount_id: str) -> dict:
    discount = tx.one(Q["get_discount"], id=discount_id)
    discount["coupon"] = get(tx, str(discount["coupon"]))
    return discount
