"""Prices per currency, pure: which price an account's currency picks, and which plans may be made."""

import pytest

from chalicelib import errors, validation
from chalicelib.billing import currency_prices
from chalicelib.billing.currencies import format_amount
from chalicelib.billing.periods import Subscription

METERED = {
    "metric": "api_calls",
    "aggregation": "sum",
    "unit_amount": 2,
    "currency_options": {"EUR": {"unit_amount": 3}, "JPY": {"unit_amount": 1}},
}
TIERED = {
    "metric": "storage",
    "aggregation": "max",
    "tiers": [{"up_to": 10, "unit_amount": 0}, {"up_to": None, "unit_amount": 100}],
    "currency_options": {
        "EUR": {"tiers": [{"up_to": 10, "unit_amount": 0}, {"up_to": None, "unit_amount": 90}]},
        "JPY": {"tiers": [{"up_to": 10, "unit_amount": 0}, {"up_to": None, "unit_amount": 150}]},
    },
}
PLAN = {
    "amount": 4900,
    "currency": "USD",
    "amounts": {"USD": 4900, "EUR": 4500, "JPY": 7000},
    "usage_prices": [METERED, TIERED],
}


def test_the_default_currency_picks_the_plans_own_price_without_its_currency_options():
    price = currency_prices.in_currency(PLAN, "USD")

    assert price == {
        "amount": 4900,
        "currency": "USD",
        "usage_prices": [
            {"metric": "api_calls", "aggregation": "sum", "unit_amount": 2},
            {"metric": "storage", "aggregation": "max", "tiers": TIERED["tiers"]},
        ],
    }


def test_another_currency_picks_its_amount_and_each_usage_prices_money_fields_in_it():
    price = currency_prices.in_currency(PLAN, "EUR")

    assert price == {
        "amount": 4500,
        "currency": "EUR",
        "usage_prices": [
            {"metric": "api_calls", "aggregation": "sum", "unit_amount": 3},
            {"metric": "storage", "aggregation": "max", "tiers": TIERED["currency_options"]["EUR"]["tiers"]},
        ],
    }


def test_a_plan_made_before_prices_per_currency_has_its_one_price_only():
    legacy = {"amount": 900, "currency": "EUR", "amounts": {}, "usage_prices": []}

    assert currency_prices.in_currency(legacy, "EUR") == {"amount": 900, "currency": "EUR", "usage_prices": []}
    with pytest.raises(errors.UnprocessableState) as refused:
        currency_prices.in_currency(legacy, "USD")
    assert refused.value.code == "currency_not_offered"
    assert str(refused.value) == "the plan has no price in USD (it is priced in EUR)"


def test_a_currency_the_plan_has_no_price_in_is_currency_not_offered():
    with pytest.raises(errors.UnprocessableState) as refused:
        currency_prices.in_currency(PLAN, "KWD")

    assert refused.value.code == "currency_not_offered"
    assert str(refused.value) == "the plan has no price in KWD (it is priced in EUR, JPY, USD)"


def test_a_subscription_state_row_is_billed_at_the_price_in_its_accounts_currency():
    row = {
        **{name: None for name in Subscription.__dataclass_fields__},
        **PLAN,
        "id": "s",
        "account_id": "a",
        "plan_id": "p",
        "quantity": 2,
        "pending_prorations": [],
        "account_currency": "JPY",
    }

    sub = Subscription.of(row)

    assert (sub.amount, sub.currency, sub.usage_prices[0]["unit_amount"]) == (7000, "JPY", 1)
    assert sub.paid_fee == 14000  # 7000 yen x 2 seats, not 4900 x 2


def test_the_default_currencys_amount_may_be_given_in_amounts_instead_of_amount():
    assert currency_prices.plan_amounts(None, "USD", {"USD": 4900, "EUR": 4500}, []) == {"USD": 4900, "EUR": 4500}
    assert currency_prices.plan_amounts(4900, "USD", {"EUR": 4500}, []) == {"USD": 4900, "EUR": 4500}
    assert currency_prices.plan_amounts(4900, "USD", {}, []) == {"USD": 4900}


@pytest.mark.parametrize(
    ("amount", "amounts", "usage_prices", "details"),
    [
        (None, {"EUR": 4500}, [], [("amount", "is required, unless amounts gives the USD price")]),
        (4900, {"USD": 4800}, [], [("amounts.USD", "must equal amount, the price in currency")]),
        (
            4900,
            {"EUR": 4500, "JPY": 7000},
            [{**METERED, "currency_options": {"EUR": {"unit_amount": 3}}}],
            [("usage_prices.0.currency_options.JPY", "is required: the plan has a JPY price (amounts)")],
        ),
        (
            4900,
            {"EUR": 4500},
            [{**METERED, "currency_options": {"EUR": {"unit_amount": 3}, "GBP": {"unit_amount": 2}}}],
            [("usage_prices.0.currency_options.GBP", "the plan has no GBP price: add it to amounts")],
        ),
        (
            4900,
            {},
            [{**METERED, "currency_options": {"USD": {"unit_amount": 3}}}],
            [("usage_prices.0.currency_options.USD", "is the price's own currency: set its fields directly")],
        ),
        (
            4900,
            {"EUR": 4500},
            [{**METERED, "currency_options": {"EUR": {"tiers": TIERED["tiers"]}}}],
            [
                ("usage_prices.0.currency_options.EUR.unit_amount", "is required: the price has unit_amount"),
                ("usage_prices.0.currency_options.EUR.tiers", "is not allowed: the price has no tiers"),
            ],
        ),
        (
            4900,
            {"EUR": 4500},
            [{**TIERED, "currency_options": {"EUR": {"tiers": [{"up_to": None, "unit_amount": 90}]}}}],
            [("usage_prices.0.currency_options.EUR.tiers", "must have the price's tiers: the same up_to and fields")],
        ),
    ],
)
def test_a_plan_whose_prices_per_currency_do_not_add_up_is_refused_naming_each_field(
    amount, amounts, usage_prices, details
):
    with pytest.raises(errors.InvalidRequest) as refused:
        currency_prices.plan_amounts(amount, "USD", amounts, usage_prices)

    assert [(d["field"], d["issue"]) for d in refused.value.details] == details


def test_the_schemas_currency_options_take_exactly_the_money_fields_as_the_usage_price_defines_them():
    usage_price = validation.schema("plan_create")["properties"]["usage_prices"]["items"]["properties"]
    option = usage_price["currency_options"]["additionalProperties"]["properties"]

    assert tuple(option) == currency_prices.MONEY_FIELDS
    assert all(option[name] == usage_price[name] for name in currency_prices.MONEY_FIELDS)


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [(1000, "JPY", "JPY 1,000"), (1234, "KWD", "KWD 1.234"), (-1234, "KWD", "-KWD 1.234"), (5, "KWD", "KWD 0.005")],
)
def test_zero_and_three_decimal_currencies_are_shown_with_their_own_exponent(amount, currency, shown):
    assert format_amount(amount, currency) == shown


def test_a_usage_prices_money_in_another_currency_follows_the_prices_own_rules():
    fee = {"metric": "pay", "aggregation": "sum", "model": "percentage", "field": "amount", "rate": "2"}
    price = {
        **fee,
        "min_amount": 5,
        "max_amount": 10,
        "currency_options": {"EUR": {"min_amount": 20, "max_amount": 10}},
    }

    with pytest.raises(errors.InvalidRequest) as refused:
        currency_prices.plan_amounts(100, "USD", {"EUR": 90}, [price])

    assert refused.value.details == [
        {"field": "usage_prices.0.currency_options.EUR.min_amount", "issue": "must not exceed max_amount"}
    ]
