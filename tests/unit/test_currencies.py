import json
import re
from pathlib import Path

import pytest

from chalicelib import errors, validation
from chalicelib.billing import currencies

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"  # kept current by test_openapi
EXCLUDED = ["XAU", "XAG", "XPT", "XPD", "XBA", "XBB", "XBC", "XBD", "XDR", "XSU", "XUA", "XAD", "XTS", "XXX"]


@pytest.mark.parametrize(
    ("code", "places"),
    [("JPY", 0), ("KRW", 0), ("CLP", 0), ("XOF", 0), ("USD", 2), ("EUR", 2), ("GBP", 2), ("XCD", 2), ("BHD", 3)]
    + [("KWD", 3), ("JOD", 3), ("OMR", 3), ("TND", 3), ("LYD", 3), ("IQD", 3), ("CLF", 4), ("UYW", 4)],
)
def test_each_currency_has_its_iso_4217_minor_unit_exponent(code, places):
    assert currencies.is_known(code)
    assert currencies.exponent(code) == places


def test_the_table_holds_only_three_capital_codes_with_integer_exponents_each_listed_once():
    listed = [code for codes in currencies._CODES_BY_EXPONENT.values() for code in codes.split()]

    assert len(listed) == len(set(listed)) == len(currencies.EXPONENTS)
    assert all(re.fullmatch(r"[A-Z]{3}", code) for code in listed)
    assert {type(places) for places in currencies.EXPONENTS.values()} == {int}
    assert set(currencies.EXPONENTS.values()) == {0, 2, 3, 4}
    assert len(currencies.EXPONENTS) > 150  # list one has about 180 codes, less the excluded units


def test_the_table_cannot_be_changed_at_run_time():
    with pytest.raises(TypeError):
        currencies.EXPONENTS["QQQ"] = 2


@pytest.mark.parametrize("code", ["QQQ", "usd", "Usd", "US", "USDD", " USD", "", None, 840, 2.0, ["USD"]])
def test_anything_that_is_not_an_iso_4217_code_is_unknown(code):
    assert not currencies.is_known(code)
    with pytest.raises(currencies.UnknownCurrency, match="is not an ISO 4217 currency code"):
        currencies.exponent(code)


@pytest.mark.parametrize("code", ["ANG", "HRK", "SLL", "CUC", "ZWL", "VEF", "DEM"])
def test_withdrawn_codes_are_unknown(code):
    assert not currencies.is_known(code)


def test_metals_units_of_account_and_testing_codes_are_excluded_and_the_docstring_says_so():
    for code in EXCLUDED:
        assert not currencies.is_known(code), code
        assert code in currencies.__doc__, code


def test_the_error_for_an_unknown_code_names_it_and_never_echoes_a_long_value():
    with pytest.raises(currencies.UnknownCurrency) as short:
        currencies.exponent("QQQ")
    with pytest.raises(currencies.UnknownCurrency) as long:
        currencies.exponent("Q" * 100_000)

    assert str(short.value) == "'QQQ' is not an ISO 4217 currency code"
    assert len(str(long.value)) < 60
    assert isinstance(short.value, LookupError)


@pytest.mark.parametrize("schema", ["account_create", "plan_create"])
def test_an_unknown_currency_is_a_field_error_on_every_request_that_takes_one(schema):
    body = {
        "account_create": {"email": "a@b.test", "name": "A", "currency": "QQQ"},
        "plan_create": {"code": "pro", "name": "Pro", "interval": "month", "amount": 100, "currency": "QQQ"},
    }[schema]

    with pytest.raises(errors.InvalidRequest) as refused:
        validation.validate(schema, body)

    assert refused.value.details == [{"field": "currency", "issue": "is not an ISO 4217 currency code"}]
    assert validation.validate(schema, {**body, "currency": "JPY"})["currency"] == "JPY"


def _currency_fields(node, path=()):
    """(path, schema) of every property named currency anywhere in a JSON Schema or OpenAPI document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict) and "currency" in value:
                yield ".".join(map(str, path)), value["currency"]
            yield from _currency_fields(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _currency_fields(value, (*path, i))


def test_every_request_schema_field_that_takes_a_currency_checks_it_against_iso_4217():
    request_schemas = [p for p in validation.SCHEMA_DIR.glob("*.json") if not p.stem.startswith("event_")]
    found = [
        (p.stem, where, spec) for p in request_schemas for where, spec in _currency_fields(json.loads(p.read_text()))
    ]

    assert {name for name, _where, _spec in found} >= {"account_create", "plan_create"}
    for name, where, spec in found:
        assert spec.get("format") == validation.CURRENCY_FORMAT, (name, where)
        assert spec.get("pattern") == "^[A-Z]{3}$", (name, where)


def test_the_openapi_document_documents_the_currency_format_in_requests_and_responses():
    found = list(_currency_fields(json.loads(DOCUMENT.read_text())))

    assert any(where.startswith("paths") for where, _spec in found)
    assert any(where.startswith("components") for where, _spec in found)
    for where, spec in found:
        assert spec.get("format") == validation.CURRENCY_FORMAT, where
