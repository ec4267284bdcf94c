"""Customer email through SES: plain-text and HTML bodies (the send-notification consumer is in handlers)."""

import html

from chalicelib import aws, errors
from chalicelib.billing import currencies
from chalicelib.config import get_settings
from chalicelib.db.queries import load

Q = load("notifications")


def format_amount(amount: int, currency: str) -> str:
    """Display only: minor units to a decimal string with the currency's ISO 4217 exponent
    (JPY 0, USD 2, BHD 3; 2 for a code ISO does not list). Exact: integer division, no rounding."""
    exponent = currencies.exponent(currency) if currencies.is_known(currency) else 2
    if exponent == 0:
        return f"{amount} {currency}"
    sign = "-" if amount < 0 else ""
    whole, cents = divmod(abs(amount), 10**exponent)
    return f"{sign}{whole}.{cents:0{exponent}d} {currency}"


def subscription_created_email(recipient: dict) -> dict:
    price = format_amount(recipient["amount"], recipient["currency"])
    renews = recipient["current_period_end"].strftime("%Y-%m-%d")
    text = (
        f"Hello {recipient['name']},\n\n"
        f"Your {recipient['plan_name']} subscription is active: {price} per period, next renewal {renews}.\n"
    )
    safe = {k: html.escape(str(v)) for k, v in recipient.items()}
    body_html = (
        f"<p>Hello {safe['name']},</p><p>Your <strong>{safe['plan_name']}</strong> subscription is active: "
        f"{html.escape(price)} per period, next renewal {renews}.</p>"
    )
    return {
        "Subject": {"Data": f"Your {recipient['plan_name']} subscription is active", "Charset": "UTF-8"},
        "Body": {"Text": {"Data": text, "Charset": "UTF-8"}, "Html": {"Data": body_html, "Charset": "UTF-8"}},
    }


def payment_action_email(recipient: dict) -> dict:
    """The bank asks the customer to confirm a payment: the invoice, and where to pay it."""
    amount = format_amount(recipient["amount_due"], recipient["currency"])
    number = recipient["number"] or "your invoice"
    link = recipient.get("link")
    where = f"Pay it here: {link}" if link else "Please contact us to complete it."
    text = (
        f"Hello {recipient['name']},\n\n"
        f"Your bank asks you to confirm the payment of {amount} for invoice {number}. {where}\n"
    )
    safe_link = html.escape(link or "", quote=True)
    pay = f'<a href="{safe_link}">Pay invoice {html.escape(number)}</a>' if link else html.escape(where)
    body_html = (
        f"<p>Hello {html.escape(recipient['name'])},</p><p>Your bank asks you to confirm the payment of "
        f"{html.escape(amount)} for invoice {html.escape(number)}.</p><p>{pay}</p>"
    )
    return {
        "Subject": {"Data": f"Action required: confirm your payment for {number}", "Charset": "UTF-8"},
        "Body": {"Text": {"Data": text, "Charset": "UTF-8"}, "Html": {"Data": body_html, "Charset": "UTF-8"}},
    }


def invoice_recipient(tx, tenant_id: str, invoice_id: str, now) -> dict:
    """Who an invoice's email goes to, with its hosted link where this stage knows its public URL."""
    from chalicelib.billing import hosted

    recipient = tx.one(Q["invoice_recipient"], invoice_id=invoice_id)
    if recipient is None:
        raise errors.NotFound(f"no such invoice {invoice_id}")
    base = get_settings().public_api_url
    link = f"{base}/v1/hosted_invoices/{hosted.token(tx, tenant_id, invoice_id, now)}" if base else None
    return {**recipient, "link": link}


def send_payment_action_required(recipient: dict) -> None:
    _send(recipient["email"], payment_action_email(recipient))


def recipient_of(tx, subscription_id: str) -> dict:
    """Who a subscription's email goes to, and what it says."""
    recipient = tx.one(Q["subscription_recipient"], subscription_id=subscription_id)
    if recipient is None:
        raise errors.NotFound(f"no such subscription {subscription_id}")
    return recipient


def send_subscription_created(recipient: dict) -> None:
    _send(recipient["email"], subscription_created_email(recipient))


def _send(to: str, message: dict) -> None:
    aws.client("ses").send_email(Source=get_settings().ses_sender, Destination={"ToAddresses": [to]}, Message=message)
