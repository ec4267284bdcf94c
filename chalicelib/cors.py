"""Browsers on other origins (the single-page app): CORS, answered by the app itself, per stage.

``CORS_ALLOWED_ORIGINS`` (chalicelib.config) names the origins whose browsers may call a stage.
API Gateway's own CORS (chalice's ``cors=``) answers preflights with a mock integration whose
headers are fixed when the API is packaged, so it can name one origin, or ``*``. Here the app
answers instead, the same way under chalice local, in tests and behind API Gateway:

- every path has an OPTIONS route without an authorizer (``answer_preflights``): a preflight,
  which never carries the token, reaches the app and is answered 204 with the path's methods, the
  request headers the API reads and a max age; from an origin not allowed it is a 403
  (``cors_origin_not_allowed``), with no CORS headers, so the browser stops there;
- every other response, errors included (401, 403, 4xx, 5xx), echoes the request's ``Origin`` in
  ``Access-Control-Allow-Origin`` when, and only when, that origin is allowed, with ``Vary: Origin``
  and the headers a client may read (``decorate``, from app.py's middleware).

What API Gateway answers itself (the Cognito authorizer's 401/403, throttling, WAF) never reaches
the app: devtools.package gives those gateway responses the stage's first origin, statically.
"""

from chalice import Response

from chalicelib import errors, http
from chalicelib.config import get_settings

# The request headers the API reads (Accept: an invoice's PDF); the others a browser sends are safelisted.
ALLOW_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "Accept")
# The response headers the API sends that a script may read beyond the safelisted ones.
EXPOSE_HEADERS = ("Retry-After", "Idempotent-Replayed", "WWW-Authenticate", "Content-Disposition")
# Chromium caps a cached preflight at 2 hours (Firefox at 24): one preflight per path and origin per 2 hours.
MAX_AGE_S = 7200


def allows(origin: str | None, allowed: tuple[str, ...] | None = None) -> bool:
    """Whether a browser on ``origin`` (the request's Origin header) may call this stage."""
    if not origin:
        return False
    for entry in get_settings().cors_allowed_origins if allowed is None else allowed:
        if entry in ("*", origin):
            return True
        if entry.endswith(":*"):  # any port of that scheme and host, the default port too
            base = entry[:-2]
            if origin == base or (origin.startswith(f"{base}:") and origin[len(base) + 1 :].isdigit()):
                return True
    return False


def decorate(request, response: Response) -> Response:
    """CORS headers on one response, whatever it is, for an allowed Origin; none for any other."""
    if not get_settings().cors_allowed_origins:
        return response  # this stage serves no browsers on other origins: the response never varies
    headers = response.headers
    vary = next((name for name in headers if name.lower() == "vary"), "Vary")
    varies = headers.get(vary) or ""
    varies = ", ".join(varies) if isinstance(varies, list) else varies
    if "origin" not in [v.strip().lower() for v in varies.split(",")]:
        headers[vary] = f"{varies}, Origin" if varies else "Origin"
    origin = request.headers.get("origin") if request is not None else None
    if allows(origin):
        headers["Access-Control-Allow-Origin"] = origin
        if request.method != "OPTIONS":  # a preflight's answer is read by the browser, not the script
            headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSE_HEADERS)
    return response


def preflight(app, path: str) -> Response:
    """OPTIONS on ``path``: a CORS preflight from an allowed origin is a 204 that lets the browser send the
    request; from another, a 403 without CORS headers. An OPTIONS that is no preflight lists the methods."""
    request = app.current_request
    methods = [*sorted(m for m in app.routes[path] if m != "OPTIONS"), "OPTIONS"]
    origin = request.headers.get("origin")
    if not origin or "access-control-request-method" not in request.headers:
        return Response(body="", status_code=204, headers={"Allow": ", ".join(methods)})
    if not allows(origin):
        refused = errors.Forbidden("browsers on this origin may not call this API", code="cors_origin_not_allowed")
        return http.error_response(refused, http.request_id_of(app))
    headers = {
        "Access-Control-Allow-Methods": ", ".join(methods),
        "Access-Control-Allow-Headers": ", ".join(ALLOW_HEADERS),
        "Access-Control-Max-Age": str(MAX_AGE_S),
    }
    return Response(body="", status_code=204, headers=headers)


def answer_preflights(app) -> None:
    """An OPTIONS route, without authorizer, on every path of ``app`` that has none.

    API Gateway sends OPTIONS to the app only where the resource has an OPTIONS method, and a
    preflight never carries the token: so one per path, public. Call it after the last route.
    """
    for path in list(app.routes):
        if "OPTIONS" not in app.routes[path]:
            app.route(path, methods=["OPTIONS"], name="cors_preflight")(_preflight_view(app, path))


def _preflight_view(app, path: str):
    @http.api(app)
    def cors_preflight(**_path_params):
        """CORS preflight (answered by the app: no authorizer)."""
        return preflight(app, path)

    return cors_preflight
