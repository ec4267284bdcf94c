"""Customer email through SES: plain-text and HTML bodies, sent once per event."""

import html
import logging

from chalicelib import aws, errors, idempotency
from chalicelib.config import get_settings
from chalicelib.db.queries import load

Q = load("notifications")
log = logging.getLogger("billing.notifications")
CONSUMER = "send-notification"


def format_amount(amount: int, currency: str) -> str:
    """Display only: minor units to a decimal string (2-decimal currencies; JPY and co. have 0)."""
    exponent = 0 if currency in {"JPY", "KRW", "VND", "CLP", "ISK", "UGX"} else 2
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


def on_subscription_created(event: dict) -> bool:
    """send-notification consumer."""

    def prepare(tx):
        recipient = tx.one(Q["subscription_recipient"], subscription_id=event["subscriptionId"])
        if recipient is None:
            raise errors.NotFound(f"no such subscription {event['subscriptionId']}")
        return recipient

    def send(recipient):
        aws.client("ses").send_email(
            Source=get_settings().ses_sender,
            Destination={"ToAddresses": [recipient["email"]]},
            Message=subscription_created_email(recipient),
        )

    return idempotency.consume_with_side_effect(event["tenantId"], CONSUMER, event["eventId"], prepare, send)
