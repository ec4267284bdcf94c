"""Every validation issue is a short sentence from the schema, never a copy of the offending value."""

import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib import errors, validation

MARK = "VALUE\u00a7"  # every generated string value starts with it; no issue or field may contain it
REQUEST_SCHEMAS = sorted(p.stem for p in validation.SCHEMA_DIR.glob("*.json") if not p.stem.startswith("event_"))
ALL_SCHEMAS = sorted(p.stem for p in validation.SCHEMA_DIR.glob("*.json"))
FALLBACK = "is not valid"
# How jsonschema's own messages read (they start with the repr of the value): none of ours may.
JSONSCHEMA_WORDING = (
    "is not of type",
    "is too long",
    "is too short",
    "was expected",
    "is not valid under",
    "does not match",
)


def _details(schema: str, body) -> list[dict]:
    with pytest.raises(errors.InvalidRequest) as refused:
        validation.validate(schema, body)
    return refused.value.details


def _event(n: int, **fields) -> dict:
    return {
        "event_id": f"{MARK}{n}",
        "account_id": "3f1c7a52-8a51-4f43-9a43-5b0b1d7a9e10",
        "metric": "api_calls",
        "quantity": 1,
        "timestamp": "2026-01-01T00:00:00Z",
        **fields,
    }


def test_a_batch_of_101_events_is_answered_with_at_most_100_events_and_not_the_batch():
    batch = {"events": [_event(n, properties={"note": MARK + "x" * 400}) for n in range(101)]}
    assert len(json.dumps(batch)) > 50_000

    details = _details("usage_event_batch", batch)

    assert details == [{"field": "events", "issue": "at most 100 events"}]


def test_a_100_kb_string_gets_an_issue_under_200_characters_that_does_not_contain_it():
    huge = MARK + "x" * 100_000

    account = _details("account_create", {"email": "a@b.test", "name": huge, "currency": "USD"})
    event = _details("usage_event", _event(1, event_id=huge))

    assert account == [{"field": "name", "issue": "at most 200 characters"}]
    assert event == [{"field": "event_id", "issue": "at most 255 characters"}]


def test_an_empty_batch_and_an_empty_name_say_at_least_one_in_the_singular():
    assert _details("usage_event_batch", {"events": []}) == [{"field": "events", "issue": "at least 1 event"}]
    assert _details("account_create", {"email": "a@b.test", "name": "", "currency": "USD"}) == [
        {"field": "name", "issue": "at least 1 character"}
    ]


@pytest.mark.parametrize(
    ("schema", "body", "expected"),
    [
        (
            "plan_create",
            {"code": "pro", "name": "P", "interval": "month", "amount": 1.5, "currency": "USD"},
            {"field": "amount", "issue": "must be an integer"},
        ),
        (
            "plan_create",
            {"code": "pro", "name": "P", "interval": "month", "amount": -1, "currency": "USD"},
            {"field": "amount", "issue": "must be at least 0"},
        ),
        (
            "plan_create",
            {"code": "pro", "name": "P", "interval": "month", "amount": 10**12, "currency": "USD"},
            {"field": "amount", "issue": "must be at most 999999999999"},
        ),
        (
            "plan_create",
            {"code": "pro", "name": "P", "interval": "hourly", "amount": 1, "currency": "USD"},
            {"field": "interval", "issue": "must be one of day, week, month, year"},
        ),
        (
            "plan_create",
            {"code": "Pro!", "name": "P", "interval": "month", "amount": 1, "currency": "USD"},
            {"field": "code", "issue": "must match ^[a-z0-9][a-z0-9_-]{0,63}$ (lower-case letters, digits, - and _)"},
        ),
        (
            "plan_create",
            {"code": "pro", "name": "P", "interval": "month", "amount": 1, "currency": "USD", "features": "x"},
            {"field": "features", "issue": "must be an object"},
        ),
        (
            "plan_create",
            {"code": "pro", "name": "P", "interval": "month", "amount": 1, "currency": "USD"}
            | {"features": {str(n): n for n in range(101)}},
            {"field": "features", "issue": "at most 100 keys"},
        ),
        (
            "plan_create",
            {"code": "pro", "name": "P", "interval": "month", "amount": 1, "currency": "USD"}
            | {"usage_prices": [{"metric": "m", "aggregation": "sum"}]},
            {"field": "usage_prices.0", "issue": "must have exactly one of unit_amount or tiers"},
        ),
        (
            "plan_create",
            {"code": "pro", "name": "P", "interval": "month", "amount": 1, "currency": "USD"}
            | {"usage_prices": [{"metric": "m", "aggregation": "sum", "unit_amount": 1, "tiers": []}]},
            {"field": "usage_prices.0.tiers", "issue": "at least 1 tier"},
        ),
        (
            "plan_create",
            {"code": "pro", "name": "P", "interval": "month", "amount": 1, "currency": "USD"}
            | {"usage_prices": [{"metric": "m", "aggregation": "sum", "unit_amount": 1}] * 21},
            {"field": "usage_prices", "issue": "at most 20 usage prices"},
        ),
        (
            "plan_create",
            {"code": "pro", "name": "P", "interval": "month", "amount": 1, "currency": "USD"}
            | {"usage_prices": [{"metric": "m", "aggregation": "sum", "tiers": [{"up_to": 0, "unit_amount": 1}]}]},
            {"field": "usage_prices.0.tiers.0.up_to", "issue": "must be at least 1"},
        ),
        (
            "plan_create",
            {"code": "pro", "name": "P", "interval": "month", "amount": 1, "currency": "USD"}
            | {"usage_prices": [{"metric": "m", "aggregation": "sum", "tiers": [{"up_to": "1", "unit_amount": 1}]}]},
            {"field": "usage_prices.0.tiers.0.up_to", "issue": "must be an integer or null"},
        ),
        (
            "account_create",
            {"email": "a@b.test", "name": "A", "currency": "QQQ"},
            {"field": "currency", "issue": "is not an ISO 4217 currency code"},
        ),
        (
            "account_create",
            {"email": "a@b.test", "name": "A", "currency": "USD", "metadata": {"k": 1}},
            {"field": "metadata.k", "issue": "must be a string"},
        ),
        (
            "account_create",
            {"email": "a@b.test", "name": "A", "currency": "USD", "colour": MARK},
            {"field": "colour", "issue": "is not a known field"},
        ),
        ("account_create", {"email": "a@b.test", "currency": "USD"}, {"field": "name", "issue": "is required"}),
        ("usage_event", [MARK], {"field": "(body)", "issue": "must be an object"}),
        (
            "subscription_cancel",
            {"at_period_end": MARK},
            {"field": "at_period_end", "issue": "must be a boolean"},
        ),
    ],
)
def test_each_kind_of_problem_gets_its_own_short_sentence(schema, body, expected):
    assert expected in _details(schema, body)


def test_a_lowercase_currency_is_told_both_the_shape_and_that_it_is_no_iso_code():
    details = _details("account_create", {"email": "a@b.test", "name": "A", "currency": "usd"})

    assert details == [
        {"field": "currency", "issue": "must match ^[A-Z]{3}$ (ISO 4217 code, upper case)"},
        {"field": "currency", "issue": "is not an ISO 4217 currency code"},
    ]


def test_many_unknown_fields_are_named_briefly_and_long_names_are_cut():
    body = {"email": "a@b.test", "name": "A", "currency": "USD"} | {f"extra{n}": 1 for n in range(40)}
    long_key = "k" * 10_000

    many = _details("account_create", body)
    long = _details("account_create", {"email": "a@b.test", "name": "A", "currency": "USD", long_key: 1})
    metadata = _details(
        "account_create", {"email": "a@b.test", "name": "A", "currency": "USD", "metadata": {long_key: 1}}
    )

    assert many == [
        {"field": "(body)", "issue": "unknown fields: extra0, extra1, extra10, extra11, extra12 and 35 more"}
    ]
    assert long[0]["issue"] == "is not a known field"
    assert len(long[0]["field"]) <= validation.MAX_NAME
    assert metadata[0]["issue"] == "must be a string"
    assert len(metadata[0]["field"]) <= len("metadata.") + validation.MAX_NAME


def test_an_unstorable_value_under_a_long_key_names_a_cut_field():
    raw = json.dumps({"email": "a@b.test", "metadata": {"k" * 10_000: "a\u0000b"}}).encode()

    with pytest.raises(errors.InvalidRequest) as refused:
        validation.parse_json_body(raw, "application/json")

    (detail,) = refused.value.details
    assert detail["issue"] == "strings may not contain NUL characters"
    assert len(detail["field"]) <= len("metadata.") + validation.MAX_NAME


def test_a_duplicated_long_key_is_reported_cut():
    key = "k" * 10_000
    raw = f'{{"{key}": 1, "{key}": 2}}'.encode()

    with pytest.raises(errors.InvalidRequest) as refused:
        validation.parse_json_body(raw, "application/json")

    assert "duplicate key" in str(refused.value)
    assert len(str(refused.value)) < 200


# --- every keyword jsonschema can fail on, and every keyword our schemas use ---------------

# keyword -> (a schema using it, an instance that fails it, the expected sentence)
KINDS = {
    "type": ({"type": "integer"}, MARK, "must be an integer"),
    "enum": ({"enum": list("abcdefghijkl")}, MARK, "must be one of the 12 allowed values"),
    "const": ({"const": "subscription.created"}, MARK, "must be subscription.created"),
    "multipleOf": ({"multipleOf": 5}, 7, "must be a multiple of 5"),
    "minimum": ({"minimum": 1}, 0, "must be at least 1"),
    "maximum": ({"maximum": 9}, 10, "must be at most 9"),
    "exclusiveMinimum": ({"exclusiveMinimum": 0}, 0, "must be greater than 0"),
    "exclusiveMaximum": ({"exclusiveMaximum": 9}, 9, "must be less than 9"),
    "minLength": ({"minLength": 5}, "VAL", "at least 5 characters"),
    "maxLength": ({"maxLength": 5}, MARK * 100, "at most 5 characters"),
    "pattern": ({"pattern": "^[a-z]+$"}, MARK, "must match ^[a-z]+$"),
    "format": ({"format": "uuid"}, MARK, "must be a UUID"),
    "minItems": ({"properties": {"events": {"minItems": 2}}}, {"events": [MARK]}, "at least 2 events"),
    "maxItems": ({"maxItems": 1}, [MARK, MARK], "at most 1 item"),
    "uniqueItems": ({"uniqueItems": True}, [MARK, MARK], "must not contain duplicate items"),
    "contains": ({"contains": {"type": "integer"}}, [MARK], "must contain at least 1 matching item"),
    "items": ({"prefixItems": [{}], "items": False}, [MARK, MARK], "at most 1 item"),
    "unevaluatedItems": ({"prefixItems": [{}], "unevaluatedItems": False}, [MARK, MARK], "at most 1 item"),
    "minProperties": ({"minProperties": 2}, {"a": MARK}, "at least 2 keys"),
    "maxProperties": ({"maxProperties": 1}, {"a": MARK, "b": MARK}, "at most 1 key"),
    "required": ({"required": ["name"]}, {"a": MARK}, "is required"),
    "dependentRequired": ({"dependentRequired": {"a": ["b"]}}, {"a": MARK}, "is required when a is present"),
    "additionalProperties": ({"additionalProperties": False}, {"x": MARK}, "is not a known field"),
    "unevaluatedProperties": ({"unevaluatedProperties": False}, {"x": MARK}, "is not a known field"),
    "oneOf": ({"oneOf": [{"type": "integer"}, {"type": "boolean"}]}, MARK, "must be an integer or a boolean"),
    "anyOf": ({"anyOf": [{"required": ["a"]}, {"required": ["b"]}]}, {"c": MARK}, "must have at least one of a or b"),
    "not": ({"not": {"type": "string"}}, MARK, "is in a form that is not allowed here"),
}


def test_the_table_below_covers_every_keyword_jsonschema_can_fail_on():
    own_errors = set(jsonschema.Draft202012Validator.VALIDATORS) - validation.APPLICATORS

    assert set(KINDS) == own_errors


@pytest.mark.parametrize("keyword", sorted(KINDS))
def test_every_kind_of_jsonschema_error_gets_a_specific_sentence_without_the_value(keyword):
    schema, instance, expected = KINDS[keyword]
    checker = validation._validator("account_create").format_checker
    (problem,) = jsonschema.Draft202012Validator(schema, format_checker=checker).iter_errors(instance)

    detail = validation._detail(problem)

    assert problem.validator == keyword
    assert detail["issue"] == expected
    assert MARK not in json.dumps(detail)


def test_the_false_schema_and_a_oneof_matched_twice_get_sentences_too():
    (false,) = jsonschema.Draft202012Validator(False).iter_errors({"a": MARK})
    (twice,) = jsonschema.Draft202012Validator({"oneOf": [{"type": "string"}, {"minLength": 1}]}).iter_errors(MARK)

    assert validation._detail(false) == {"field": "(body)", "issue": "is not allowed here"}
    assert (
        validation._detail(twice)["issue"] == "matches more than one of the 2 allowed forms; it must match exactly one"
    )


def test_an_issue_about_keys_says_so():
    (problem,) = jsonschema.Draft202012Validator({"propertyNames": {"maxLength": 3}}).iter_errors({MARK: 1})

    assert validation._detail(problem) == {"field": "(body)", "issue": "keys: at most 3 characters"}


def _keywords(node, path=()):
    """(path, keyword, value, the schema holding it) for every assertion keyword in a schema."""
    if not isinstance(node, dict):
        return
    for keyword, value in node.items():
        if keyword in jsonschema.Draft202012Validator.VALIDATORS and keyword not in validation.APPLICATORS:
            yield path, keyword, value, node
    for name, sub in node.get("properties", {}).items():
        yield from _keywords(sub, (*path, name))
    for keyword in ("items", "additionalProperties", "contains", "not"):
        yield from _keywords(node.get(keyword), (*path, 0) if keyword == "items" else path)
    for keyword in ("oneOf", "anyOf", "allOf"):
        for sub in node.get(keyword, []):
            yield from _keywords(sub, path)


@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_every_keyword_in_every_schema_reads_as_a_short_sentence(name):
    found = list(_keywords(validation.schema(name)))
    assert found

    for path, keyword, value, holder in found:
        sentence = validation._sentence(keyword, value, holder, list(path))
        assert sentence != FALLBACK, (name, path, keyword)
        assert 0 < len(sentence) <= validation.MAX_ISSUE, (name, path, keyword, sentence)
        assert not any(phrase in sentence for phrase in JSONSCHEMA_WORDING), (name, path, keyword, sentence)


def test_an_issue_longer_than_the_cap_is_cut():
    sentence = validation._sentence("pattern", "^" + "a" * 300 + "$", {"description": "d" * 300}, ["code"])

    assert len(sentence) == validation.MAX_ISSUE
    assert sentence.endswith("\u2026")


# --- any body at all -------------------------------------------------------------------------

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**15), max_value=10**15)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=300).map(lambda text: MARK + text),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _bodies(name: str):
    schema = validation.schema(name)
    names = list(schema.get("properties", {}))
    keys = st.sampled_from(names) | st.text(max_size=12) if names else st.text(max_size=12)
    objects = st.dictionaries(keys, _values, max_size=8)
    if name == "usage_event_batch":
        event_keys = st.sampled_from(list(_event(0))) | st.text(max_size=8)
        events = st.lists(st.dictionaries(event_keys, _values, max_size=7), max_size=110)
        return st.fixed_dictionaries({"events": events}) | objects
    return objects | _values


@pytest.mark.parametrize("name", REQUEST_SCHEMAS)
def test_any_body_gets_short_issues_that_never_contain_a_value_it_sent(name):
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
    @given(body=_bodies(name))
    def check(body):
        try:
            validation.validate(name, body)
        except errors.InvalidRequest as refused:
            assert refused.details
            for detail in refused.details:
                assert set(detail) == {"field", "issue"}
                assert 0 < len(detail["issue"]) <= validation.MAX_ISSUE, detail
                assert detail["issue"] != FALLBACK, detail
                assert MARK not in detail["issue"] and MARK not in detail["field"], detail

    check()
