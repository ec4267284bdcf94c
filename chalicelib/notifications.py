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


def recipient_of(tx, subscription_id: str) -> dict:
    """Who a subscription's email goes to, and what it says."""
    recipient = tx.one(Q["subscription_recipient"], subscription_id=subscription_id)
    if recipient is None:
        raise errors.NotFound(f"no such subscription {subscription_id}")
    return recipient


def send_subscription_created(recipient: dict) -> None:
    aws.client("ses").send_email(
        Source=get_settings().ses_sender,
        Destination={"ToAddresses": [recipient["email"]]},
        Message=subscription_created_email(recipient),
    )
