from fractions import Fraction

import pytest

from chalicelib import errors
from chalicelib.billing.usage_charges import aggregate, check, lines, price

TOTALS = {"sum": 1500, "count": 7, "max": 400}
TIERS = [
    {"up_to": 1000, "unit_amount": 5},
    {"up_to": 5000, "unit_amount": 3},
    {"up_to": None, "unit_amount": 1},
]


def _one(quantity, **group):
    return [{"group": None, "quantity": quantity, **group}]


@pytest.mark.parametrize("aggregation,expected", [("sum", 1500), ("count", 7), ("max", 400)])
def test_each_counter_aggregation_picks_its_total(aggregation, expected):
    assert aggregate(TOTALS, aggregation) == expected


def test_an_unknown_counter_aggregation_is_an_error():
    with pytest.raises(ValueError):
        aggregate(TOTALS, "avg")


def test_per_unit_price_multiplies_in_minor_units():
    assert price(1500, {"unit_amount": 3}) == 4500


def test_graduated_tiers_price_each_unit_at_its_own_tier():
    tiers = {"tiers": TIERS}
    assert price(0, tiers) == 0
    assert price(1000, tiers) == 5000
    assert price(1001, tiers) == 5003
    assert price(6000, tiers) == 5000 + 4000 * 3 + 1000 * 1


def test_a_volume_price_bills_the_whole_quantity_at_the_tier_it_reaches():
    graduated = {"model": "graduated", "tiers": TIERS}
    volume = {"model": "volume", "tiers": TIERS}
    assert price(6000, graduated) == 5000 + 4000 * 3 + 1000 * 1
    assert price(6000, volume) == 6000 * 1
    assert price(1000, volume) == 1000 * 5
    assert price(1001, volume) == 1001 * 3


def test_flat_amounts_are_charged_per_tier_entered_when_graduated_and_once_when_volume():
    tiers = [{"up_to": 10, "unit_amount": 2, "flat_amount": 100}, {"up_to": None, "unit_amount": 1, "flat_amount": 50}]
    assert price(12, {"model": "graduated", "tiers": tiers}) == 100 + 20 + 50 + 2
    assert price(12, {"model": "volume", "tiers": tiers}) == 50 + 12
    assert price(10, {"model": "graduated", "tiers": tiers}) == 120
    assert price(0, {"model": "volume", "tiers": tiers}) == 0


def test_a_package_price_bills_started_packages_after_the_free_units():
    package = {"model": "package", "package_size": 100, "unit_amount": 500, "free_units": 250}
    assert price(250, package) == 0
    assert price(251, package) == 500
    assert price(350, package) == 500
    assert price(351, package) == 1000


def test_a_percentage_price_rounds_its_exact_per_event_fees_once_half_to_even():
    usage_price = {"metric": "payments", "aggregation": "sum", "model": "percentage", "rate": "2.5", "field": "amount"}
    # 1234.5 hundredths of a minor unit: 12.345 rounds to 12; 1250 hundredths: 12.5 rounds to 12 (even).
    (line,) = lines([usage_price], [_one(1000, fees_numerator="1234.5", fees_denominator="100")])
    assert (line.quantity, line.amount) == (1000, 12)
    (line,) = lines([usage_price], [_one(500, fees_numerator="1250", fees_denominator="100")])
    assert line.amount == 12


def test_a_time_weighted_quantity_is_priced_exactly_and_rounded_once():
    usage_price = {"metric": "seats", "aggregation": "weighted_sum", "unit_amount": 1000}
    (line,) = lines([usage_price], [[{"group": None, "numerator": "5", "denominator": "2"}]])
    assert (line.quantity, line.amount) == (2, 2500)
    assert price(Fraction(5, 2), usage_price) == 2500


def test_lines_cover_every_metered_price_with_integer_amounts():
    usage_prices = [
        {"metric": "api_calls", "aggregation": "sum", "unit_amount": 2},
        {"metric": "seats", "aggregation": "max", "unit_amount": 500},
        {"metric": "exports", "aggregation": "count", "unit_amount": 10},
    ]
    result = lines(usage_prices, [_one(1500), _one(4), []])
    assert [(line.metric, line.quantity, line.amount) for line in result] == [
        ("api_calls", 1500, 3000),
        ("seats", 4, 2000),
        ("exports", 0, 0),
    ]
    assert all(isinstance(line.amount, int) for line in result)


def test_a_grouped_price_bills_one_line_per_value_and_names_it():
    usage_price = {"metric": "api_calls", "aggregation": "sum", "unit_amount": 2, "group_by": "region"}
    usage = [[{"group": None, "quantity": 1}, {"group": "us", "quantity": 3}, {"group": "eu", "quantity": 5}]]
    result = lines([usage_price], usage)
    assert [(line.description, line.amount) for line in result] == [
        ("api_calls (sum, region: eu)", 10),
        ("api_calls (sum, region: us)", 6),
        ("api_calls (sum, no region)", 2),
    ]


def _refused(usage_price: dict) -> list[dict]:
    with pytest.raises(errors.InvalidRequest) as refused:
        check([{"metric": "m", "aggregation": "sum", **usage_price}])
    assert refused.value.code == "invalid_usage_price"
    return refused.value.details


@pytest.mark.parametrize(
    "usage_price,field",
    [
        ({"model": "package", "unit_amount": 5}, "usage_prices.0.package_size"),
        ({"model": "volume", "unit_amount": 5}, "usage_prices.0.tiers"),
        ({"model": "per_unit", "unit_amount": 5, "package_size": 3}, "usage_prices.0.package_size"),
        ({"model": "percentage", "rate": "2"}, "usage_prices.0.field"),
        ({"model": "percentage", "rate": "101", "field": "amount"}, "usage_prices.0.rate"),
        (
            {"model": "percentage", "rate": "1", "field": "a", "min_amount": 9, "max_amount": 3},
            "usage_prices.0.min_amount",
        ),
        ({"model": "percentage", "rate": "1", "field": "a", "aggregation": "max"}, "usage_prices.0.aggregation"),
        ({"model": "volume", "tiers": [{"up_to": 5, "unit_amount": 1}]}, "usage_prices.0.tiers"),
        ({"aggregation": "unique_count", "unit_amount": 1}, "usage_prices.0.field"),
        ({"unit_amount": 1, "group_by": "region", "hard_cap": 10}, "usage_prices.0.hard_cap"),
        ({"aggregation": "latest", "unit_amount": 1, "hard_cap": 10}, "usage_prices.0.hard_cap"),
        ({}, "usage_prices.0"),
    ],
)
def test_a_usage_price_missing_its_models_fields_or_mixing_another_models_is_refused_naming_the_field(
    usage_price, field
):
    assert field in [detail["field"] for detail in _refused(usage_price)]


def test_valid_usage_prices_of_every_model_pass():
    check(
        [
            {"metric": "a", "aggregation": "sum", "unit_amount": 1, "hard_cap": 5},
            {"metric": "a", "aggregation": "sum", "tiers": TIERS},
            {"metric": "a", "aggregation": "latest", "model": "volume", "tiers": TIERS, "field": "gb"},
            {"metric": "a", "aggregation": "count", "model": "package", "package_size": 10, "unit_amount": 1},
            {"metric": "p", "aggregation": "sum", "model": "percentage", "rate": "2.5", "field": "amount"},
            {"metric": "s", "aggregation": "weighted_sum", "unit_amount": 1, "filters": {"region": ["eu", "us"]}},
        ]
    )
