"""Builds docs/openapi.json from the request schemas in chalicelib/schemas and the route list below.

    python -m devtools.openapi          # rewrite docs/openapi.json
    python -m devtools.openapi --check  # exit 1 if the committed document is stale

A test runs the check and compares the paths with app.routes, so the document,
the validators and the routes cannot drift apart.
"""

import json
import sys
from pathlib import Path

from chalicelib import events
from chalicelib.billing import invoices, subscriptions
from chalicelib.validation import SCHEMA_DIR
from devtools import generated

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "openapi.json"

TS = {"type": "string", "format": "date-time"}
TS_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
ID = {"type": "string", "format": "uuid"}
ID_OR_NULL = {"type": ["string", "null"], "format": "uuid"}
MONEY = {"type": "integer", "description": "minor units"}
CURRENCY = {
    "type": "string",
    "pattern": "^[A-Z]{3}$",
    "format": "iso-4217",
    "description": "ISO 4217 code; amounts beside it are in its minor units (USD 2 decimal places, JPY 0, BHD 3)",
}


def _object(name: str, properties: dict) -> dict:
    return {
        "type": "object",
        "required": list(properties),
        "properties": {"object": {"const": name}, **properties} if name else properties,
    }


RESPONSES = {
    "Tenant": _object(
        "tenant",
        {
            "id": ID,
            "name": {"type": "string"},
            "email": {"type": "string"},
            "plan": {"type": "string"},
            "status": {"enum": ["active", "suspended"]},
            "settings": {"type": "object"},
            "created_at": TS,
            "admin": {
                "type": "object",
                "description": "the first ADMIN (POST only): invited, pending while retried, or failed (email taken)",
                "properties": {
                    "email": {"type": "string"},
                    "status": {"enum": ["invited", "active", "pending", "failed"]},
                },
            },
        },
    ),
    "Plan": _object(
        "plan",
        {
            "id": ID,
            "code": {"type": "string"},
            "name": {"type": "string"},
            "interval": {"enum": ["day", "week", "month", "year"]},
            "interval_count": {"type": "integer"},
            "amount": {**MONEY, "description": "the default price, in currency (minor units)"},
            "currency": CURRENCY,
            "amounts": {
                "type": "object",
                "additionalProperties": MONEY,
                "description": "the flat price in each currency the plan is offered in, the default's included"
                " ({USD: 4900, EUR: 4500}): an account's currency picks its price",
            },
            "features": {"type": "object"},
            "limits": {"type": "object"},
            "usage_prices": {"type": "array"},
            "trial_days": {"type": "integer", "description": "a subscription's default trial (0: none)"},
            "trial_usage": {"enum": ["free", "billed"], "description": "whether usage during a trial is billed"},
            "active": {"type": "boolean"},
            "created_at": TS,
            "tax_rates": {
                "type": "array",
                "items": ID,
                "description": "tax rate ids this price's lines take instead of the account's defaults",
            },
        },
    ),
    "Account": _object(
        "account",
        {
            "id": ID,
            "email": {"type": "string"},
            "name": {"type": "string"},
            "currency": CURRENCY,
            "plan": {"type": ["string", "null"]},
            "status": {"enum": ["ACTIVE", "PENDING", "INACTIVE"]},
            "next_billing_at": TS_OR_NULL,
            "billing_anchor": TS_OR_NULL,
            "failure_count": {"type": "integer"},
            "metadata": {"type": "object"},
            "created_at": TS,
        },
    ),
    "PaymentMethod": {
        "type": ["object", "null"],
        "description": "the default card Stripe confirmed (a SetupIntent succeeded); nothing that could charge it",
        "properties": {
            "id": {"type": "string"},
            "type": {"type": "string"},
            "brand": {"type": ["string", "null"]},
            "last4": {"type": ["string", "null"]},
            "exp_month": {"type": ["integer", "null"]},
            "exp_year": {"type": ["integer", "null"]},
        },
    },
    "Gateway": {
        "type": "object",
        "required": ["object", "provider", "connected"],
        "properties": {
            "object": {"const": "gateway"},
            "provider": {"enum": ["stripe", None]},
            "connected": {"type": "boolean"},
            "account_id": {"type": "string", "description": "the Stripe account the secret key belongs to"},
            "secret_key_last4": {"type": "string"},
            "webhook_secret_last4": {"type": "string"},
            "publishable_key": {"type": ["string", "null"], "description": "for Stripe.js on the hosted page"},
            "connected_at": TS,
        },
    },
    "SetupIntent": _object(
        "setup_intent",
        {
            "id": {"type": "string", "description": "Stripe's SetupIntent id"},
            "account_id": ID,
            "customer": {"type": "string", "description": "the account's Stripe Customer (made once)"},
            "client_secret": {"type": "string", "description": "for Stripe.js confirmCardSetup on the tenant's page"},
        },
    ),
    "WebhookReceipt": {
        "type": "object",
        "required": ["received", "handled"],
        "properties": {
            "received": {"const": True},
            "handled": {"type": "boolean", "description": "false: a type we ignore, or an event processed before"},
        },
    },
    "Subscription": _object(
        "subscription",
        {
            "id": ID,
            "account_id": ID,
            "plan": {"type": "string"},
            "status": {"enum": list(subscriptions.STATUSES)},
            "billing_cycle": {"enum": ["daily", "weekly", "monthly", "yearly"]},
            "amount": {
                **MONEY,
                "description": "the plan price per period, per unit of quantity, in the account's currency",
            },
            "quantity": {"type": "integer", "description": "seats: the plan price is billed times the quantity"},
            "currency": {**CURRENCY, "description": "the account's: the plan's price in it is what is billed"},
            "billing_anchor": TS,
            "current_period_start": {**TS, "description": "the period (or trial) in progress"},
            "current_period_end": TS,
            "cancel_at_period_end": {"type": "boolean"},
            "canceled_at": TS_OR_NULL,
            "ended_at": {**TS_OR_NULL, "description": "when service ended and the final invoice was issued"},
            "trial_start": TS_OR_NULL,
            "trial_end": {
                **TS_OR_NULL,
                "description": "where the first paid period starts, for one started on a trial",
            },
            "pause": {
                "type": ["object", "null"],
                "description": "while paused: how resuming treats the paused time, and a scheduled resume",
                "properties": {
                    "behavior": {"enum": ["void", "keep_as_draft"]},
                    "paused_at": TS,
                    "resumes_at": TS_OR_NULL,
                },
            },
            "pending_change": {
                "type": ["object", "null"],
                "description": "a change scheduled for the period end (cancel it with DELETE .../pending_change)",
                "properties": {
                    "plan": {"type": "string"},
                    "billing_cycle": {"enum": ["daily", "weekly", "monthly", "yearly"]},
                    "quantity": {"type": "integer"},
                    "amount": MONEY,
                    "effective_at": TS,
                },
            },
            "pending_prorations": {
                "type": "array",
                "description": "proration lines waiting for the next invoice (a credit is negative)",
                "items": {"type": "object"},
            },
            "created_at": TS,
        },
    ),
    "LineItem": _object(
        "line_item",
        {
            "id": ID,
            "kind": {
                "enum": ["subscription", "usage", "proration", "invoice_item", "adjustment", "discount", "tax"],
                "description": "a proration is signed: a credit for unused time is negative; a discount line is "
                "negative (one per discount applied) and a tax line is one exclusive rate's tax",
            },
            "description": {"type": "string"},
            "metric": {"type": ["string", "null"]},
            "quantity": {"type": "integer"},
            "unit_amount": MONEY,
            "amount": MONEY,
            "currency": CURRENCY,
            "period_start": TS,
            "period_end": TS,
            "invoice_item_id": {**ID_OR_NULL, "description": "the one-off invoice item this line bills"},
            "discount_amounts": {
                "type": "array",
                "description": "a charge line's discount: [{discount, amount}]",
                "items": {"type": "object", "properties": {"discount": ID, "amount": MONEY}},
            },
            "tax_amounts": {
                "type": "array",
                "description": "a charge line's taxes, per rate, on its amount after its discount",
                "items": {"$ref": "#/components/schemas/TaxAmount"},
            },
            "discount_id": {**ID_OR_NULL, "description": "the discount a discount line shows"},
            "tax_rate_id": {**ID_OR_NULL, "description": "the rate a tax line shows"},
        },
    ),
    "TaxAmount": {
        "type": "object",
        "required": ["tax_rate", "amount", "inclusive", "taxable_amount", "display_name", "percentage"],
        "properties": {
            "tax_rate": ID,
            "amount": {**MONEY, "description": "half to even, per line (negative on a credit)"},
            "inclusive": {"type": "boolean", "description": "true: contained in the amount, not added"},
            "taxable_amount": {**MONEY, "description": "the amount the tax is on, net of any inclusive tax"},
            "display_name": {"type": "string", "description": "the rate's name when it was applied"},
            "percentage": {"type": "string", "description": "the rate's exact percentage"},
        },
    },
    "TaxRate": _object(
        "tax_rate",
        {
            "id": ID,
            "display_name": {"type": "string"},
            "description": {"type": ["string", "null"]},
            "percentage": {"type": "string", "description": 'exact decimal string, at most 4 decimals ("7.25")'},
            "inclusive": {"type": "boolean"},
            "jurisdiction": {"type": ["string", "null"]},
            "country": {"type": ["string", "null"]},
            "active": {"type": "boolean", "description": "false: not applied to new invoices"},
            "created_at": TS,
        },
    ),
    "Coupon": _object(
        "coupon",
        {
            "id": ID,
            "name": {"type": ["string", "null"]},
            "percent_off": {"type": ["string", "null"], "description": "exact decimal string"},
            "amount_off": {"type": ["integer", "null"], "description": "minor units of currency"},
            "currency": {**CURRENCY, "type": ["string", "null"], "description": "with amount_off: its currency"},
            "duration": {"enum": ["once", "repeating", "forever"]},
            "duration_in_periods": {"type": ["integer", "null"]},
            "max_redemptions": {"type": ["integer", "null"]},
            "redeem_by": TS_OR_NULL,
            "applies_to": {
                "type": ["object", "null"],
                "properties": {"plans": {"type": "array", "items": {"type": "string"}}},
            },
            "times_redeemed": {"type": "integer"},
            "active": {"type": "boolean"},
            "valid": {"type": "boolean", "description": "it may be redeemed now"},
            "created_at": TS,
        },
    ),
    "Discount": _object(
        "discount",
        {
            "id": ID,
            "coupon": {"$ref": "#/components/schemas/Coupon"},
            "account_id": ID,
            "subscription_id": {**ID_OR_NULL, "description": "null: the account's discount"},
            "start": TS,
            "end": {**TS_OR_NULL, "description": "when it was removed"},
            "periods_remaining": {
                "type": ["integer", "null"],
                "description": "repeating: billing periods left; once: 1 until an invoice used it; forever: null",
            },
            "status": {"enum": ["active", "ended", "removed"]},
        },
    ),
    "Invoice": _object(
        "invoice",
        {
            "id": ID,
            "account_id": ID,
            "subscription_id": ID_OR_NULL,
            "billing_reason": {
                "enum": [
                    "subscription_create",
                    "subscription_cycle",
                    "subscription_update",
                    "subscription_cancel",
                    "manual",
                ],
                "description": "the billing instant that issued it: a subscription's first period, a renewal, "
                "a change invoiced now, or its final invoice (the last period's metered usage)",
            },
            "number": {
                "type": ["string", "null"],
                "description": "{prefix}-000001: gapless per tenant in the order of finalization; null for a draft",
            },
            "status": {"enum": ["draft", "open", "paid", "void", "uncollectible"]},
            "description": {"type": ["string", "null"]},
            "currency": CURRENCY,
            "subtotal": {**MONEY, "description": "the charge lines, before discounts and exclusive tax"},
            "total": {
                **MONEY,
                "description": "the sum of the lines (subtotal - total_discount + exclusive tax); negative when "
                "credits exceed charges",
            },
            "credit_applied": {**MONEY, "description": "the account's credit balance this invoice used"},
            "pre_payment_credit_notes_amount": {**MONEY, "description": "credit notes that lowered amount_due"},
            "post_payment_credit_notes_amount": {**MONEY, "description": "credit notes refunded or credited"},
            "amount_due": {
                **MONEY,
                "description": "total - credit_applied - amount_paid - pre_payment_credit_notes_amount",
            },
            "amount_paid": {**MONEY, "description": "collected through the gateway"},
            "period_start": TS,
            "period_end": TS,
            "due_at": TS_OR_NULL,
            "auto_finalize_at": {**TS_OR_NULL, "description": "a draft held for the grace period is finalized then"},
            "finalized_at": TS_OR_NULL,
            "paid_at": TS_OR_NULL,
            "voided_at": TS_OR_NULL,
            "marked_uncollectible_at": TS_OR_NULL,
            "created_at": TS,
            "total_discount": {**MONEY, "description": "the discounts' sum (their lines' amounts, negated)"},
            "tax": {**MONEY, "description": "every tax, inclusive and exclusive; total adds the exclusive only"},
            "total_discount_amounts": {
                "type": "array",
                "items": {"type": "object", "properties": {"discount": ID, "amount": MONEY}},
            },
            "total_tax_amounts": {"type": "array", "items": {"$ref": "#/components/schemas/TaxAmount"}},
        },
    ),
    "InvoiceItem": _object(
        "invoice_item",
        {
            "id": ID,
            "account_id": ID,
            "invoice_id": {**ID_OR_NULL, "description": "null while pending: the account's next invoice takes it"},
            "currency": CURRENCY,
            "description": {"type": "string"},
            "quantity": {"type": "integer"},
            "unit_amount": MONEY,
            "amount": MONEY,
            "metadata": {"type": "object"},
            "created_at": TS,
        },
    ),
    "CreditNote": _object(
        "credit_note",
        {
            "id": ID,
            "invoice_id": ID,
            "account_id": ID,
            "number": {"type": "string", "description": "{prefix}-CN-000001: gapless per tenant"},
            "currency": CURRENCY,
            "amount": MONEY,
            "pre_payment_amount": {**MONEY, "description": "lowered the invoice's amount due"},
            "credit_amount": {**MONEY, "description": "to the customer's balance"},
            "refund_amount": {**MONEY, "description": "back through the gateway"},
            "reason": {"enum": ["duplicate", "fraudulent", "order_change", "product_unsatisfactory"]},
            "memo": {"type": ["string", "null"]},
            "lines": {"type": "array", "items": {"type": "object"}},
            "refund_id": ID_OR_NULL,
            "refund_status": {"enum": ["pending", "succeeded", "failed", None]},
            "created_at": TS,
        },
    ),
    "InvoiceSettings": _object(
        "invoice_settings",
        {
            "prefix": {"type": "string"},
            "grace_hours": {"type": "integer"},
            "last_number": {"type": ["integer", "null"], "description": "the last number of the prefix's series"},
        },
    ),
    "Deleted": {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "properties": {"id": ID, "object": {"type": "string"}, "deleted": {"const": True}},
    },
    "LedgerEntry": _object(
        "ledger_entry",
        {
            "id": ID,
            "entry_type": {
                "enum": ["charge", "payment", "payment_failed", "credit", "refund", "void", "adjustment"],
                "description": "a void reverses an invoice's charge; a refund is money paid back out",
            },
            "amount": {"type": "integer", "description": "signed minor units: charges positive, payments negative"},
            "currency": CURRENCY,
            "invoice_id": ID_OR_NULL,
            "credit_note_id": ID_OR_NULL,
            "period_start": TS_OR_NULL,
            "description": {"type": "string"},
            "created_at": TS,
            "balance": {"type": "integer", "description": "balance after this entry"},
        },
    ),
    "UsageBatch": _object(
        "usage_batch",
        {
            "accepted": {"type": "integer"},
            "duplicates": {"type": "integer"},
            "rejected": {"type": "integer"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["event_id", "status"],
                    "properties": {
                        "event_id": {"type": "string"},
                        "status": {"enum": ["accepted", "duplicate", "rejected"]},
                        "reasons": {"type": "array", "items": {"type": "string"}},
                        "code": {
                            "enum": ["hard_cap_reached"],
                            "description": "a rejection's machine-readable reason, where it has one",
                        },
                    },
                },
            },
        },
    ),
    "Rebill": _object(
        "rebill",
        {
            "outcome": {"enum": ["succeeded", "declined", "inactive", "not_due", "no_subscription", "canceled"]},
            "account": {"$ref": "#/components/schemas/Account"},
        },
    ),
    "Health": {
        "type": "object",
        "required": ["status", "database"],
        "properties": {"status": {"enum": ["ok", "degraded"]}, "database": {"type": "object"}},
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {
                    "type": {"type": "string"},
                    "message": {"type": "string"},
                    "code": {"type": "string"},
                    "request_id": {"type": "string"},
                    "details": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["field", "issue"],
                            "properties": {"field": {"type": "string"}, "issue": {"type": "string"}},
                        },
                    },
                },
            }
        },
    },
}
# Retrieving one account adds its balances (not on lists).
RESPONSES["Account"]["properties"].update(
    balance={"type": "integer", "description": "sum of the ledger: positive = owed by the customer"},
    credit_balance={**MONEY, "description": "credit the next invoices use before any payment is attempted"},
)
# The upcoming invoice: not written yet (no id, no number), computed as the daily round would issue it.
_UPCOMING_LINE = {name: schema for name, schema in RESPONSES["LineItem"]["properties"].items() if name != "object"}
_UPCOMING_LINE.update(id={"type": "null"}, position={"type": "integer", "description": "the line's place"})
RESPONSES["UpcomingInvoice"] = _object(
    "invoice",
    {
        "id": {"type": "null", "description": "not issued yet"},
        **{name: RESPONSES["Invoice"]["properties"][name] for name in ("account_id", "billing_reason", "currency")},
        "subscription_id": ID,
        "number": {"type": "null"},
        "status": {"const": "draft"},
        **{
            name: RESPONSES["Invoice"]["properties"][name]
            for name in ("subtotal", "total_discount", "tax", "total_discount_amounts", "total_tax_amounts", "total")
        },
        "credit_applied": {**MONEY, "description": "the account's credit balance it would use"},
        "amount_due": {**MONEY, "description": "what would be collected: total - credit_applied"},
        "period_start": TS,
        "period_end": TS,
        "next_payment_attempt": {**TS_OR_NULL, "description": "when it is issued and charged; null: held as a draft"},
        "auto_finalize_at": {**TS_OR_NULL, "description": "held for the grace period: finalized then"},
        "lines": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": _object("line_item", _UPCOMING_LINE)},
            },
        },
    },
)
RESPONSES["InvoiceWithLinks"] = {
    "allOf": [
        {"$ref": "#/components/schemas/Invoice"},
        {
            "type": "object",
            "required": ["hosted_invoice_url", "invoice_pdf"],
            "properties": {
                "hosted_invoice_url": {
                    "type": ["string", "null"],
                    "description": "a signed page for the customer, valid 30 days from this response; null for a draft",
                },
                "invoice_pdf": {"type": ["string", "null"], "description": "the same link's PDF"},
            },
        },
    ]
}

# path -> method -> (summary, request schema or None, success status, response component, list?)
# One account, retrieved: its balances and how it pays, besides what a list shows.
RESPONSES["AccountDetail"] = _object(
    "account",
    {
        **{k: v for k, v in RESPONSES["Account"]["properties"].items() if k != "object"},
        "balance": {**MONEY, "description": "the sum of its ledger (positive: the customer owes)"},
        "credit_balance": {**MONEY, "description": "credit the next invoices use first"},
        "gateway_customer_id": {"type": ["string", "null"], "description": "its Stripe Customer, once set up"},
        "default_payment_method": {"$ref": "#/components/schemas/PaymentMethod"},
        "default_tax_rates": {"type": "array", "items": ID, "description": "tax rate ids its invoices take"},
    },
)

# What an account's plan grants now, and how much of each metered limit its current period used.
RESPONSES["AccountEntitlements"] = _object(
    "account_entitlements",
    {
        "account": ID,
        "plan": {"type": ["string", "null"], "description": "the live subscription's plan code; null: none"},
        "subscription": ID_OR_NULL,
        "period": {
            "type": ["object", "null"],
            "description": "the current billing period (a trial's, while trialing); null without a subscription",
            "required": ["start", "end"],
            "properties": {"start": TS, "end": TS},
        },
        "features": {
            "type": "array",
            "description": "the plan's features",
            "items": {
                "type": "object",
                "required": ["feature", "value"],
                "properties": {"feature": {"type": "string"}, "value": {}},
            },
        },
        "limits": {
            "type": "array",
            "description": "one per metered price of the plan",
            "items": {
                "type": "object",
                "required": ["metric", "aggregation", "limit", "used", "remaining", "hard_cap"],
                "properties": {
                    "metric": {"type": "string"},
                    "aggregation": {"enum": ["sum", "count", "max"]},
                    "limit": {
                        "type": ["integer", "null"],
                        "description": "the price's hard_cap, else the plan's limits[metric]; null: unlimited",
                    },
                    "used": {"type": "integer", "description": "this period's aggregate, as its invoice counts it"},
                    "remaining": {"type": ["integer", "null"], "description": "limit - used, at least 0"},
                    "hard_cap": {"type": "boolean", "description": "true: events past the limit are rejected"},
                },
            },
        },
    },
)

# What tenants hear: events (the log and webhooks), their endpoints and deliveries.
RESPONSES["Refund"] = _object(
    "refund",
    {
        "id": ID,
        "account_id": ID,
        "invoice_id": ID,
        "credit_note_id": ID,
        "amount": MONEY,
        "currency": CURRENCY,
        "status": {"enum": ["pending", "succeeded", "failed"]},
        "gateway_reference": {"type": ["string", "null"]},
        "failure_code": {"type": ["string", "null"]},
        "created_at": TS,
        "resolved_at": TS_OR_NULL,
    },
)
RESPONSES["Dispute"] = _object(
    "dispute",
    {
        "id": {"type": "string", "description": "the gateway's dispute id"},
        "status": {"type": "string"},
        "reason": {"type": ["string", "null"]},
        "amount": MONEY,
        "currency": CURRENCY,
        "payment_intent": {"type": ["string", "null"]},
        "account_id": ID,
        "invoice_id": ID,
        "payment_attempt_id": ID,
    },
)
RESPONSES["UsageRejection"] = _object(
    "usage_rejection",
    {
        "accepted": {"type": "integer"},
        "rejected": {"type": "integer"},
        "data": RESPONSES["UsageBatch"]["properties"]["data"],
    },
)
RESPONSES["WebhookEndpoint"] = _object(
    "webhook_endpoint",
    {
        "id": ID,
        "url": {"type": "string"},
        "enabled_events": {"type": "array", "items": {"type": "string"}},
        "description": {"type": ["string", "null"]},
        "enabled": {"type": "boolean"},
        "disabled_reason": {"type": ["string", "null"]},
        "failing_since": {**TS_OR_NULL, "description": "its first failed answer since its last success"},
        "previous_secret_expires_at": {**TS_OR_NULL, "description": "until then the old secret signs too"},
        "created_at": TS,
        "updated_at": TS,
    },
)
# What an event shows of an endpoint: not its URL or description (the event log is open to USER tokens).
RESPONSES["WebhookEndpointStatus"] = _object(
    "webhook_endpoint",
    {k: RESPONSES["WebhookEndpoint"]["properties"][k] for k in ("id", "enabled", "disabled_reason", "failing_since")}
    | {"updated_at": TS},
)
RESPONSES["WebhookEndpointWithSecret"] = {
    "allOf": [
        {"$ref": "#/components/schemas/WebhookEndpoint"},
        {
            "type": "object",
            "required": ["secret"],
            "properties": {
                "secret": {
                    "type": ["string", "null"],
                    "description": "whsec_...: shown this once: null when an Idempotency-Key replays the answer",
                }
            },
        },
    ]
}
RESPONSES["ApiClient"] = _object(
    "api_client",
    {
        "id": ID,
        "client_id": {"type": "string", "description": "the Cognito app client: ask the pool's /oauth2/token with it"},
        "name": {"type": "string"},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "created_at": TS,
    },
)
RESPONSES["ApiClientWithSecret"] = {
    "allOf": [
        {"$ref": "#/components/schemas/ApiClient"},
        {
            "type": "object",
            "required": ["client_secret"],
            "properties": {
                "client_secret": {
                    "type": ["string", "null"],
                    "description": "shown this once: null when an Idempotency-Key replays the answer",
                }
            },
        },
    ]
}
RESPONSES["WebhookDelivery"] = _object(
    "webhook_delivery",
    {
        "id": ID,
        "endpoint_id": ID,
        "event_id": {**ID, "description": "also its webhook-id header, the same on every attempt"},
        "event_type": {"type": "string"},
        "status": {"enum": ["pending", "delivered", "failed"]},
        "attempt_count": {"type": "integer"},
        "next_attempt_at": TS_OR_NULL,
        "last_status": {"type": ["integer", "null"]},
        "created_at": TS,
        "delivered_at": TS_OR_NULL,
        "failed_at": TS_OR_NULL,
        "attempts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["attempted_at", "status_code", "latency_ms", "response_excerpt", "error"],
                "properties": {
                    "attempted_at": TS,
                    "status_code": {"type": ["integer", "null"]},
                    "latency_ms": {"type": "integer"},
                    "response_excerpt": {"type": ["string", "null"], "description": "its first 1 KB"},
                    "error": {"type": ["string", "null"], "description": "no answer: why"},
                },
            },
        },
    },
)
# The object each event type carries in data.object, by the type's first word.
EVENT_OBJECTS = {
    "invoice": "Invoice",
    "subscription": "Subscription",
    "credit_note": "CreditNote",
    "account": "AccountDetail",
    "refund": "Refund",
    "dispute": "Dispute",
    "usage": "UsageRejection",
    "webhook_endpoint": "WebhookEndpointStatus",
    "tenant": "Tenant",
}


RESPONSES["Event"] = _object(
    "event",
    {
        "id": {**ID, "description": "the event's id, and its webhook-id"},
        "type": {"enum": list(events.KNOWN_TYPES)},
        "version": {"const": events.VERSION},
        "created": TS,
        "data": {
            "type": "object",
            "required": ["object"],
            "properties": {"object": {"description": "the changed object as the API returned it then"}},
        },
    },
)


def _event(event_type: str) -> dict:
    """An event of one type: its data.object is that type's object."""
    obj = {"$ref": f"#/components/schemas/{EVENT_OBJECTS[event_type.split('.')[0]]}"}
    data = {"type": "object", "properties": {"object": obj}}
    return {
        "allOf": [
            {"$ref": "#/components/schemas/Event"},
            {"type": "object", "properties": {"type": {"const": event_type}, "data": data}},
        ]
    }


WEBHOOK_HEADERS = {
    "webhook-id": "the event's id: the same on every retry, to deduplicate",
    "webhook-timestamp": "seconds since the epoch when this attempt was signed",
    "webhook-signature": "v1,<base64 HMAC-SHA256 of {id}.{timestamp}.{body}> per secret, space-separated",
}


def _webhooks() -> dict:
    """The event catalog: one Standard Webhooks request per event type."""
    headers = [{"$ref": f"#/components/parameters/{name}"} for name in WEBHOOK_HEADERS]
    return {
        event_type: {
            "post": {
                "summary": f"{event_type} (version {events.VERSION})",
                "operationId": f"webhook_{event_type.replace('.', '_')}",
                "parameters": headers,
                "requestBody": {"required": True, "content": {"application/json": {"schema": _event(event_type)}}},
                "responses": {"2XX": {"description": "Received; anything else is retried for up to 3 days"}},
            }
        }
        for event_type in events.KNOWN_TYPES
    }


ROUTES = {
    "/v1/health": {"get": ("Database reachability and migration version", None, 200, "Health", False)},
    "/v1/tenants": {"post": ("Provision a tenant (ADMIN)", "tenant_create", 201, "Tenant", False)},
    "/v1/plans": {
        "post": ("Create a plan price (ADMIN)", "plan_create", 201, "Plan", False),
        "get": ("List plans", None, 200, "Plan", True),
    },
    "/v1/accounts": {
        "post": ("Create a billable account", "account_create", 201, "Account", False),
        "get": ("List accounts", None, 200, "Account", True),
    },
    "/v1/accounts/{account_id}": {
        "get": ("Retrieve an account", None, 200, "AccountDetail", False),
        "post": ("Set the account's default tax rates", "account_update", 200, "AccountDetail", False),
    },
    "/v1/accounts/{account_id}/discounts": {
        "post": ("Apply a coupon to the account (replaces its discount)", "discount_create", 201, "Discount", False),
        "delete": ("Remove the account's discount", None, 200, "Discount", False),
    },
    "/v1/subscriptions/{subscription_id}/discounts": {
        "post": (
            "Apply a coupon to the subscription (replaces its discount)",
            "discount_create",
            201,
            "Discount",
            False,
        ),
        "delete": ("Remove the subscription's discount", None, 200, "Discount", False),
    },
    "/v1/tax_rates": {
        "post": ("Create a tax rate (ADMIN)", "tax_rate_create", 201, "TaxRate", False),
        "get": ("List tax rates", None, 200, "TaxRate", True),
    },
    "/v1/tax_rates/{rate_id}": {
        "get": ("Retrieve a tax rate", None, 200, "TaxRate", False),
        "post": ("Rename, describe or (de)activate a tax rate (ADMIN)", "tax_rate_update", 200, "TaxRate", False),
    },
    "/v1/coupons": {
        "post": ("Create a coupon (ADMIN)", "coupon_create", 201, "Coupon", False),
        "get": ("List coupons", None, 200, "Coupon", True),
    },
    "/v1/coupons/{coupon_id}": {
        "get": ("Retrieve a coupon", None, 200, "Coupon", False),
        "post": ("Rename or (de)activate a coupon (ADMIN)", "coupon_update", 200, "Coupon", False),
    },
    "/v1/accounts/{account_id}/ledger": {
        "get": ("Ledger entries with running balance", None, 200, "LedgerEntry", True)
    },
    "/v1/accounts/{account_id}/entitlements": {
        "get": ("The plan's features and each metered limit's use this period", None, 200, "AccountEntitlements", False)
    },
    "/v1/accounts/{account_id}/upcoming_invoice": {
        "get": (
            "The next invoice as the daily run would issue it now: nothing written",
            None,
            200,
            "UpcomingInvoice",
            False,
        )
    },
    "/v1/accounts/{account_id}/payment_methods/setup": {
        "post": ("Start saving a card: a Stripe SetupIntent for Stripe.js", None, 201, "SetupIntent", False)
    },
    "/v1/gateway": {
        "get": ("The tenant's payment gateway (ADMIN): never its keys", None, 200, "Gateway", False),
        "put": ("Connect the tenant's Stripe account (ADMIN)", "gateway_connect", 200, "Gateway", False),
    },
    "/v1/gateway/stripe/{tenant_id}": {
        "post": ("Stripe's webhooks for the tenant (verified by Stripe-Signature)", None, 200, "WebhookReceipt", False)
    },
    "/v1/accounts/{account_id}/rebill": {
        "post": ("Bill the account's due period now (ADMIN)", "rebill_now", 200, "Rebill", False)
    },
    "/v1/subscriptions": {
        "post": ("Subscribe an account to a plan", "subscription_create", 201, "Subscription", False),
        "get": ("List subscriptions", None, 200, "Subscription", True),
    },
    "/v1/subscriptions/{subscription_id}": {
        "get": ("Retrieve a subscription", None, 200, "Subscription", False),
        "post": (
            "Change plan, interval, quantity (prorated), trial end, or cancel at period end",
            "subscription_update",
            200,
            "Subscription",
            False,
        ),
    },
    "/v1/subscriptions/{subscription_id}/cancel": {
        "post": (
            "Cancel now (optionally prorated), or at period end",
            "subscription_cancel",
            200,
            "Subscription",
            False,
        )
    },
    "/v1/subscriptions/{subscription_id}/pending_change": {
        "delete": ("Cancel the change scheduled for the period end", None, 200, "Subscription", False)
    },
    "/v1/subscriptions/{subscription_id}/pause": {
        "post": ("Pause billing (not during a trial)", "subscription_pause", 200, "Subscription", False)
    },
    "/v1/subscriptions/{subscription_id}/resume": {
        "post": ("Resume now, or at resumes_at", "subscription_resume", 200, "Subscription", False)
    },
    "/v1/invoices": {
        "post": ("A one-off invoice of the account's pending items, now", "invoice_create", 201, "Invoice", False),
        "get": ("List invoices", None, 200, "Invoice", True),
    },
    "/v1/invoices/{invoice_id}": {
        "get": ("Retrieve an invoice with its lines and links", None, 200, "InvoiceWithLinks", False)
    },
    "/v1/invoices/{invoice_id}/pdf": {"get": ("The invoice as a PDF", None, 200, "PDF", False)},
    "/v1/invoices/{invoice_id}/finalize": {
        "post": ("Finalize a draft: number it, charge it and collect it", None, 200, "Invoice", False)
    },
    "/v1/invoices/{invoice_id}/void": {
        "post": ("Void a draft, or an open invoice (ADMIN): reverses its charge", None, 200, "Invoice", False)
    },
    "/v1/invoices/{invoice_id}/mark_uncollectible": {
        "post": ("Stop collecting an open invoice (ADMIN)", None, 200, "Invoice", False)
    },
    "/v1/hosted_invoices/{link}": {"get": ("The hosted invoice page (a signed link)", None, 200, "HTML", False)},
    "/v1/hosted_invoices/{link}/pdf": {"get": ("The hosted invoice's PDF (a signed link)", None, 200, "PDF", False)},
    "/v1/invoice_items": {
        "post": ("A one-off charge for the account's next invoice", "invoice_item_create", 201, "InvoiceItem", False),
        "get": ("List invoice items", None, 200, "InvoiceItem", True),
    },
    "/v1/invoice_items/{item_id}": {
        "get": ("Retrieve an invoice item", None, 200, "InvoiceItem", False),
        "delete": ("Delete a pending invoice item", None, 200, "Deleted", False),
    },
    "/v1/credit_notes": {
        "post": ("Credit a finalized invoice (ADMIN)", "credit_note_create", 201, "CreditNote", False),
        "get": ("List credit notes", None, 200, "CreditNote", True),
    },
    "/v1/credit_notes/{note_id}": {"get": ("Retrieve a credit note", None, 200, "CreditNote", False)},
    "/v1/invoice_settings": {
        "get": ("Invoice numbering and grace period", None, 200, "InvoiceSettings", False),
        "post": ("Change the prefix or grace period (ADMIN)", "invoice_settings_update", 200, "InvoiceSettings", False),
    },
    "/v1/events": {
        "post": ("Record usage: one event or a batch of up to 100", "usage_events", 200, "UsageBatch", False)
    },
    "/v1/notifications": {"get": ("The tenant's events of the last 30 days", None, 200, "Event", True)},
    "/v1/notifications/{event_id}": {"get": ("Retrieve an event", None, 200, "Event", False)},
    "/v1/webhook_endpoints": {
        "post": ("Add a webhook endpoint (ADMIN)", "webhook_endpoint_create", 201, "WebhookEndpointWithSecret", False),
        "get": ("List webhook endpoints (ADMIN)", None, 200, "WebhookEndpoint", True),
    },
    "/v1/webhook_endpoints/{endpoint_id}": {
        "get": ("Retrieve a webhook endpoint (ADMIN)", None, 200, "WebhookEndpoint", False),
        "post": ("Change or re-enable an endpoint (ADMIN)", "webhook_endpoint_update", 200, "WebhookEndpoint", False),
        "delete": ("Delete an endpoint and its deliveries (ADMIN)", None, 200, "Deleted", False),
    },
    "/v1/webhook_endpoints/{endpoint_id}/rotate": {
        "post": ("A new signing secret; the old one signs 24 h more", None, 200, "WebhookEndpointWithSecret", False)
    },
    "/v1/webhook_endpoints/{endpoint_id}/deliveries": {
        "get": ("An endpoint's deliveries and every attempt (ADMIN)", None, 200, "WebhookDelivery", True)
    },
    "/v1/webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/retry": {
        "post": ("Send a delivery again now, same webhook-id (ADMIN)", None, 200, "WebhookDelivery", False)
    },
    "/v1/api_clients": {
        "post": (
            "Make a machine client, its secret shown once (ADMIN, people)",
            "api_client_create",
            201,
            "ApiClientWithSecret",
            False,
        ),
        "get": ("List machine clients (ADMIN, people)", None, 200, "ApiClient", True),
    },
    "/v1/api_clients/{api_client_id}": {
        "get": ("Retrieve a machine client (ADMIN, people)", None, 200, "ApiClient", False),
        "delete": ("Delete a machine client: its tokens stop working (ADMIN, people)", None, 200, "Deleted", False),
    },
}
LIST_FILTERS = {
    "/v1/invoices": {
        "account_id": ID,
        "status": {"enum": list(invoices.STATUSES)},
        "period_start_gte": TS,
        "period_start_lt": TS,
    },
    "/v1/subscriptions": {"account_id": ID, "status": {"enum": list(subscriptions.STATUSES)}},
    "/v1/invoice_items": {"account_id": ID, "pending": {"enum": ["true", "false"]}},
    "/v1/credit_notes": {"invoice": ID},
    "/v1/tax_rates": {"active": {"enum": ["true", "false"]}},
    "/v1/notifications": {"type": {"enum": list(events.KNOWN_TYPES)}},
    "/v1/webhook_endpoints/{endpoint_id}/deliveries": {"status": {"enum": ["pending", "delivered", "failed"]}},
}
# Public routes: no token (a signed link is the credential, or nothing is private).
PUBLIC = (
    "/v1/health",
    "/v1/hosted_invoices/{link}",
    "/v1/hosted_invoices/{link}/pdf",
    "/v1/gateway/stripe/{tenant_id}",
)
# What a public route answers when its credential (a signed link, a signature) does not hold.
PUBLIC_ERRORS = {
    "/v1/gateway/stripe/{tenant_id}": ("400", "The Stripe-Signature does not verify with the tenant's secret"),
}
DOCUMENTS = {
    "PDF": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
    "HTML": {"text/html": {"schema": {"type": "string"}}},
}
# Printable ASCII without leading or trailing blanks, which HTTP would strip (chalicelib.idempotency).
IDEMPOTENCY_KEY = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]([ -~]*[!-~])?$"}
# What a created object's id opens: OpenAPI links, which clients and the fuzzer's stateful phase follow.
LINKS = {
    "/v1/accounts": {
        "GetAccount": ("get_v1_accounts_account_id", "account_id"),
        "GetLedger": ("get_v1_accounts_account_id_ledger", "account_id"),
        "GetEntitlements": ("get_v1_accounts_account_id_entitlements", "account_id"),
        "RebillAccount": ("post_v1_accounts_account_id_rebill", "account_id"),
        "ListSubscriptionsOfAccount": ("get_v1_subscriptions", "account_id"),
        "ListInvoicesOfAccount": ("get_v1_invoices", "account_id"),
    },
    "/v1/subscriptions": {
        "GetSubscription": ("get_v1_subscriptions_subscription_id", "subscription_id"),
        "CancelSubscription": ("post_v1_subscriptions_subscription_id_cancel", "subscription_id"),
        "UpdateSubscription": ("post_v1_subscriptions_subscription_id", "subscription_id"),
        "PauseSubscription": ("post_v1_subscriptions_subscription_id_pause", "subscription_id"),
    },
}
# Requests whose body may be left out (every field has a default).
OPTIONAL_BODIES = ("subscription_cancel", "subscription_pause", "subscription_resume")
ERRORS = {
    "400": "Invalid request (field-level details)",
    "401": "Missing, forged or expired token",
    "403": "Role or tenant not allowed, or a limit of the tenant's platform plan reached ({limit}_limit_reached)",
    "404": "Not found (or another tenant's)",
    "409": "Conflict, or Idempotency-Key reuse / in flight",
    "413": "Body over 256 KB",
    "415": "Not application/json",
    "422": "Valid but impossible in the current state",
    "429": "Over the tenant's plan rate (usage_rate_limit_exceeded): retry after Retry-After seconds",
}


def _request_schema(name: str) -> dict:
    if name == "usage_events":
        return {"oneOf": [_request_schema("usage_event"), _request_schema("usage_event_batch")]}
    document = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    document.pop("$schema", None)
    return document


def _operation(path: str, method: str, spec: tuple) -> dict:
    summary, request, status, component, is_list = spec
    ref = {"$ref": f"#/components/schemas/{component}"}
    body = ref
    if is_list:
        body = {
            "type": "object",
            "required": ["object", "data", "has_more", "next_cursor"],
            "properties": {
                "object": {"const": "list"},
                "url": {"type": "string"},
                "data": {"type": "array", "items": ref},
                "has_more": {"type": "boolean"},
                "next_cursor": {"type": ["string", "null"]},
            },
        }
    content = DOCUMENTS.get(component) or {"application/json": {"schema": body}}
    operation = {
        "summary": summary,
        "operationId": f"{method}_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
        "responses": {str(status): {"description": "OK", "content": content}},
    }
    if method == "post" and path in LINKS:
        operation["responses"][str(status)]["links"] = {
            name: {"operationId": target, "parameters": {parameter: "$response.body#/id"}}
            for name, (target, parameter) in LINKS[path].items()
        }
    parameters = [
        {"name": p[1:-1], "in": "path", "required": True, "schema": ID if p != "{link}" else {"type": "string"}}
        for p in path.split("/")
        if p.startswith("{")
    ]
    if is_list:
        parameters += [
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
            {"name": "starting_after", "in": "query", "schema": ID},
        ]
        parameters += [{"name": f, "in": "query", "schema": schema} for f, schema in LIST_FILTERS.get(path, {}).items()]
    if request:
        parameters.append({"name": "Idempotency-Key", "in": "header", "schema": IDEMPOTENCY_KEY})
        operation["requestBody"] = {
            "required": request not in OPTIONAL_BODIES,
            "content": {"application/json": {"schema": _request_schema(request)}},
        }
    if parameters:
        operation["parameters"] = parameters
    if path not in PUBLIC:
        operation["security"] = [{"cognito": []}]
        error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        operation["responses"].update({code: {"description": text, **error} for code, text in ERRORS.items()})
    elif path != "/v1/health":
        error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        code, text = PUBLIC_ERRORS.get(path, ("404", "No such link, or it expired"))
        operation["responses"][code] = {"description": text, **error}
    else:
        operation["responses"]["503"] = {
            "description": "Database unreachable",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}},
        }
    return operation


def build() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "billing-platform",
            "version": "1.0.0",
            "description": "Money is integer minor units with an ISO 4217 currency.",
        },
        "paths": {
            path: {m: _operation(path, m, spec) for m, spec in methods.items()} for path, methods in ROUTES.items()
        },
        "webhooks": _webhooks(),
        "components": {
            "schemas": RESPONSES,
            "parameters": {
                name: {
                    "name": name,
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": text,
                }
                for name, text in WEBHOOK_HEADERS.items()
            },
            "securitySchemes": {
                "cognito": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "a Cognito access token (a person's or a machine client's) whose custom:tenant_id"
                    " the pre-token trigger set, with one of the route's scopes (billing/read, billing/write,"
                    " billing/usage.write, billing/admin)",
                }
            },
        },
    }


def render() -> str:
    return generated.as_json(build())


def main(argv=None) -> int:
    return generated.main(DOCUMENT, render, "devtools.openapi", argv)


if __name__ == "__main__":
    sys.exit(main())
