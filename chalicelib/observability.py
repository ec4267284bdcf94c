"""Structured JSON logs and CloudWatch Embedded Metric Format metrics, on stdout.

Logs: one JSON object per line with timestamp, level, message, logger, function,
request id, tenant id and user id (bound per invocation through a context
variable). Messages are scrubbed of bearer tokens, JWTs, card-like digit runs and
the local part of email addresses before they are written.

Metrics: EMF documents that CloudWatch Logs turns into metrics, zero API calls. CloudWatch bills
per metric, that is per distinct set of dimension values, so a tenant or a plan is never a
dimension: ``TenantId`` and ``PlanId`` are properties of the document (searchable in Logs Insights:
``filter TenantId = "..."``, or ``filter @message like "..."`` for a batch of several tenants, where
the property is the sorted list of them). Every metric is published once per stack as a total (the
empty dimension set; the namespace is per stack) and, where the caller names one, per low-cardinality
dimension (``Currency``). Inside ``metrics_batch()`` (an SQS batch, a rebill batch) every metric is
buffered and the batch writes one document at its end: counts summed, other values as an array (EMF
takes up to 100 values per metric; more start another document).
"""

import contextvars
import json
import logging
import os
import re
import sys
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
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


# High-cardinality keys: properties of the document, never dimensions (one metric per tenant and plan
# would be ~33,000 metrics for 1,000 tenants x 10 plans).
PROPERTIES = ("TenantId", "PlanId")
MAX_VALUES = 100  # EMF's limit on a metric's values in one document


class _Batch:
    """The samples of one batch, appended from its thread and from threads it waits for (webhook lanes)."""

    def __init__(self):
        self.samples: list[tuple] = []
        self.lock = threading.Lock()

    def add(self, sample: tuple) -> None:
        with self.lock:
            self.samples.append(sample)


_batch: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar("metrics_batch", default=None)
# Worker threads do not inherit the context: a thread with no batch of its own joins the one open in the
# process (Lambda runs one invocation per process at a time, and the batch waits for its threads).
_open: list[_Batch] = []
_open_lock = threading.Lock()


def _current() -> _Batch | None:
    batch = _batch.get()
    if batch is None and _open:
        with _open_lock:
            batch = _open[-1] if _open else None
    return batch


@contextmanager
def metrics_batch():
    """Buffer every ``emit_metric`` until the end of the block, then write one document per dimension set.

    A batch inside a batch is part of it. The documents are written however the block ends (a failed
    batch's metrics, such as its failures, count too).
    """
    if _current() is not None:
        yield
        return
    batch = _Batch()
    token = _batch.set(batch)
    with _open_lock:
        _open.append(batch)
    try:
        yield
    finally:
        with _open_lock:
            _open.remove(batch)
        _batch.reset(token)
        with batch.lock:
            samples = list(batch.samples)
        _write(samples)


def emit_metric(name: str, value: float | int, unit: str = "Count", **dimensions: str) -> None:
    """One sample of ``name``: written now, or with its batch. ``TenantId``/``PlanId`` are properties."""
    given = {k: str(v) for k, v in dimensions.items() if v is not None}
    properties = {k: v for k, v in given.items() if k in PROPERTIES}
    dims = tuple(sorted((k, v) for k, v in given.items() if k not in PROPERTIES))
    sample = (name, unit, value, dims, properties)
    batch = _current()
    if batch is None:
        _write([sample])
    else:
        batch.add(sample)


def _write(samples: list[tuple]) -> None:
    lines = [json.dumps(document) for document in emf_documents(samples)]
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")


def emf_documents(samples: list[tuple]) -> list[dict]:
    """The EMF documents of these samples: one per set of dimension values (and per 100 values of a metric)."""
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    for sample in samples:
        groups[sample[3]].append(sample)
    return [doc for dims, group in groups.items() for doc in _group_documents(dict(dims), group)]


def _group_documents(dims: dict, group: list[tuple]) -> list[dict]:
    values: dict[tuple[str, str], list] = defaultdict(list)
    for name, unit, value, _dims, _props in group:
        values[(name, unit)].append(value)
    # A count is summed (the Sum statistic is unchanged); any other value keeps every sample, for percentiles.
    series = {key: [sum(v)] if key[1] == "Count" else v for key, v in values.items()}
    chunks = max(-(-len(v) // MAX_VALUES) for v in series.values())
    properties = _properties(group)
    documents = []
    for c in range(chunks):
        part = {k: v[c * MAX_VALUES : (c + 1) * MAX_VALUES] for k, v in series.items() if len(v) > c * MAX_VALUES}
        directive = {
            "Namespace": NAMESPACE,
            "Dimensions": [[]] + ([sorted(dims)] if dims else []),
            "Metrics": [{"Name": name, "Unit": unit} for name, unit in part],
        }
        record = {"_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [directive]}}
        record.update({name: v[0] if len(v) == 1 else v for (name, _unit), v in part.items()})
        documents.append({**record, **dims, **properties})
    return documents


def _properties(group: list[tuple]) -> dict:
    """Each property's value: the one value the samples share, or the sorted list of them."""
    seen: dict[str, set[str]] = defaultdict(set)
    for *_rest, properties in group:
        for key, value in properties.items():
            seen[key].add(value)
    return {key: next(iter(v)) if len(v) == 1 else sorted(v) for key, v in seen.items()}
