"""billing-platform: every entry point, as Chalice decorators. Bodies parse, call chalicelib, return."""

import os

from chalice import Chalice, CognitoUserPoolAuthorizer, Rate

from chalicelib import (
    api_clients,
    consumers,
    cors,
    http,
    idempotency,
    observability,
    onboarding,
    ops,
    outbox,
    pagination,
    webhook_endpoints,
)
from chalicelib import handlers as handlers_of
from chalicelib import health as health_check
from chalicelib.auth import ADMIN, PEOPLE_ADMIN, READ, USAGE, WRITE, Access
from chalicelib.billing import (
    accounts,
    calendar,
    coupons,
    credit_notes,
    documents,
    entitlements,
    invoice_documents,
    invoice_items,
    invoices,
    ledger,
    lifecycle,
    plans,
    rebill,
    rebill_batch,
    subscriptions,
    tax_rates,
    tenant_limits,
    tenants,
    upcoming,
    usage,
)
from chalicelib.db.scope import require_active, tenant_transaction
from chalicelib.http import api

app = Chalice(app_name="billing-platform")
app.api.binary_types.append("application/pdf")  # invoice PDFs (clients send Accept: application/pdf)
observability.configure_logging()
# Queue and topic names are fixed when the app is packaged; a prefix lets two
# stages share one AWS account.
PREFIX = os.environ.get("RESOURCE_PREFIX", "billing")


# API Gateway verifies tokens where a user pool is configured at deploy time. Locally (chalice
# local, tests) there is none: chalice's local stand-in would trust any token unverified, so the
# app verifies tokens itself instead (and always checks the route's Access: groups, scopes, machines).
_POOL_ARN = os.environ.get("COGNITO_USER_POOL_ARN")
_COGNITO = CognitoUserPoolAuthorizer("cognito", provider_arns=[_POOL_ARN]) if _POOL_ARN else None


def on_gateway(access: Access) -> dict:
    """The route's authorizer at API Gateway: the pool, requiring an access token with one of the route's scopes."""
    return {"authorizer": _COGNITO.with_scopes(list(access.scopes))} if _COGNITO else {}


@app.middleware("all")
def log_every_invocation(event, get_response):
    return observability.log_invocation(event, get_response)


@app.middleware("http")
def cors_on_every_response(event, get_response):
    # Outside the next one: the errors it reshapes carry CORS headers too (chalicelib.cors).
    return cors.decorate(event, get_response(event))


@app.middleware("http")
def chalice_errors_in_our_shape(event, get_response):
    return http.normalize_chalice_error(get_response(event), http.request_id_of(app))


@app.route("/v1/health", methods=["GET"])
@api(app)
def health():
    result = health_check.check()
    return http.json_response(result, 200 if result["database"]["reachable"] else 503)


@app.route("/v1/tenants", methods=["POST"], **on_gateway(PEOPLE_ADMIN))
@api(app)
def create_tenant():
    request = http.read(app, PEOPLE_ADMIN, "tenant_create")
    command = tenants.NewTenant(**request.body)
    work = lambda tx: onboarding.provision(tx, request.principal, command)  # noqa: E731
    # After the commit; tenant.created's consumer finishes the invitation if this fails.
    welcome = lambda tenant: onboarding.welcome(tenant, command.first_admin)  # noqa: E731
    return _with_events(request, work, status=201, then=welcome)


@app.route("/v1/plans", methods=["POST"], **on_gateway(ADMIN))
@api(app)
def create_plan():
    request = http.read(app, ADMIN, "plan_create")
    command = plans.NewPlan(**request.body)
    return http.outcome_response(
        idempotency.run(request, lambda tx: plans.create(tx, request.principal, command), status=201)
    )


@app.route("/v1/plans", methods=["GET"], **on_gateway(READ))
@api(app)
def list_plans():
    request = http.read(app, READ)
    page = pagination.page_request(request.query)
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(plans.list_page(tx, page))


@app.route("/v1/accounts", methods=["POST"], **on_gateway(WRITE))
@api(app)
def create_account():
    request = http.read(app, WRITE, "account_create")
    command = accounts.NewAccount(**request.body)
    return _with_events(request, lambda tx: accounts.create(tx, request.principal, command), status=201)


@app.route("/v1/accounts", methods=["GET"], **on_gateway(READ))
@api(app)
def list_accounts():
    request = http.read(app, READ)
    page = pagination.page_request(request.query)
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(accounts.list_page(tx, page))


@app.route("/v1/accounts/{account_id}", methods=["GET"], **on_gateway(READ))
@api(app)
def get_account(account_id):
    request = http.read(app, READ)
    account_id = pagination.parse_id(account_id, "id")
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(accounts.get(tx, account_id))


@app.route("/v1/accounts/{account_id}", methods=["POST"], **on_gateway(WRITE))
@api(app)
def update_account(account_id):
    request = http.read(app, WRITE, "account_update")
    account_id = pagination.parse_id(account_id, "id")
    rates = request.body["default_tax_rates"]
    work = lambda tx: accounts.set_default_tax_rates(tx, request.principal, account_id, rates)  # noqa: E731
    return http.outcome_response(idempotency.run(request, work))


@app.route("/v1/accounts/{account_id}/ledger", methods=["GET"], **on_gateway(READ))
@api(app)
def get_account_ledger(account_id):
    request = http.read(app, READ)
    account_id, page = pagination.parse_id(account_id, "id"), pagination.page_request(request.query)
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(ledger.list_page(tx, account_id, page))


@app.route("/v1/accounts/{account_id}/entitlements", methods=["GET"], **on_gateway(READ))
@api(app)
def get_account_entitlements(account_id):
    request = http.read(app, READ)
    account_id = pagination.parse_id(account_id, "id")
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(entitlements.of_account(tx, account_id))


@app.route("/v1/accounts/{account_id}/upcoming_invoice", methods=["GET"], **on_gateway(READ))
@api(app)
def get_upcoming_invoice(account_id):
    request = http.read(app, READ)
    account_id = pagination.parse_id(account_id, "id")
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(upcoming.of_account(tx, account_id))


@app.route("/v1/accounts/{account_id}/rebill", methods=["POST"], **on_gateway(ADMIN))
@api(app)
def rebill_account_now(account_id):
    request = http.read(app, ADMIN, "rebill_now", body_required=False)
    account_id = pagination.parse_id(account_id, "id")
    outcome = idempotency.run(
        request,
        lambda: rebill.rebill_now(request.principal.tenant_id, account_id, request.principal),
        own_transactions=True,
    )
    return http.outcome_response(outcome)


@app.route("/v1/accounts/{account_id}/payment_methods/setup", methods=["POST"], **on_gateway(WRITE))
@api(app)
def setup_payment_method(account_id):
    request = http.read(app, WRITE)
    account_id = pagination.parse_id(account_id, "id")
    tenant_id = request.principal.tenant_id
    from chalicelib.billing import payment_methods  # the gateway's routes import their modules when called

    setup = payment_methods.setup(tenant_id, request.principal, account_id, tenant_transaction)
    return http.json_response(setup, 201)


@app.route("/v1/gateway", methods=["GET"], **on_gateway(ADMIN))
@api(app)
def get_gateway():
    request = http.read(app, ADMIN)
    require_active(request.principal.tenant_id)
    from chalicelib.billing import gateway_accounts

    return http.json_response(gateway_accounts.describe(request.principal.tenant_id))


@app.route("/v1/gateway", methods=["PUT"], **on_gateway(PEOPLE_ADMIN))
@api(app)
def connect_gateway():
    request = http.read(app, PEOPLE_ADMIN, "gateway_connect")
    from chalicelib.billing import gateway_accounts

    command = gateway_accounts.Connection(**request.body)
    tenant_id = request.principal.tenant_id
    require_active(tenant_id)  # before its keys are stored anywhere
    connected = gateway_accounts.connect(tenant_id, request.principal, command, calendar.utcnow(), tenant_transaction)
    return http.json_response(connected)


@app.route("/v1/gateway/stripe/{tenant_id}", methods=["POST"])
@api(app)
def stripe_webhook(tenant_id):
    """Stripe's webhooks (no Cognito: the body's signature, with the tenant's webhook secret, is the proof)."""
    request = app.current_request
    raw = request.raw_body or b""
    return http.json_response(handlers_of.stripe_webhook(tenant_id, raw, request.headers.get("stripe-signature")))


def _with_events(request, work, status: int = 200, *, own_transactions: bool = False, then=None):
    """A change that writes domain events: its events go out right after it commits."""
    outcome = idempotency.run(request, work, status=status, own_transactions=own_transactions, then=then)
    outbox.flush_quietly(request.principal.tenant_id)
    return http.outcome_response(outcome)


@app.route("/v1/subscriptions", methods=["POST"], **on_gateway(WRITE))
@api(app)
def create_subscription():
    request = http.read(app, WRITE, "subscription_create")
    command = subscriptions.NewSubscription.of(request.body)
    return _with_events(request, lambda tx: subscriptions.create(tx, request.principal, command), status=201)


@app.route("/v1/subscriptions", methods=["GET"], **on_gateway(READ))
@api(app)
def list_subscriptions():
    request = http.read(app, READ)
    page = pagination.page_request(request.query)
    filters = pagination.filters(request.query, subscriptions.STATUSES)
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(subscriptions.list_page(tx, page, **filters))


@app.route("/v1/subscriptions/{subscription_id}", methods=["GET"], **on_gateway(READ))
@api(app)
def get_subscription(subscription_id):
    request = http.read(app, READ)
    subscription_id = pagination.parse_id(subscription_id, "id")
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(subscriptions.get(tx, subscription_id))


@app.route("/v1/subscriptions/{subscription_id}/cancel", methods=["POST"], **on_gateway(WRITE))
@api(app)
def cancel_subscription(subscription_id):
    request = http.read(app, WRITE, "subscription_cancel", body_required=False)
    command = subscriptions.Cancel(pagination.parse_id(subscription_id, "id"), **request.body)
    return _with_events(request, lambda tx: subscriptions.cancel(tx, request.principal, command))


@app.route("/v1/subscriptions/{subscription_id}", methods=["POST"], **on_gateway(WRITE))
@api(app)
def update_subscription(subscription_id):
    request = http.read(app, WRITE, "subscription_update")
    command = lifecycle.Update.of(pagination.parse_id(subscription_id, "id"), request.body)
    return _with_events(request, lambda tx: lifecycle.update(tx, request.principal, command))


@app.route("/v1/subscriptions/{subscription_id}/pending_change", methods=["DELETE"], **on_gateway(WRITE))
@api(app)
def cancel_pending_change(subscription_id):
    request = http.read(app, WRITE)
    subscription_id = pagination.parse_id(subscription_id, "id")
    return _with_events(request, lambda tx: lifecycle.cancel_pending_change(tx, request.principal, subscription_id))


@app.route("/v1/subscriptions/{subscription_id}/pause", methods=["POST"], **on_gateway(WRITE))
@api(app)
def pause_subscription(subscription_id):
    request = http.read(app, WRITE, "subscription_pause", body_required=False)
    command = lifecycle.Pause.of(pagination.parse_id(subscription_id, "id"), request.body)
    return _with_events(request, lambda tx: lifecycle.pause(tx, request.principal, command))


@app.route("/v1/subscriptions/{subscription_id}/resume", methods=["POST"], **on_gateway(WRITE))
@api(app)
def resume_subscription(subscription_id):
    request = http.read(app, WRITE, "subscription_resume", body_required=False)
    command = lifecycle.Resume.of(pagination.parse_id(subscription_id, "id"), request.body)
    return _with_events(request, lambda tx: lifecycle.resume(tx, request.principal, command))


@app.route("/v1/invoices", methods=["GET"], **on_gateway(READ))
@api(app)
def list_invoices():
    request = http.read(app, READ)
    page = pagination.page_request(request.query)
    filters = pagination.filters(request.query, invoices.STATUSES, ("period_start_gte", "period_start_lt"))
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(invoices.list_page(tx, page, **filters))


@app.route("/v1/invoices", methods=["POST"], **on_gateway(WRITE))
@api(app)
def create_invoice():
    request = http.read(app, WRITE, "invoice_create")
    command, tenant_id, now = invoices.NewInvoice.of(request.body), request.principal.tenant_id, calendar.utcnow()
    work = lambda tx: invoices.write_one_off(tx, request.principal, command, now)  # noqa: E731
    return _with_events(request, work, status=201, then=lambda invoice: invoices.collected(tenant_id, invoice, now))


@app.route("/v1/invoices/{invoice_id}", methods=["GET"], **on_gateway(READ))
@api(app)
def get_invoice(invoice_id):
    request = http.read(app, READ)
    invoice_id = pagination.parse_id(invoice_id, "id")
    tenant_id = request.principal.tenant_id
    with tenant_transaction(tenant_id) as tx:
        invoice = invoices.get(tx, invoice_id)
        base_url = http.base_url(app)
        return http.json_response(invoice_documents.with_links(tx, tenant_id, invoice, base_url, calendar.utcnow()))


@app.route("/v1/invoices/{invoice_id}/pdf", methods=["GET"], **on_gateway(READ))
@api(app)
def get_invoice_pdf(invoice_id):
    request = http.read(app, READ)
    invoice_id = pagination.parse_id(invoice_id, "id")
    with tenant_transaction(request.principal.tenant_id) as tx:
        document = invoice_documents.of(tx, invoice_id)
    return http.pdf_response(documents.render_pdf(document), document.invoice)


@app.route("/v1/invoices/{invoice_id}/finalize", methods=["POST"], **on_gateway(WRITE))
@api(app)
def finalize_invoice(invoice_id):
    request = http.read(app, WRITE)
    invoice_id, tenant_id = pagination.parse_id(invoice_id, "id"), request.principal.tenant_id
    work = lambda tx: invoices.finalize_draft(tx, request.principal, invoice_id)  # noqa: E731
    return _with_events(request, work, then=lambda invoice: invoices.collected(tenant_id, invoice, calendar.utcnow()))


@app.route("/v1/invoices/{invoice_id}/void", methods=["POST"], **on_gateway(ADMIN))
@api(app)
def void_invoice(invoice_id):
    request = http.read(app, ADMIN)
    invoice_id = pagination.parse_id(invoice_id, "id")
    require_active(request.principal.tenant_id)
    invoices.withdraw_waiting_payment(request.principal.tenant_id, invoice_id, calendar.utcnow())
    return _with_events(request, lambda tx: invoices.void(tx, request.principal, invoice_id))


@app.route("/v1/invoices/{invoice_id}/mark_uncollectible", methods=["POST"], **on_gateway(ADMIN))
@api(app)
def mark_invoice_uncollectible(invoice_id):
    request = http.read(app, ADMIN)
    invoice_id = pagination.parse_id(invoice_id, "id")
    return _with_events(request, lambda tx: invoices.mark_uncollectible(tx, request.principal, invoice_id))


@app.route("/v1/hosted_invoices/{link}", methods=["GET"])
@api(app)
def hosted_invoice_page(link):
    document = invoice_documents.of_link(link, calendar.utcnow(), confirmable=True)
    nonce = http.script_nonce() if document.confirm else None
    pdf_url = f"{http.base_url(app)}/v1/hosted_invoices/{link}/pdf"
    return http.html_response(documents.render_html(document, pdf_url=pdf_url, script_nonce=nonce), script_nonce=nonce)


@app.route("/v1/hosted_invoices/{link}/pdf", methods=["GET"])
@api(app)
def hosted_invoice_pdf(link):
    document = invoice_documents.of_link(link, calendar.utcnow())
    return http.pdf_response(documents.render_pdf(document), document.invoice)


@app.route("/v1/invoice_items", methods=["POST"], **on_gateway(WRITE))
@api(app)
def create_invoice_item():
    request = http.read(app, WRITE, "invoice_item_create")
    command = invoice_items.NewInvoiceItem.of(request.body)
    work = lambda tx: invoice_items.create(tx, request.principal, command)  # noqa: E731
    return http.outcome_response(idempotency.run(request, work, status=201))


@app.route("/v1/invoice_items", methods=["GET"], **on_gateway(READ))
@api(app)
def list_invoice_items():
    request = http.read(app, READ)
    page = pagination.page_request(request.query)
    account_id = pagination.filters(request.query, ())["account_id"]
    pending = pagination.flag(request.query, "pending")
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(invoice_items.list_page(tx, page, account_id=account_id, pending=pending))


@app.route("/v1/invoice_items/{item_id}", methods=["GET"], **on_gateway(READ))
@api(app)
def get_invoice_item(item_id):
    request = http.read(app, READ)
    item_id = pagination.parse_id(item_id, "id")
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(invoice_items.get(tx, item_id))


@app.route("/v1/invoice_items/{item_id}", methods=["DELETE"], **on_gateway(WRITE))
@api(app)
def delete_invoice_item(item_id):
    request = http.read(app, WRITE)
    item_id = pagination.parse_id(item_id, "id")
    return http.outcome_response(
        idempotency.run(request, lambda tx: invoice_items.delete(tx, request.principal, item_id))
    )


@app.route("/v1/tax_rates", methods=["POST"], **on_gateway(ADMIN))
@api(app)
def create_tax_rate():
    request = http.read(app, ADMIN, "tax_rate_create")
    command = tax_rates.NewTaxRate.of(request.body)
    work = lambda tx: tax_rates.create(tx, request.principal, command)  # noqa: E731
    return http.outcome_response(idempotency.run(request, work, status=201))


@app.route("/v1/tax_rates", methods=["GET"], **on_gateway(READ))
@api(app)
def list_tax_rates():
    request = http.read(app, READ)
    page = pagination.page_request(request.query)
    active = pagination.flag(request.query, "active")
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(tax_rates.list_page(tx, page, active=active))


@app.route("/v1/tax_rates/{rate_id}", methods=["GET"], **on_gateway(READ))
@api(app)
def get_tax_rate(rate_id):
    request = http.read(app, READ)
    rate_id = pagination.parse_id(rate_id, "id")
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(tax_rates.get(tx, rate_id))


@app.route("/v1/tax_rates/{rate_id}", methods=["POST"], **on_gateway(ADMIN))
@api(app)
def update_tax_rate(rate_id):
    request = http.read(app, ADMIN, "tax_rate_update")
    rate_id = pagination.parse_id(rate_id, "id")
    work = lambda tx: tax_rates.update(tx, request.principal, rate_id, request.body)  # noqa: E731
    return http.outcome_response(idempotency.run(request, work))


@app.route("/v1/coupons", methods=["POST"], **on_gateway(ADMIN))
@api(app)
def create_coupon():
    request = http.read(app, ADMIN, "coupon_create")
    command = coupons.NewCoupon.of(request.body, calendar.utcnow())
    work = lambda tx: coupons.create(tx, request.principal, command)  # noqa: E731
    return http.outcome_response(idempotency.run(request, work, status=201))


@app.route("/v1/coupons", methods=["GET"], **on_gateway(READ))
@api(app)
def list_coupons():
    request = http.read(app, READ)
    page = pagination.page_request(request.query)
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(coupons.list_page(tx, page))


@app.route("/v1/coupons/{coupon_id}", methods=["GET"], **on_gateway(READ))
@api(app)
def get_coupon(coupon_id):
    request = http.read(app, READ)
    coupon_id = pagination.parse_id(coupon_id, "id")
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(coupons.get(tx, coupon_id))


@app.route("/v1/coupons/{coupon_id}", methods=["POST"], **on_gateway(ADMIN))
@api(app)
def update_coupon(coupon_id):
    request = http.read(app, ADMIN, "coupon_update")
    coupon_id = pagination.parse_id(coupon_id, "id")
    work = lambda tx: coupons.update(tx, request.principal, coupon_id, request.body)  # noqa: E731
    return http.outcome_response(idempotency.run(request, work))


@app.route("/v1/accounts/{account_id}/discounts", methods=["POST"], **on_gateway(WRITE))
@api(app)
def create_account_discount(account_id):
    request = http.read(app, WRITE, "discount_create")
    account_id = pagination.parse_id(account_id, "id")
    coupon_id = request.body["coupon"].lower()
    work = lambda tx: coupons.apply_to_account(tx, request.principal, account_id, coupon_id)  # noqa: E731
    return http.outcome_response(idempotency.run(request, work, status=201))


@app.route("/v1/accounts/{account_id}/discounts", methods=["DELETE"], **on_gateway(WRITE))
@api(app)
def delete_account_discount(account_id):
    request = http.read(app, WRITE)
    account_id = pagination.parse_id(account_id, "id")
    work = lambda tx: coupons.remove_from_account(tx, request.principal, account_id)  # noqa: E731
    return http.outcome_response(idempotency.run(request, work))


@app.route("/v1/subscriptions/{subscription_id}/discounts", methods=["POST"], **on_gateway(WRITE))
@api(app)
def create_subscription_discount(subscription_id):
    request = http.read(app, WRITE, "discount_create")
    subscription_id = pagination.parse_id(subscription_id, "id")
    coupon_id = request.body["coupon"].lower()
    work = lambda tx: coupons.apply_to_subscription(tx, request.principal, subscription_id, coupon_id)  # noqa: E731
    return http.outcome_response(idempotency.run(request, work, status=201))


@app.route("/v1/subscriptions/{subscription_id}/discounts", methods=["DELETE"], **on_gateway(WRITE))
@api(app)
def delete_subscription_discount(subscription_id):
    request = http.read(app, WRITE)
    subscription_id = pagination.parse_id(subscription_id, "id")
    work = lambda tx: coupons.remove_from_subscription(tx, request.principal, subscription_id)  # noqa: E731
    return http.outcome_response(idempotency.run(request, work))


@app.route("/v1/credit_notes", methods=["POST"], **on_gateway(ADMIN))
@api(app)
def create_credit_note():
    request = http.read(app, ADMIN, "credit_note_create")
    command, tenant_id = credit_notes.NewCreditNote.of(request.body), request.principal.tenant_id
    require_active(tenant_id)
    invoices.withdraw_waiting_payment(tenant_id, command.invoice_id, calendar.utcnow())
    work = lambda tx: credit_notes.issue(tx, request.principal, command)  # noqa: E731
    return _with_events(request, work, status=201, then=lambda note: credit_notes.refunded(tenant_id, note))


@app.route("/v1/credit_notes", methods=["GET"], **on_gateway(READ))
@api(app)
def list_credit_notes():
    request = http.read(app, READ)
    page = pagination.page_request(request.query)
    invoice_id = pagination.parse_id(request.query["invoice"], "invoice") if "invoice" in request.query else None
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(credit_notes.list_page(tx, page, invoice_id=invoice_id))


@app.route("/v1/credit_notes/{note_id}", methods=["GET"], **on_gateway(READ))
@api(app)
def get_credit_note(note_id):
    request = http.read(app, READ)
    note_id = pagination.parse_id(note_id, "id")
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(credit_notes.get(tx, note_id))


@app.route("/v1/invoice_settings", methods=["GET"], **on_gateway(READ))
@api(app)
def get_invoice_settings():
    request = http.read(app, READ)
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(tenants.invoice_settings(tx))


@app.route("/v1/invoice_settings", methods=["POST"], **on_gateway(ADMIN))
@api(app)
def update_invoice_settings():
    request = http.read(app, ADMIN, "invoice_settings_update")
    work = lambda tx: tenants.update_invoice_settings(tx, request.principal, request.body)  # noqa: E731
    return http.outcome_response(idempotency.run(request, work))


@app.route("/v1/events", methods=["POST"], **on_gateway(USAGE))
@api(app)
def record_usage():
    request = http.read(app, USAGE, usage.schema_for)
    batch = usage.UsageBatch.of(request.body)
    # The plan's rate (429) is taken with the key's claim: a replay spends none, a refusal claims nothing.
    work = lambda tx: usage.record(tx, request.principal, batch)  # noqa: E731
    outcome = idempotency.run(request, work, before=tenant_limits.admit_usage)
    if outcome.body["rejected"] and not outcome.replayed:  # its usage.rejected; an accepted batch writes no event
        outbox.flush_quietly(request.principal.tenant_id)
    return http.outcome_response(outcome)


# --- what happened: the event log and tenants' webhooks ---------------------------------


@app.route("/v1/notifications", methods=["GET"], **on_gateway(READ))
@api(app)
def list_notifications():
    """The tenant's events of the last 30 days (``/v1/events`` is usage ingestion)."""
    from chalicelib import events

    request = http.read(app, READ)
    page = pagination.page_request(request.query)
    event_type = pagination.choice(request.query or {}, "type", events.KNOWN_TYPES)
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(outbox.list_page(tx, page, event_type))


@app.route("/v1/notifications/{event_id}", methods=["GET"], **on_gateway(READ))
@api(app)
def get_notification(event_id):
    request = http.read(app, READ)
    event_id = pagination.parse_id(event_id, "id")
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(outbox.get(tx, event_id))


@app.route("/v1/webhook_endpoints", methods=["POST"], **on_gateway(ADMIN))
@api(app)
def create_webhook_endpoint():
    request = http.read(app, ADMIN, "webhook_endpoint_create")
    fields = webhook_endpoints.EndpointFields.of(request.body)
    work = lambda tx: webhook_endpoints.create(tx, fields)  # noqa: E731
    return http.outcome_response(idempotency.run(request, work, status=201, stored=webhook_endpoints.without_secret))


@app.route("/v1/webhook_endpoints", methods=["GET"], **on_gateway(ADMIN))
@api(app)
def list_webhook_endpoints():
    request = http.read(app, ADMIN)
    page = pagination.page_request(request.query)
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(webhook_endpoints.list_page(tx, page))


@app.route("/v1/webhook_endpoints/{endpoint_id}", methods=["GET"], **on_gateway(ADMIN))
@api(app)
def get_webhook_endpoint(endpoint_id):
    request = http.read(app, ADMIN)
    endpoint_id = pagination.parse_id(endpoint_id, "id")
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(webhook_endpoints.get(tx, endpoint_id))


@app.route("/v1/webhook_endpoints/{endpoint_id}", methods=["POST"], **on_gateway(ADMIN))
@api(app)
def update_webhook_endpoint(endpoint_id):
    request = http.read(app, ADMIN, "webhook_endpoint_update")
    endpoint_id = pagination.parse_id(endpoint_id, "id")
    fields = webhook_endpoints.EndpointFields.of(request.body)
    return http.outcome_response(idempotency.run(request, lambda tx: webhook_endpoints.update(tx, endpoint_id, fields)))


@app.route("/v1/webhook_endpoints/{endpoint_id}", methods=["DELETE"], **on_gateway(ADMIN))
@api(app)
def delete_webhook_endpoint(endpoint_id):
    request = http.read(app, ADMIN, body_required=False)
    endpoint_id = pagination.parse_id(endpoint_id, "id")
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(webhook_endpoints.delete(tx, endpoint_id))


@app.route("/v1/webhook_endpoints/{endpoint_id}/rotate", methods=["POST"], **on_gateway(ADMIN))
@api(app)
def rotate_webhook_secret(endpoint_id):
    """A new signing secret, shown once; the old one signs too for 24 hours."""
    request = http.read(app, ADMIN, body_required=False)
    endpoint_id = pagination.parse_id(endpoint_id, "id")
    now = calendar.utcnow()
    work = lambda tx: webhook_endpoints.rotate(tx, endpoint_id, now)  # noqa: E731
    return http.outcome_response(idempotency.run(request, work, stored=webhook_endpoints.without_secret))


@app.route("/v1/webhook_endpoints/{endpoint_id}/deliveries", methods=["GET"], **on_gateway(ADMIN))
@api(app)
def list_webhook_deliveries(endpoint_id):
    from chalicelib import webhook_delivery

    request = http.read(app, ADMIN)
    endpoint_id = pagination.parse_id(endpoint_id, "id")
    page = pagination.page_request(request.query)
    status = pagination.choice(request.query or {}, "status", ("pending", "delivered", "failed"))
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(webhook_delivery.list_page(tx, endpoint_id, page, status))


@app.route("/v1/webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/retry", methods=["POST"], **on_gateway(ADMIN))
@api(app)
def retry_webhook_delivery(endpoint_id, delivery_id):
    """Send one delivery again now (with the same webhook-id), whatever became of it."""
    from chalicelib import webhook_delivery

    request = http.read(app, ADMIN, body_required=False)
    endpoint_id = pagination.parse_id(endpoint_id, "id")
    delivery_id = pagination.parse_id(delivery_id, "id")
    tenant_id = request.principal.tenant_id
    return http.json_response(webhook_delivery.resend(tenant_id, endpoint_id, delivery_id, calendar.utcnow()))


# --- identity: machine clients and Cognito's pre-token trigger ------------------------------


@app.route("/v1/api_clients", methods=["POST"], **on_gateway(PEOPLE_ADMIN))
@api(app)
def create_api_client():
    """A machine client (client-credentials grant) of the caller's tenant; its secret is shown once."""
    request = http.read(app, PEOPLE_ADMIN, "api_client_create")
    command = api_clients.NewClient.of(request.body)
    run = lambda work: idempotency.run(request, work, status=201, stored=api_clients.without_secret)  # noqa: E731
    return http.outcome_response(api_clients.create_once(run, request.principal, command))


@app.route("/v1/api_clients", methods=["GET"], **on_gateway(PEOPLE_ADMIN))
@api(app)
def list_api_clients():
    request = http.read(app, PEOPLE_ADMIN)
    page = pagination.page_request(request.query)
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(api_clients.list_page(tx, page))


@app.route("/v1/api_clients/{api_client_id}", methods=["GET"], **on_gateway(PEOPLE_ADMIN))
@api(app)
def get_api_client(api_client_id):
    request = http.read(app, PEOPLE_ADMIN)
    api_client_id = pagination.parse_id(api_client_id, "id")
    with tenant_transaction(request.principal.tenant_id) as tx:
        return http.json_response(api_clients.get(tx, api_client_id))


@app.route("/v1/api_clients/{api_client_id}", methods=["DELETE"], **on_gateway(PEOPLE_ADMIN))
@api(app)
def delete_api_client(api_client_id):
    """Its tokens stop working (within identity.BINDING_CACHE_S everywhere), then the Cognito client goes."""
    request = http.read(app, PEOPLE_ADMIN, body_required=False)
    api_client_id = pagination.parse_id(api_client_id, "id")
    with tenant_transaction(request.principal.tenant_id) as tx:
        deleted = api_clients.delete(tx, request.principal, api_client_id)
    api_clients.retire(deleted["client_id"])
    return http.json_response(deleted)


@app.lambda_function(name="bootstrap_operator")
def bootstrap_operator(event, context):
    """By hand, once per stage (``python -m devtools.bootstrap``): the platform operator's tenant and first
    admin, ``{"name", "email"}``; run again, it finds both and changes nothing."""
    if not isinstance(event, dict) or not all(isinstance(event.get(k), str) and event[k] for k in ("name", "email")):
        raise ValueError('the payload is {"name": "...", "email": "..."}')
    return onboarding.bootstrap_operator(event["name"], event["email"])


@app.lambda_function(name="pre_token_generation")
def pre_token_generation(event, context):
    """Cognito's pre-token-generation trigger (V3_0): tenant claims and scopes; raising refuses the token."""
    from chalicelib import identity

    return identity.answer(event)


# --- events: SNS fan-out to SQS consumers ---------------------------------------------


@app.on_sqs_message(queue=f"{PREFIX}-generate-invoice", batch_size=10, name="generate_invoice")
def generate_invoice(event):
    handlers = consumers.dispatch(handlers_of.GENERATE_INVOICE)
    return consumers.process_batch(consumers.records_of(event), "generate-invoice", handlers)


@app.on_sqs_message(queue=f"{PREFIX}-send-notification", batch_size=10, name="send_notification")
def send_notification(event):
    handlers = consumers.dispatch(handlers_of.SEND_NOTIFICATION)
    return consumers.process_batch(consumers.records_of(event), "send-notification", handlers)


@app.on_sqs_message(queue=f"{PREFIX}-audit-log", batch_size=10, name="audit_log")
def audit_log(event):
    return consumers.process_batch(consumers.records_of(event), "audit-log", consumers.dispatch(handlers_of.AUDIT_LOG))


@app.on_sqs_message(queue=f"{PREFIX}-webhooks", batch_size=10, name="webhook_fan_out")
def webhook_fan_out(event):
    """Every event type (no filter policy): each becomes a delivery per matching endpoint."""
    return consumers.process_batch(consumers.records_of(event), "webhooks", consumers.dispatch(handlers_of.WEBHOOKS))


@app.on_sqs_message(queue=f"{PREFIX}-webhook-deliveries", batch_size=10, name="webhook_delivery")
def webhook_delivery(event):
    """Kicks of endpoints' lanes (from the fan-out, a retry, the schedule): each lane in a thread of its own."""
    from chalicelib import webhook_delivery as delivery

    with observability.metrics_batch():  # the lanes' metrics too: one EMF document
        return delivery.process(consumers.records_of(event))


@app.on_sns_message(topic=f"{PREFIX}-ops", name="ops_notice")
def ops_notice(event):
    ops.handle_alert(event.subject, event.message)


@app.schedule(Rate(1, unit=Rate.MINUTES), name="outbox_sweep")
def outbox_sweep(event):
    # Events whose publish failed after their request committed; 30 s lets the
    # request's own flush go first.
    # And webhook deliveries due that no lane is on: waits past SQS's 15-minute delay, lost kicks.
    # And, last, retention: what is past its keep, in bounded batches for a few seconds (chalicelib.retention).
    from chalicelib import retention, webhook_delivery

    kicked = webhook_delivery.retry_due(calendar.utcnow())  # first: a publish backlog never starves retries
    published = outbox.sweep(older_than_s=30)
    return {"webhook_lanes": kicked, "published": published, "purged": retention.run_quietly()}


# --- the daily rebill -------------------------------------------------------------------

# A schedule expression is fixed at packaging time; REBILL_SCHEDULE sets it per stage.
REBILL_SCHEDULE = os.environ.get("REBILL_SCHEDULE", "cron(0 6 * * ? *)")


@app.schedule(REBILL_SCHEDULE, name="rebill_schedule")
def rebill_schedule(event):
    from chalicelib.billing import trials

    now = calendar.utcnow()
    # Fans out: the run's chains page through the due accounts from the rebill queue, one bounded step per message.
    return {**rebill.start(now, rebill.queue_url()), "trials_ending": trials.remind(now)}


# Drafts held for a tenant's grace period are finalized when it ends (to within this rate),
# and refunds a timeout left pending are settled again.
@app.schedule(Rate(15, unit=Rate.MINUTES), name="invoice_finalizer")
def invoice_finalizer(event):
    from chalicelib.billing import refunds

    now = calendar.utcnow()
    settled = refunds.settle_stale(now)  # first: a long backlog of drafts never starves refunds
    return {**invoices.finalize_due(now), "refunds_settled": settled}


# Up to 100 accounts per invocation: renewals are billed set-based per tenant.
@app.on_sqs_message(
    queue=f"{PREFIX}-rebill", batch_size=100, maximum_batching_window_in_seconds=5, name="rebill_processor"
)
def rebill_processor(event):
    with observability.metrics_batch():  # the batch's metrics: one EMF document
        return rebill_batch.process(consumers.records_of(event))


# Last, after every route: a public OPTIONS route on each path, so browsers' preflights reach the app
# (chalicelib.cors). A route declared below this line has none (tests/functional/test_cors_api.py says so).
cors.answer_preflights(app)
