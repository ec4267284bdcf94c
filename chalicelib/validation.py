"""Request bodies: JSON parsing with limits, and jsonschema validation.

Schemas are files in ``chalicelib/schemas`` (they ship with the code and feed the
OpenAPI document); each is compiled once per process, on first use. Errors carry
one ``{"field", "issue"}`` per problem.
"""

import json
import math
from functools import cache
from pathlib import Path

from chalicelib import errors
from chalicelib.config import get_settings

SCHEMA_DIR = Path(__file__).parent / "schemas"
MAX_DEPTH = 32


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
    return cls(document, format_checker=base.FORMAT_CHECKER)


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
        here = f"{path}.{key}" if path else str(key)
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
            raise ValueError(f"duplicate key {key!r}")
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
    path = list(problem.absolute_path)
    if problem.validator == "required":
        missing = problem.message.split("'")[1] if "'" in problem.message else ""
        path = [*path, missing]
        issue = "is required"
    elif problem.validator == "additionalProperties":
        extra = sorted(set(problem.instance) - set(problem.schema.get("properties", {})))
        path = [*path, extra[0]] if len(extra) == 1 else path
        issue = "is not a known field" if len(extra) == 1 else f"unknown fields: {', '.join(extra)}"
    else:
        issue = problem.message
    return {"field": ".".join(str(p) for p in path) or "(body)", "issue": issue}
