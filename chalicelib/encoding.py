"""JSON out: RFC 3339 UTC timestamps ending in Z, ids as strings. Money is already int."""

import json
from datetime import datetime


def _default(value):
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def dumps(value) -> str:
    return json.dumps(value, default=_default)
