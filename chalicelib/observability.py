"""Structured JSON logs and CloudWatch Embedded Metric Format metrics, on stdout.

Logs: one JSON object per line with timestamp, level, message, logger, function,
request id, tenant id and user id (bound per invocation through a context
variable). Messages are scrubbed of bearer tokens, JWTs, card-like digit runs and
the local part of email addresses before they are written.

Metrics: EMF lines that CloudWatch Logs turns into metrics, zero API calls;
dimensions are a small fixed set (TenantId, PlanId).
"""

import contextvars
import json
import logging
import os
import re
import sys
import time
from datetime import UTC, datetime

_fields: contextvars.ContextVar[dict | None] = contextvars.ContextVar("log_fields", default=None)
_SCRUB = [
    (re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer [redacted]"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), "[jwt redacted]"),
    (re.compile(r"\b(?:\d[ -]?){13,19}\b"), "[number redacted]"),
    (re.compile(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})\b"), r"\1***@\2"),
]


def scrub(text: str) -> str:
    for pattern, replacement in _SCRUB:
        text = pattern.sub(replacement, text)
    return text


def bind(**fields) -> None:
    """Add fields (tenant_id, user_id, request_id) to every log line of this invocation."""
    _fields.set({**(_fields.get() or {}), **{k: str(v) for k, v in fields.items() if v is not None}})


def clear() -> None:
    _fields.set({})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname,
            "message": scrub(record.getMessage()),
            "logger": record.name,
            "function": os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "local"),
            **(_fields.get() or {}),
        }
        if record.exc_info:
            entry["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


_configured = False
_log = logging.getLogger("billing.invocation")


def log_invocation(event, get_response):
    """Bind this invocation's request id, run it, and write one line saying how it went."""
    clear()
    context = getattr(event, "context", None)
    request_id = context.get("requestId") if isinstance(context, dict) else getattr(context, "aws_request_id", None)
    bind(request_id=request_id)
    started = time.perf_counter()
    response = get_response(event)
    elapsed_ms = round((time.perf_counter() - started) * 1000)
    if hasattr(event, "method"):
        _log.info("%s %s -> %s in %d ms", event.method, event.path, response.status_code, elapsed_ms)
    else:
        _log.info("%s handled in %d ms", type(event).__name__, elapsed_ms)
    return response


WIRE_LOGGERS = ("botocore", "boto3", "urllib3", "stripe", "requests")


def configure_logging() -> None:
    """JSON on the root logger in Lambda (which installs a handler) and where LOG_FORMAT=json (make run).

    Elsewhere (tests, packaging, scripts) logging is left as the host configured it. Idempotent.
    Everywhere, the HTTP clients' own loggers stay at WARNING whatever LOG_LEVEL says: at DEBUG
    they write request and response bodies, and those carry secrets (a tenant's Stripe keys from
    Secrets Manager, the database password).
    """
    global _configured
    for wire in WIRE_LOGGERS:
        logging.getLogger(wire).setLevel(logging.WARNING)
    in_lambda = "AWS_LAMBDA_FUNCTION_NAME" in os.environ
    if _configured or not (in_lambda or os.environ.get("LOG_FORMAT") == "json"):
        return
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stdout))
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
    _configured = True


# One namespace per stack (METRICS_NAMESPACE, BillingPlatform/PREFIX when deployed): dev's metrics never
# reach prod's alarms and dashboard, nor the reverse.
NAMESPACE = os.environ.get("METRICS_NAMESPACE", "BillingPlatform")


def emit_metric(name: str, value: float | int, unit: str = "Count", **dimensions: str) -> None:
    dims = {k: str(v) for k, v in dimensions.items() if v is not None}
    record = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {"Namespace": NAMESPACE, "Dimensions": [sorted(dims)], "Metrics": [{"Name": name, "Unit": unit}]}
            ],
        },
        name: value,
        **dims,
    }
    sys.stdout.write(json.dumps(record) + "\n")
