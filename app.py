"""billing-platform: every entry point, as Chalice decorators. Bodies parse, call chalicelib, return."""

from chalice import Chalice

from chalicelib import health as health_check
from chalicelib.http import api, json_response

app = Chalice(app_name="billing-platform")


@app.route("/v1/health", methods=["GET"])
@api(app)
def health():
    result = health_check.check()
    return json_response(result, 200 if result["database"]["reachable"] else 503)
