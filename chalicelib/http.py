"""The one place where meaning becomes HTTP: BillingError kinds -> status and JSON body.

Chalice turns any exception raised in a view into a bare 500 before middleware
sees it, so every route is wrapped by ``api``: a BillingError becomes its status
with a JSON body; anything else is logged with the request id and answered with a
generic 500 that leaks nothing.
"""

import functools
import json
import logging
import uuid

from chalice import Response

from chalicelib import errors
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


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(body=json.dumps(body, default=str), status_code=status, headers={**JSON_HEADERS, **(headers or {})})


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
            except db_errors.DatabaseUnavailable:
                log.exception("database unavailable")
                return error_response(errors.ServiceUnavailable("the database is unavailable, retry shortly"))
            except Exception:
                request_id = request_id_of(app)
                log.exception("unhandled error in %s (request %s)", view.__name__, request_id)
                body = {"error": {"type": "api_error", "message": "internal error", "request_id": request_id}}
                return json_response(body, 500)

        return wrapper

    return decorate
