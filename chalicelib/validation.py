"""Request bodies: JSON parsing with limits, and jsonschema validation.

Schemas are files in ``chalicelib/schemas`` (they ship with the code and feed the
OpenAPI document); each is compiled once per process, on first use. Errors carry
one ``{"field", "issue"}`` per problem. An issue is a short sentence built from the
schema ("at most 100 events", "must be an integer"), never a copy of the offending
value: a 100 KB string gets a 100-character answer.

Formats that JSON Schema does not define are registered here: ``iso-4217`` is a
currency code that ``chalicelib.billing.currencies`` knows.
"""

import json
import math
import re
from functools import cache
from pathlib import Path

from chalicelib import errors
from chalicelib.billing import currencies
from chalicelib.config import get_settings

SCHEMA_DIR = Path(__file__).parent / "schemas"
MAX_DEPTH = 32
CURRENCY_FORMAT = "iso-4217"
MAX_ISSUE = 200  # characters in one issue
MAX_NAME = 64  # characters of one field name shown in a field path or an issue
MAX_LISTED = 10  # enum values named in an issue; more are counted instead


def schema(name: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{name}.json").read_text())


@cache
def _validator(name: str):
    import jsonschema  # kept off the import path: only requests with a body pay for it

    document = schema(name)
    base = jsonschema.validators.validator_for(document)
    base.check_schema(document)
    # JSON Schema counts 1.0 as an integer; money and quantities must be ints.
    strict = base.TYPE_CHECKER.redefine("integer", lambda _c, v: isinstance(v, int) and not isinstance(v, bool))
    cls = jsonschema.validators.extend(base, type_checker=strict)
    formats = jsonschema.FormatChecker(formats=())
    formats.checkers = {**base.FORMAT_CHECKER.checkers}  # a copy: the draft's own checker stays as it is
    formats.checks(CURRENCY_FORMAT)(_is_currency)
    return cls(document, format_checker=formats)


def _is_currency(value) -> bool:
    # A format judges strings only; a number here is the type check's to report.
    return not isinstance(value, str) or currencies.is_known(value)


def parse_json_body(raw: bytes | None, content_type: str | None, *, required: bool = True):
    """The decoded JSON body; 415, 413 or 400 when it is not acceptable JSON."""
    if not raw:
        if required:
            raise errors.InvalidRequest("a JSON request body is required")
        return {}
    media_type = (content_type or "application/json").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise errors.UnsupportedMediaType(f"content type {media_type!r} is not supported; send application/json")
    if len(raw) > get_settings().max_body_bytes:
        raise errors.PayloadTooLarge(f"request body exceeds {get_settings().max_body_bytes} bytes")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        body = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise errors.InvalidRequest(f"malformed JSON: {exc}") from exc
    if _depth(body) > MAX_DEPTH:
        raise errors.InvalidRequest(f"JSON nested deeper than {MAX_DEPTH} levels")
    problem = _unstorable(body)
    if problem:
        field, issue = problem
        raise errors.InvalidRequest(f"invalid {field}: {issue}", details=[{"field": field, "issue": issue}])
    return body


def _unstorable(value, path: str = "") -> tuple[str, str] | None:
    """(field, issue) of the first value PostgreSQL could not store: NUL, lone surrogates, non-finite numbers."""
    if isinstance(value, str):
        issue = _string_issue(value)
        return (path or "body", issue) if issue else None
    if isinstance(value, float) and not math.isfinite(value):
        return (path or "body", "numbers must be finite")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        here = f"{path}.{_name(key)}" if path else _name(key)
        issue = _string_issue(key) if isinstance(key, str) else None
        found = (here, f"key: {issue}") if issue else _unstorable(item, here)
        if found:
            return found
    return None


def _string_issue(text: str) -> str | None:
    if "\x00" in text:
        return "strings may not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "strings must be valid Unicode (no lone surrogates)"
    return None


def _no_duplicate_keys(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {_name(key)!r}")
        seen[key] = value
    return seen


def _no_constants(name):
    raise ValueError(f"{name} is not valid JSON")


def _depth(value, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def validate(name: str, body) -> dict:
    """``body`` if it satisfies schema ``name``; otherwise InvalidRequest with every problem."""
    problems = sorted(_validator(name).iter_errors(body), key=lambda e: list(e.absolute_path))
    if problems:
        details = [_detail(problem) for problem in problems[:50]]
        raise errors.InvalidRequest("the request body is invalid", details=details)
    return body


def _detail(problem) -> dict:
    """One ``{"field", "issue"}`` for a jsonschema error: the issue from the schema, never from the value."""
    path = list(problem.absolute_path)
    keyword, value, instance = problem.validator, problem.validator_value, problem.instance
    if keyword == "required":
        missing = _named_in_message(problem.message, value)
        path, issue = ([*path, missing], "is required") if missing else (path, _sentence(keyword, value, {}, path))
    elif keyword == "dependentRequired":
        missing, needed_by = _dependency(problem.message, value)
        if missing:
            path, issue = [*path, missing], f"is required when {_name(needed_by)} is present"
        else:
            issue = _sentence(keyword, value, problem.schema, path)
    elif keyword in ("additionalProperties", "unevaluatedProperties") and isinstance(instance, dict):
        extra = _unknown_keys(instance, problem.schema, problem.validator == "additionalProperties")
        if len(extra) == 1:
            path, issue = [*path, extra[0]], "is not a known field"
        else:
            issue = f"unknown fields: {_listed(extra, limit=5)}" if extra else "has a field that is not known"
    elif keyword == "contains" and problem.message.startswith("Too many"):
        issue = f"at most {problem.schema.get('maxContains')} matching {_noun(path)}"
    elif keyword == "oneOf" and not problem.context and not _required_only(value):
        issue = f"matches more than one of the {len(value)} allowed forms; it must match exactly one"
    else:
        issue = _sentence(keyword, value, problem.schema, path)
    if _about_keys(problem.relative_schema_path):
        issue = f"keys: {issue}"
    return {"field": _field(path), "issue": _capped(issue)}


TYPES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "object": "an object",
    "array": "an array",
    "null": "null",
}
FORMATS = {
    CURRENCY_FORMAT: "is not an ISO 4217 currency code",
    "date-time": "must be an RFC 3339 date-time",
    "date": "must be an RFC 3339 date (YYYY-MM-DD)",
    "time": "must be an RFC 3339 time",
    "uuid": "must be a UUID",
    "email": "must be an email address",
    "idn-email": "must be an email address",
    "hostname": "must be a host name",
    "idn-hostname": "must be a host name",
    "ipv4": "must be an IPv4 address",
    "ipv6": "must be an IPv6 address",
    "uri": "must be a URI",
    "uri-reference": "must be a URI reference",
    "regex": "must be a regular expression",
    "json-pointer": "must be a JSON pointer",
    "relative-json-pointer": "must be a relative JSON pointer",
    "duration": "must be an ISO 8601 duration",
}
# Keywords that never fail on their own: their errors are the ones of the subschemas they apply.
APPLICATORS = frozenset(
    "$ref $dynamicRef allOf properties patternProperties prefixItems propertyNames if dependentSchemas".split()
)


def _sentence(keyword, value, schema: dict, path: list) -> str:
    """What the schema asks of the value at ``path``, as a short sentence; ``value`` is the keyword's own."""
    noun = _noun(path)
    sentences = {
        "type": lambda: f"must be {_types(value)}",
        "enum": lambda: _one_of_values(value),
        "const": lambda: f"must be {_shown(value)}",
        "multipleOf": lambda: f"must be a multiple of {value}",
        "minimum": lambda: f"must be at least {value}",
        "maximum": lambda: f"must be at most {value}",
        "exclusiveMinimum": lambda: f"must be greater than {value}",
        "exclusiveMaximum": lambda: f"must be less than {value}",
        "minLength": lambda: f"at least {_count(value, 'characters')}",
        "maxLength": lambda: f"at most {_count(value, 'characters')}",
        "pattern": lambda: _matching(value, schema.get("description")),
        "format": lambda: FORMATS.get(value, f"must be a valid {_name(value)}"),
        "minItems": lambda: f"at least {_count(value, noun)}",
        "maxItems": lambda: f"at most {_count(value, noun)}",
        "uniqueItems": lambda: f"must not contain duplicate {noun}",
        "contains": lambda: f"must contain at least {_count(schema.get('minContains', 1), 'matching ' + noun)}",
        "items": lambda: f"at most {_count(len(schema.get('prefixItems', ())), noun)}",
        "unevaluatedItems": lambda: f"at most {_count(len(schema.get('prefixItems', ())), noun)}",
        "minProperties": lambda: f"at least {_count(value, 'keys')}",
        "maxProperties": lambda: f"at most {_count(value, 'keys')}",
        "required": lambda: f"must have {_listed(value)}",
        "dependentRequired": lambda: "; ".join(
            f"{_listed(needs)} required when {_name(name)} is present" for name, needs in value.items()
        ),
        "additionalProperties": lambda: "is not a known field",
        "unevaluatedProperties": lambda: "is not a known field",
        "oneOf": lambda: _forms(value, "exactly"),
        "anyOf": lambda: _forms(value, "at least"),
        "not": lambda: "is in a form that is not allowed here",
        None: lambda: "is not allowed here",  # the `false` schema
    }
    sentence = sentences.get(keyword)
    return _capped(sentence()) if sentence else "is not valid"


def _types(value) -> str:
    names = [TYPES.get(name, str(name)) for name in (value if isinstance(value, list) else [value])]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _one_of_values(values: list) -> str:
    if len(values) == 1:
        return f"must be {_shown(values[0])}"
    if len(values) > MAX_LISTED:
        return f"must be one of the {len(values)} allowed values"
    return f"must be one of {', '.join(_shown(v) for v in values)}"


def _matching(pattern: str, description: str | None) -> str:
    shown = pattern if len(pattern) <= 120 else pattern[:119] + "\u2026"
    return f"must match {shown}" + (f" ({description})" if description else "")


def _forms(branches: list, how: str) -> str:
    """oneOf/anyOf: fields to have when every branch only requires fields, else how many forms there are."""
    if _required_only(branches):
        fields = [name for branch in branches for name in branch["required"]]
        return f"must have {how} one of {_listed(fields, conjunction='or')}"
    if all(set(branch) == {"type"} for branch in branches if isinstance(branch, dict)):
        return f"must be {_types([t for branch in branches for t in _as_list(branch['type'])])}"
    return f"must match {how} one of the {len(branches)} allowed forms"


def _required_only(branches) -> bool:
    return all(isinstance(b, dict) and set(b) == {"required"} for b in branches)


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _noun(path: list) -> str:
    """The array's own field name ("events") when it has one, else "items"."""
    return path[-1].replace("_", " ") if path and isinstance(path[-1], str) and path[-1] else "items"


def _count(n, noun: str) -> str:
    if n == 1 and noun.endswith("ies"):
        return f"1 {noun[:-3]}y"
    if n == 1 and noun.endswith("s"):
        return f"1 {noun[:-1]}"
    return f"{n} {noun}"


def _shown(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return _name(text)


def _listed(names, limit: int = MAX_LISTED, conjunction: str = "and") -> str:
    names = [_name(n) for n in names]
    if not names:
        return "nothing"
    if len(names) > limit:
        return f"{', '.join(names[:limit])} and {len(names) - limit} more"
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {conjunction} {names[-1]}"


def _name(part) -> str:
    """A field name or schema value as shown to the caller: cut to MAX_NAME characters."""
    text = str(part)
    return text if len(text) <= MAX_NAME else text[: MAX_NAME - 1] + "\u2026"


def _field(path: list) -> str:
    return ".".join(_name(p) for p in path) or "(body)"


def _capped(issue: str) -> str:
    return issue if len(issue) <= MAX_ISSUE else issue[: MAX_ISSUE - 1] + "\u2026"


def _named_in_message(message: str, names) -> str | None:
    """Which of the schema's ``names`` jsonschema's message is about (it starts with the name's repr)."""
    return next((n for n in names if isinstance(n, str) and message.startswith(repr(n))), None)


def _dependency(message: str, dependencies: dict) -> tuple[str | None, str | None]:
    """(missing field, the field that needs it) of a dependentRequired error."""
    for name, needs in dependencies.items():
        for need in needs:
            if message == f"{need!r} is a dependency of {name!r}":
                return need, name
    return None, None


def _about_keys(schema_path) -> bool:
    """Whether the error is about an object's keys (under propertyNames) rather than the object."""
    steps = list(schema_path)
    return any(
        step == "propertyNames" and (i == 0 or steps[i - 1] not in ("properties", "patternProperties", "$defs"))
        for i, step in enumerate(steps)
    )


def _unknown_keys(instance: dict, schema: dict, additional: bool) -> list[str]:
    known = set(schema.get("properties", {}))
    patterns = [re.compile(p) for p in schema.get("patternProperties", {})] if additional else []
    return sorted(k for k in instance if k not in known and not any(p.search(k) for p in patterns))
