"""Request bodies: JSON parsing with limits, and JSON Schema validation.

Schemas are files in ``chalicelib/schemas`` (they ship with the code and feed the
OpenAPI document); each is compiled once per process, on first use, never at import.
Errors carry one ``{"field", "issue"}`` per problem. An issue is a short sentence built
from the schema ("at most 100 events", "must be an integer"), never a copy of the
offending value: a 100 KB string gets a 100-character answer.

jsonschema (Draft 2020-12) is the judge. A body first meets a fastjsonschema validator
generated from the same file (~18x faster on a batch of 100 events: 0.2 ms; its import and
first compile ~6 ms against jsonschema's ~45 ms), and one it accepts is accepted.
Anything it refuses goes to jsonschema, whose verdict stands and whose errors give the
details, so fastjsonschema only ever saves time: it is used for a schema only when every
keyword the schema uses means the same to it (compiled as Draft 4, where 1.0 is not an
integer, with our two formats as the very checks jsonschema runs), and it may be stricter
than jsonschema (``$`` in a pattern is the end of the text, not before a final newline),
never laxer (``_FAST_KEYWORDS``; tests/unit/test_validation_fast_path.py compares them).

Formats that JSON Schema does not define are registered here: ``iso-4217`` is a
currency code that ``chalicelib.billing.currencies`` knows.
"""

import json
import math
import re
import uuid
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


def _is_uuid(value) -> bool:
    """jsonschema's own ``uuid`` format check (Draft 2019-09 on), for the fast validator."""
    if not isinstance(value, str):
        return True
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return all(value[position] == "-" for position in (8, 13, 18, 23))


_FAST_FORMATS = {"uuid": _is_uuid, CURRENCY_FORMAT: _is_currency}
# Keywords that mean the same to fastjsonschema's Draft 4 code as to jsonschema's Draft 2020-12 (with
# the conditions _fast_compatible adds: string enums and consts, schema-valued items, our formats, and a
# pattern's only ``$`` at its end). A schema using any other keyword is judged by jsonschema alone.
_FAST_KEYWORDS = frozenset(
    "$schema title description type properties required additionalProperties items minLength maxLength"
    " pattern minimum maximum minItems maxItems minProperties maxProperties enum const format".split()
)
_TYPES = frozenset(("string", "integer", "number", "boolean", "object", "array", "null"))


@cache
def _fast(name: str):
    """The fastjsonschema validator of schema ``name``, or None when jsonschema alone judges it."""
    document = _as_draft_4(schema(name))
    if document is None:
        return None
    import fastjsonschema  # on first use: ~8 ms of import a request without a body never pays

    document["$schema"] = "http://json-schema.org/draft-04/schema#"
    try:
        return fastjsonschema.compile(document, formats=_FAST_FORMATS, use_default=False, detailed_exceptions=False)
    except fastjsonschema.JsonSchemaDefinitionException:
        return None


def _as_draft_4(node):
    """A copy of ``node`` for Draft 4 (a string ``const`` as a one-value ``enum``, no empty ``required``),
    or None when one of its keywords, or its subschemas', would not mean the same there."""
    if not isinstance(node, dict) or not set(node) <= _FAST_KEYWORDS or not _fast_compatible(node):
        return None
    copy = {k: v for k, v in node.items() if k not in ("const", "$schema") and (k, v) != ("required", [])}
    if "const" in node:
        copy["enum"] = [node["const"]]
    subschemas = {key: node[key] for key in ("items", "additionalProperties") if isinstance(node.get(key), dict)}
    subschemas.update({("properties", field): sub for field, sub in node.get("properties", {}).items()})
    for key, sub in subschemas.items():
        converted = _as_draft_4(sub)
        if converted is None:
            return None
        if isinstance(key, tuple):
            copy["properties"] = {**copy["properties"], key[1]: converted}
        else:
            copy[key] = converted
    return copy


def _fast_compatible(node: dict) -> bool:
    """The conditions under which a Draft 4 reading of ``node``'s own keywords is jsonschema's."""
    types = node.get("type", "string")
    pattern = node.get("pattern", "")
    return (
        all(t in _TYPES for t in (types if isinstance(types, list) else [types]))
        and all(isinstance(v, str) for v in [*node.get("enum", []), *([node["const"]] if "const" in node else [])])
        and isinstance(node.get("items", {}), dict)
        and isinstance(node.get("additionalProperties", True), (bool, dict))
        and isinstance(node.get("properties", {}), dict)
        and node.get("format", "uuid") in _FAST_FORMATS
        and pattern.count("$") == (1 if pattern.endswith("$") and not pattern.endswith("\\$") else 0)
    )


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
    non_finite: list[float] = []
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        body = json.loads(
            text,
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_no_constants,
            parse_float=lambda literal: _float(literal, non_finite),
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise errors.InvalidRequest(f"malformed JSON: {exc}") from exc
    if _depth(body) > MAX_DEPTH:
        raise errors.InvalidRequest(f"JSON nested deeper than {MAX_DEPTH} levels")
    # A NUL or a lone surrogate reaches a string only through a \u escape (JSON refuses a raw control
    # character, UTF-8 decoding an encoded surrogate), a non-finite number only as a float too large:
    # without either, no value needs the walk.
    problem = _unstorable(body) if non_finite or "\\u" in text or not isinstance(raw, bytes) else None
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


def _float(literal: str, non_finite: list[float]) -> float:
    value = float(literal)
    if not math.isfinite(value):
        non_finite.append(value)
    return value


def _no_duplicate_keys(pairs):
    found = dict(pairs)
    if len(found) < len(pairs):
        seen = set()
        for key, _value in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {_name(key)!r}")
            seen.add(key)
    return found


def _no_constants(name):
    raise ValueError(f"{name} is not valid JSON")


def _depth(value, level: int = 0) -> int:
    """How deep ``value`` nests (a scalar at ``level`` is ``level``; past MAX_DEPTH, any larger number)."""
    if level > MAX_DEPTH:
        return level
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
    if children is None:
        return level
    deepest = level + 1  # a container's scalars are one level down: only containers need a look
    for child in children:
        if isinstance(child, (dict, list)):
            deepest = max(deepest, _depth(child, level + 1))
    return deepest


def validate(name: str, body) -> dict:
    """``body`` if it satisfies schema ``name``; otherwise InvalidRequest with every problem."""
    fast = _fast(name)
    if fast is not None:
        try:
            fast(body)
            return body
        except Exception:  # noqa: BLE001 - refused, or confused by an odd value: jsonschema decides
            pass
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
