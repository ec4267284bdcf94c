"""The one place where meaning becomes HTTP: BillingError kinds -> status and JSON body.

Chalice turns any exception raised in a view into a bare 500 before middleware
sees it, so every route is wrapped by ``api``: a BillingError becomes its status
with a JSON body; anything else is logged with the request id and answered with a
generic 500 that leaks nothing.
"""

import functools
import logging
import secrets
import uuid
from dataclasses import dataclass, field

from chalice import Response

from chalicelib import auth, encoding, errors, observability, validation
from chalicelib.db import errors as db_errors

log = logging.getLogger("billing.http")

STATUS = {
    errors.InvalidRequest: 400,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.UnprocessableState: 422,
    errors.RateLimited: 429,
    errors.ServiceUnavailable: 503,
}
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class ApiRequest:
    """What a view needs from the HTTP request, read once at the start of the view."""

    principal: auth.Principal
    method: str
    path: str
    body: dict = field(default_factory=dict)
    query: dict = field(default_factory=dict)
    path_params: dict = field(default_factory=dict)
    idempotency_key: str | None = None


def read(app, access: auth.Access, schema=None, *, body_required: bool = True) -> ApiRequest:
    """Authenticate, authorize for the route's ``access``, and parse and validate the body against ``schema``.

    ``schema`` is a schema name, or a function of the parsed body that names one.
    """
    request = app.current_request
    principal = auth.authenticate(request.headers, request.context)
    observability.bind(tenant_id=principal.tenant_id, user_id=principal.user_id)
    principal.require(access)
    body = {}
    if schema is not None:
        raw = validation.parse_json_body(request.raw_body, request.headers.get("content-type"), required=body_required)
        body = validation.validate(schema(raw) if callable(schema) else schema, raw)
    return ApiRequest(
        principal=principal,
        method=request.method,
        path=request.context.get("resourcePath", request.path),
        body=body,
        query=dict(request.query_params or {}),
        path_params=dict(request.uri_params or {}),
        idempotency_key=request.headers.get("idempotency-key"),
    )


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(body=encoding.dumps(body), status_code=status, headers={**JSON_HEADERS, **(headers or {})})


def pdf_response(pdf: bytes, invoice: dict) -> Response:
    """A PDF, inline (API Gateway returns it as binary when the client accepts application/pdf)."""
    name = invoice.get("number") or f"draft-{invoice['id']}"
    disposition = f'inline; filename="{name}.pdf"'
    return Response(
        body=pdf, status_code=200, headers={"Content-Type": "application/pdf", "Content-Disposition": disposition}
    )


def html_response(page: str, *, script_nonce: str | None = None) -> Response:
    """A page for a person: never cached by shared caches, never framed, no scripts; with
    ``script_nonce``, Stripe.js and the page's one script under that nonce (confirming a payment)."""
    policy = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
    if script_nonce:
        policy = (
            f"default-src 'none'; style-src 'unsafe-inline'; img-src data: https://*.stripe.com;"
            f" script-src 'nonce-{script_nonce}' https://js.stripe.com; connect-src https://api.stripe.com;"
            " frame-src https://js.stripe.com https://hooks.stripe.com; frame-ancestors 'none'"
        )
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        "Cache-Control": "private, no-store",
        "Content-Security-Policy": policy,
        "X-Robots-Tag": "noindex",
        "Referrer-Policy": "no-referrer",
    }
    return Response(body=page, status_code=200, headers=headers)


def script_nonce() -> str:
    return secrets.token_urlsafe(16)


def base_url(app) -> str:
    """Where this API is reached, for links it returns: the request's host (and stage on API Gateway)."""
    request = app.current_request
    host = request.headers.get("host") or "localhost"
    local = host.startswith(("127.", "localhost", "[::1]"))
    proto = request.headers.get("x-forwarded-proto") or ("http" if local else "https")
    stage = (request.context or {}).get("stage")
    prefix = f"/{stage}" if stage and ".execute-api." in host else ""
    return f"{proto}://{host}{prefix}"


def outcome_response(outcome) -> Response:
    """An idempotency Outcome as a response; a replay says so in a header."""
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    return json_response(outcome.body, outcome.status, headers)


_CHALICE_ERRORS = {
    "UnsupportedMediaType": errors.UnsupportedMediaType,
    "BadRequestError": errors.InvalidRequest,
    "BadRequest": errors.InvalidRequest,
    "NotFoundError": errors.NotFound,
}


def normalize_chalice_error(response: Response, request_id: str | None = None) -> Response:
    """Chalice answers some requests itself ({"Code", "Message"}): give those our error shape."""
    body = response.body
    if not isinstance(body, dict) or set(body) != {"Code", "Message"}:
        return response
    kind = _CHALICE_ERRORS.get(body["Code"])
    if kind is not None:
        return error_response(kind(str(body["Message"])), request_id)
    error = {"type": "api_error" if response.status_code >= 500 else "invalid_request", "message": body["Message"]}
    if response.status_code == 405:
        error["code"] = "method_not_allowed"
    if response.status_code >= 500:
        error["message"] = "internal error"
    if request_id:
        error["request_id"] = request_id
    return json_response({"error": error}, response.status_code, response.headers)


def error_response(exc: errors.BillingError, request_id: str | None = None) -> Response:
    status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 500)
    body = {"error": {"type": exc.kind, "message": exc.message}}
    if exc.details:
        body["error"]["details"] = exc.details
    if exc.code:
        body["error"]["code"] = exc.code
    if request_id:
        body["error"]["request_id"] = request_id
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if status in (409, 429, 503):
        headers["Retry-After"] = "1"
    return json_response(body, status, headers)


def request_id_of(app) -> str:
    request = getattr(app, "current_request", None)
    context = getattr(request, "context", None) or {}
    return context.get("requestId") or str(uuid.uuid4())


def api(app):
    """Decorator factory for routes: ``@app.route(...)`` over ``@api(app)``."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            try:
                return view(*args, **kwargs)
            except errors.BillingError as exc:
                return error_response(exc, request_id_of(app))
            except (db_errors.InvalidValue, db_errors.CheckViolation, db_errors.NotNullViolation) as exc:
                # Validation should have caught it; the database did. Still the client's input.
                log.warning("database refused a value validation let through: %s", exc)
                return error_response(errors.InvalidRequest("a value is invalid or out of range"), request_id_of(app))
            except db_errors.DatabaseUnavailable:
                log.exception("database unavailable")
                unavailable = errors.ServiceUnavailable("the database is unavailable, retry shortly")
                return error_response(unavailable, request_id_of(app))
            except (db_errors.RetryableError, db_errors.QueryTimeout) as exc:
                # Retried once in the unit of work already (idempotency.in_tenant_scope): still busy.
                log.warning("database busy: %s", exc)
                busy = errors.ServiceUnavailable("the database is busy, retry shortly", code="database_busy")
                return error_response(busy, request_id_of(app))
            except Exception:
                request_id = request_id_of(app)
                log.exception("unhandled error in %s (request %s)", view.__name__, request_id)
                body = {"error": {"type": "api_error", "message": "internal error", "request_id": request_id}}
                return json_response(body, 500)

        return wrapper

    return decorate
