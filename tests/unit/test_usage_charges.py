import pytest

from chalicelib.billing.usage_charges import aggregate, lines, price

TOTALS = {"sum": 1500, "count": 7, "max": 400}


@pytest.mark.parametrize("aggregation,expected", [("sum", 1500), ("count", 7), ("max", 400)])
def test_each_aggregation_type_picks_its_total(aggregation, expected):
    assert aggregate(TOTALS, aggregation) == expected


def test_unknown_aggregation_is_an_error():
    with pytest.raises(ValueError):
        aggregate(TOTALS, "avg")


def test_per_unit_price_multiplies_in_minor_units():
    assert price(1500, {"unit_amount": 3}) == 4500


def test_graduated_tiers_price_each_unit_at_its_own_tier():
    tiers = {
        "tiers": [
            {"up_to": 1000, "unit_amount": 5},
            {"up_to": 5000, "unit_amount": 3},
            {"up_to": None, "unit_amount": 1},
        ]
    }
    assert price(0, tiers) == 0
    assert price(1000, tiers) == 5000
    assert price(1001, tiers) == 5003
    assert price(6000, tiers) == 5000 + 4000 * 3 + 1000 * 1


def test_lines_cover_every_metered_price_with_integer_amounts():
    usage_prices = [
        {"metric": "api_calls", "aggregation": "sum", "unit_amount": 2},
        {"metric": "seats", "aggregation": "max", "unit_amount": 500},
        {"metric": "exports", "aggregation": "count", "unit_amount": 10},
    ]
    result = lines(usage_prices, {"api_calls": TOTALS, "seats": {"sum": 9, "count": 3, "max": 4}})
    assert [(line.metric, line.quantity, line.amount) for line in result] == [
        ("api_calls", 1500, 3000),
        ("seats", 4, 2000),
        ("exports", 0, 0),
    ]
    assert all(isinstance(line.amount, int) for line in result)
