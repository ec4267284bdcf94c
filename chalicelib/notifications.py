"""Email through SES, text and HTML, from the tenant's name: to customers (a subscription, a trial ending,
an invoice, a failed payment or one to confirm, an inactive account) and to the tenant's admins (an
endpoint disabled). The send-notification consumer (handlers) sends each once per event."""

import html
from email.utils import formataddr

from chalicelib import aws, errors
from chalicelib.billing import currency_prices
from chalicelib.billing.currencies import format_amount
from chalicelib.config import get_settings
from chalicelib.db.queries import load

Q = load("notifications")


def _email(subject: str, name: str, paragraphs: list[str], link: tuple[str, str | None] | None = None) -> dict:
    """One email in text and HTML (every value escaped in the HTML): a greeting, paragraphs, a link."""
    label, url = link or ("", None)
    text = f"Hello {name},\n\n" + "\n\n".join(paragraphs) + (f"\n\n{label}: {url}\n" if url else "\n")
    body_html = f"<p>Hello {html.escape(name)},</p>" + "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    if url:
        body_html += f'<p><a href="{html.escape(url, quote=True)}">{html.escape(label)}</a></p>'
    return {
        "Subject": {"Data": subject, "Charset": "UTF-8"},
        "Body": {"Text": {"Data": text, "Charset": "UTF-8"}, "Html": {"Data": body_html, "Charset": "UTF-8"}},
    }


def subscription_created_email(r: dict) -> dict:
    price, renews = format_amount(r["amount"], r["currency"]), r["current_period_end"].strftime("%Y-%m-%d")
    said = f"Your {r['plan_name']} subscription is active: {price} per period, next renewal {renews}."
    return _email(f"Your {r['plan_name']} subscription is active", r["name"], [said])


def trial_ending_email(r: dict) -> dict:
    price, ends = format_amount(r["amount"], r["currency"]), r["trial_end"].strftime("%Y-%m-%d")
    said = f"Your {r['plan_name']} trial ends on {ends}. From then on it is {price} per period."
    return _email(f"Your {r['plan_name']} trial ends on {ends}", r["name"], [said])


def payment_action_email(r: dict) -> dict:
    """The bank asks the customer to confirm a payment: the invoice, and where to pay it."""
    number = r["number"] or "your invoice"
    said = f"Your bank asks you to confirm the payment of {format_amount(r['amount_due'], r['currency'])} for {number}."
    if not r.get("link"):
        said += " Please contact us to complete it."
    return _email(
        f"Action required: confirm your payment for {number}", r["name"], [said], ("Pay it here", r.get("link"))
    )


def invoice_finalized_email(r: dict) -> dict:
    """A new invoice: its total, what is due, and where to see it (the hosted page has the PDF)."""
    total, due = format_amount(r["total"], r["currency"]), format_amount(r["amount_due"], r["currency"])
    owed = f"{due} is due." if r["amount_due"] > 0 else "Nothing is due: it is already paid."
    said = f"Invoice {r['number']} for {total} is ready. {owed}"
    return _email(f"Invoice {r['number']}", r["name"], [said, *_sums(r)], ("View and download it", r.get("link")))


def _sums(r: dict) -> list[str]:
    """How an invoice with discounts or taxes comes to its total: subtotal, discount, each rate's tax."""
    if not r.get("total_discount") and not r.get("tax"):
        return []
    money = lambda amount: format_amount(amount, r["currency"])  # noqa: E731
    parts = [f"Subtotal {money(r['subtotal'])}"]
    if r.get("total_discount"):
        parts.append(f"discount {money(-r['total_discount'])}")
    for tax in r.get("total_tax_amounts") or ():
        included = " (included)" if tax["inclusive"] else ""
        parts.append(f"{tax['display_name']} {tax['percentage']}% {money(tax['amount'])}{included}")
    return [", ".join(parts) + f", total {money(r['total'])}."]


def payment_failed_email(r: dict) -> dict:
    due = format_amount(r["amount_due"], r["currency"])
    said = f"We could not collect {due} for invoice {r['number']}. You can pay it now."
    return _email(f"Payment failed for invoice {r['number']}", r["name"], [said], ("Pay it here", r.get("link")))


def account_inactive_email(r: dict) -> dict:
    said = "We could not collect payment after several attempts, so your account is now inactive."
    return _email("Your account is inactive", r["name"], [said, "Please pay your open invoices to restore it."])


def endpoint_disabled_email(r: dict, event: dict) -> dict:
    """To the tenant's admins: an endpoint that failed for 3 days was disabled."""
    said = f"Your webhook endpoint {event['url']} has failed every delivery since {event.get('failingSince')}."
    then = f'It is disabled; turn it back on with POST /v1/webhook_endpoints/{event["endpointId"]} {{"enabled": true}}.'
    return _email("A webhook endpoint was disabled", r["name"], [said, then])


def invoice_recipient(tx, tenant_id: str, invoice_id: str, now) -> dict:
    """Who an invoice's email goes to, with its hosted link where this stage knows its public URL."""
    from chalicelib.billing import hosted

    recipient = tx.one(Q["invoice_recipient"], invoice_id=invoice_id)
    if recipient is None:
        raise errors.NotFound(f"no such invoice {invoice_id}")
    base = get_settings().public_api_url
    link = f"{base}/v1/hosted_invoices/{hosted.token(tx, tenant_id, invoice_id, now)}" if base else None
    return {**recipient, "link": link}


def recipient_of(tx, subscription_id: str) -> dict:
    """Who a subscription's email goes to, and what it says: its price per period (times its quantity)
    in the account's currency, as its invoices bill it."""
    recipient = tx.one(Q["subscription_recipient"], subscription_id=subscription_id)
    if recipient is None:
        raise errors.NotFound(f"no such subscription {subscription_id}")
    price = currency_prices.in_currency(recipient, recipient["account_currency"])
    return {**recipient, "amount": price["amount"] * recipient["quantity"], "currency": price["currency"]}


def account_recipient(tx, account_id: str) -> dict:
    recipient = tx.one(Q["account_recipient"], account_id=account_id)
    if recipient is None:
        raise errors.NotFound(f"no such account {account_id}")
    return recipient


def tenant_admins(tx) -> dict:
    return tx.one(Q["tenant_admins"])


def send(recipient: dict, message: dict) -> None:
    """One email from the tenant (its name, the platform's verified address) to the recipient."""
    sender = formataddr((recipient["sender_name"], get_settings().ses_sender), charset="utf-8")
    aws.client("ses").send_email(Source=sender, Destination={"ToAddresses": [recipient["email"]]}, Message=message)
