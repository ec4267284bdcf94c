"""billing-platform: every entry point, as Chalice decorators. Bodies parse, call chalicelib, return."""

import os

from chalice import Chalice, CognitoUserPoolAuthorizer

from chalicelib import health as health_check
from chalicelib import http, idempotency, pagination
from chalicelib.auth import ADMIN, USER
from chalicelib.billing import accounts, invoices, ledger, plans, subscriptions, tenants, usage
from chalicelib.http import api

app = Chalice(app_name="billing-platform")


def _cognito_authorizer() -> dict:
    # API Gateway verifies tokens where a user pool is configured at deploy time.
    # Locally (chalice local, tests) there is none: chalice's local stand-in would
    # trust any token unverified, so the app verifies tokens itself instead.
    arn = os.environ.get("COGNITO_USER_POOL_ARN")
    return {"authorizer": CognitoUserPoolAuthorizer("cognito", provider_arns=[arn])} if arn else {}


AUTH = _cognito_authorizer()


@app.middleware("http")
def chalice_errors_in_our_shape(event, get_response):
    return http.normalize_chalice_error(get_response(event))


@app.route("/v1/health", methods=["GET"])
@api(app)
def health():
    result = health_check.check()
    return http.json_response(result, 200 if result["database"]["reachable"] else 503)


@app.route("/v1/tenants", methods=["POST"], **AUTH)
@api(app)
def create_tenant():
    request = http.read(app, ADMIN, "tenant_create")
    return http.outcome_response(idempotency.run(request, tenants.create))


@app.route("/v1/plans", methods=["POST"], **AUTH)
@api(app)
def create_plan():
    request = http.read(app, ADMIN, "plan_create")
    return http.outcome_response(idempotency.run(request, plans.create))


@app.route("/v1/plans", methods=["GET"], **AUTH)
@api(app)
def list_plans():
    request = http.read(app, USER)
    page = pagination.page_request(request.query)
    with tenants.active(request.principal.tenant_id) as tx:
        return http.json_response(plans.list_page(tx, page))


@app.route("/v1/accounts", methods=["POST"], **AUTH)
@api(app)
def create_account():
    request = http.read(app, USER, "account_create")
    return http.outcome_response(idempotency.run(request, accounts.create))


@app.route("/v1/accounts", methods=["GET"], **AUTH)
@api(app)
def list_accounts():
    request = http.read(app, USER)
    page = pagination.page_request(request.query)
    with tenants.active(request.principal.tenant_id) as tx:
        return http.json_response(accounts.list_page(tx, page))


@app.route("/v1/accounts/{account_id}", methods=["GET"], **AUTH)
@api(app)
def get_account(account_id):
    request = http.read(app, USER)
    with tenants.active(request.principal.tenant_id) as tx:
        return http.json_response(accounts.get(tx, account_id))


@app.route("/v1/accounts/{account_id}/ledger", methods=["GET"], **AUTH)
@api(app)
def get_account_ledger(account_id):
    request = http.read(app, USER)
    page = pagination.page_request(request.query)
    with tenants.active(request.principal.tenant_id) as tx:
        return http.json_response(ledger.list_page(tx, account_id, page))


@app.route("/v1/subscriptions", methods=["POST"], **AUTH)
@api(app)
def create_subscription():
    request = http.read(app, USER, "subscription_create")
    return http.outcome_response(idempotency.run(request, subscriptions.create))


@app.route("/v1/subscriptions", methods=["GET"], **AUTH)
@api(app)
def list_subscriptions():
    request = http.read(app, USER)
    page = pagination.page_request(request.query)
    with tenants.active(request.principal.tenant_id) as tx:
        return http.json_response(subscriptions.list_page(tx, page, request.query))


@app.route("/v1/subscriptions/{subscription_id}", methods=["GET"], **AUTH)
@api(app)
def get_subscription(subscription_id):
    request = http.read(app, USER)
    with tenants.active(request.principal.tenant_id) as tx:
        return http.json_response(subscriptions.get(tx, subscription_id))


@app.route("/v1/subscriptions/{subscription_id}/cancel", methods=["POST"], **AUTH)
@api(app)
def cancel_subscription(subscription_id):
    request = http.read(app, USER, "subscription_cancel", body_required=False)
    return http.outcome_response(idempotency.run(request, subscriptions.cancel))


@app.route("/v1/invoices", methods=["GET"], **AUTH)
@api(app)
def list_invoices():
    request = http.read(app, USER)
    page = pagination.page_request(request.query)
    with tenants.active(request.principal.tenant_id) as tx:
        return http.json_response(invoices.list_page(tx, page, request.query))


@app.route("/v1/invoices/{invoice_id}", methods=["GET"], **AUTH)
@api(app)
def get_invoice(invoice_id):
    request = http.read(app, USER)
    with tenants.active(request.principal.tenant_id) as tx:
        return http.json_response(invoices.get(tx, invoice_id))


@app.route("/v1/events", methods=["POST"], **AUTH)
@api(app)
def record_usage():
    request = http.read(app, USER, usage.schema_for)
    return http.outcome_response(idempotency.run(request, usage.record))
