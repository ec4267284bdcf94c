"""The fast validator (fastjsonschema) only ever saves time: whatever it accepts, jsonschema accepts too,
and whatever it refuses is judged, and explained, by jsonschema exactly as before."""

import subprocess
import sys
import uuid
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib import errors, validation

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = sorted(p.stem for p in validation.SCHEMA_DIR.glob("*.json"))
FAST = [name for name in SCHEMAS if validation._fast(name) is not None]
# Values that some validator or other gets wrong: floats that look whole, booleans that are ints,
# numbers past every bound, a valid-looking text with a final newline, digits that are not ASCII,
# UUIDs in other spellings, currencies in the wrong case, containers where scalars belong.
NUMBERS = [None, True, False, 0, 1, -1, 1.0, 0.0, 2.5, -0.0, 10**12, 10**12 - 1, 10**30, 1e300]
TEXTS = ["", "a", "\n", "USD", "usd", "XXX", "EUR\n", "api_calls\n", "\u0663\u0661", "x" * 256]
STAMPS = ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z\n", "2026-01-01T00:00:00+05:30", "\u0662026-01-01T00:00:00Z"]
UUIDS = [
    "3f1c7a52-8a51-4f43-9a43-5b0b1d7a9e10",
    "3F1C7A52-8A51-4F43-9A43-5B0B1D7A9E10",
    "3f1c7a528a514f439a435b0b1d7a9e10",
    "{3f1c7a52-8a51-4f43-9a43-5b0b1d7a9e10}",
    "urn:uuid:3f1c7a52-8a51-4f43-9a43-5b0b1d7a9e10",
    "3f1c7a52-8a51-4f43-9a43-5b0b1d7a9e10\n",
]
TRICKY = [*NUMBERS, *TEXTS, *STAMPS, *UUIDS, [], {}, [1], {"a": 1}, {"a": "b"}]


def _jsonschema_accepts(name: str, body) -> bool:
    return not any(True for _ in validation._validator(name).iter_errors(body))


def _fast_accepts(name: str, body) -> bool:
    try:
        validation._fast(name)(body)
    except Exception:  # noqa: BLE001 - any refusal (or confusion) of the fast validator
        return False
    return True


def _valid(node: dict, draw, rnd):
    """A value that the (fast-compatible) schema ``node`` accepts, built from its keywords."""
    kind = node.get("type", "string")
    kind = rnd.choice(kind) if isinstance(kind, list) else kind
    if "const" in node or "enum" in node:
        return node["const"] if "const" in node else rnd.choice(node["enum"])
    if kind == "object":
        fields = node.get("properties", {})
        names = set(node.get("required", [])) | {n for n in fields if rnd.random() < 0.5}
        return {n: _valid(fields[n], draw, rnd) for n in sorted(names)}
    if kind == "array":
        size = rnd.randint(node.get("minItems", 0), min(node.get("maxItems", 3), 3))
        return [_valid(node.get("items", {}), draw, rnd) for _ in range(size)]
    if kind in ("integer", "number"):
        return rnd.randint(node.get("minimum", -(10**6)), node.get("maximum", 10**6))
    if kind in ("boolean", "null"):
        return rnd.random() < 0.5 if kind == "boolean" else None
    return _valid_string(node, draw, rnd)


def _valid_string(node: dict, draw, rnd) -> str:
    if node.get("format") == "uuid":
        return str(uuid.UUID(int=rnd.getrandbits(128)))
    if node.get("format") == "iso-4217":
        return rnd.choice(["USD", "EUR", "JPY"])
    if "pattern" in node:
        text = draw(st.from_regex(node["pattern"], fullmatch=True))
    else:
        shortest = node.get("minLength", 0)
        text = draw(st.text(min_size=shortest, max_size=max(shortest, min(node.get("maxLength", 20), 20))))
    return text if len(text) <= node.get("maxLength", len(text)) else text[: node["maxLength"]]


def _near(value) -> list:
    """Values a validator could mistake for ``value``'s kind, or that just cross one of its bounds."""
    if isinstance(value, bool):
        return [int(value), not value]
    if isinstance(value, int):
        return [float(value), value + 0.5, bool(value % 2), value + 1, value - 1, -value, str(value)]
    if isinstance(value, str):
        return [value + "\n", value.upper(), value.lower(), value[:-1], value + value, " " + value, value[::-1]]
    return [int(value)] if isinstance(value, float) else []


def _mutated(value, rnd):
    """``value`` with one place in it changed: a near miss or a tricky value, a field added or dropped."""
    if isinstance(value, dict) and rnd.random() < 0.1:
        return {**value, rnd.choice(["extra", "note", "events"]): rnd.choice(TRICKY)}
    if isinstance(value, dict) and value and rnd.random() < 0.1:
        dropped = rnd.choice(sorted(value))
        return {k: v for k, v in value.items() if k != dropped}
    if isinstance(value, dict) and value and rnd.random() < 0.8:
        key = rnd.choice(sorted(value))
        return {**value, key: _mutated(value[key], rnd)}
    if isinstance(value, list) and value and rnd.random() < 0.8:
        at = rnd.randrange(len(value))
        return [*value[:at], _mutated(value[at], rnd), *value[at + 1 :]]
    near = _near(value)
    return rnd.choice(near if near and rnd.random() < 0.75 else TRICKY)


def test_the_usage_and_event_schemas_meet_the_fast_validator_and_the_ones_it_would_misread_do_not():
    assert {"usage_event", "usage_event_batch", "account_create", "event_invoice_paid"} <= set(FAST)
    # oneOf (plan_create) and uniqueItems (api clients, webhook endpoints) are jsonschema's alone.
    assert {"plan_create", "api_client_create", "webhook_endpoint_create"}.isdisjoint(FAST)


@pytest.mark.parametrize("name", FAST)
def test_whatever_the_fast_validator_accepts_jsonschema_accepts_too(name):
    schema = validation.schema(name)

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def check(data):
        rnd = data.draw(st.randoms(use_true_random=False))
        body = _valid(schema, data.draw, rnd)
        body = _mutated(body, rnd) if rnd.random() < 0.75 else body
        if _fast_accepts(name, body):
            assert _jsonschema_accepts(name, body), body

    check()


def test_a_whole_float_is_not_an_integer_on_the_fast_path_and_is_told_as_before():
    event = {
        "event_id": "e-1",
        "account_id": "3f1c7a52-8a51-4f43-9a43-5b0b1d7a9e10",
        "metric": "api_calls",
        "quantity": 1.0,
        "timestamp": "2026-01-01T00:00:00Z",
    }

    assert not _fast_accepts("usage_event", event)
    with pytest.raises(errors.InvalidRequest) as single:
        validation.validate("usage_event", event)
    with pytest.raises(errors.InvalidRequest) as batch:
        validation.validate("usage_event_batch", {"events": [{**event, "quantity": 2}, event]})

    assert single.value.details == [{"field": "quantity", "issue": "must be an integer"}]
    assert batch.value.details == [{"field": "events.1.quantity", "issue": "must be an integer"}]


def test_what_only_the_fast_validator_refuses_is_still_accepted_as_jsonschema_judges_it():
    # A final newline: jsonschema's `$` matches before it, fastjsonschema's does not.
    event = {
        "event_id": "e-1",
        "account_id": "3f1c7a52-8a51-4f43-9a43-5b0b1d7a9e10",
        "metric": "api_calls",
        "quantity": 1,
        "timestamp": "2026-01-01T00:00:00Z\n",
    }

    assert not _fast_accepts("usage_event", event)
    assert validation.validate("usage_event", event) is event


def test_a_valid_batch_compiles_only_its_own_schema_and_never_imports_jsonschema():
    code = (
        "import sys\n"
        "from chalicelib import validation\n"
        "loaded = [m for m in ('fastjsonschema', 'jsonschema') if m in sys.modules]\n"
        "event = {'event_id': 'e', 'account_id': '3f1c7a52-8a51-4f43-9a43-5b0b1d7a9e10', 'metric': 'm',"
        " 'quantity': 1, 'timestamp': '2026-01-01T00:00:00Z'}\n"
        "validation.validate('usage_event_batch', {'events': [event]})\n"
        "print(loaded, validation._fast.cache_info().currsize, 'fastjsonschema' in sys.modules,"
        " 'jsonschema' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout

    assert out.split() == ["[]", "1", "True", "False"]


def test_the_fast_validators_formats_are_jsonschemas_own_checks():
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    for text in ("3f1c7a52-8a51-4f43-9a43-5b0b1d7a9e10", "3f1c7a528a514f439a435b0b1d7a9e10", "x", "{}", 7):
        assert validation._is_uuid(text) == checker.conforms(text, "uuid"), text
