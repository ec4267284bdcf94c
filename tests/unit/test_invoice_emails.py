"""The invoice email says how a discounted or taxed invoice comes to its total."""

from chalicelib import notifications

RECIPIENT = {"name": "Ada", "number": "TST-000007", "currency": "USD", "amount_due": 4641, "link": None}


def test_the_invoice_email_shows_subtotal_discount_each_rate_and_total():
    tax = {"amount": 741, "inclusive": False, "display_name": "VAT", "percentage": "19"}
    sums = {"subtotal": 4900, "total_discount": 1000, "tax": 741, "total": 4641, "total_tax_amounts": [tax]}

    text = notifications.invoice_finalized_email({**RECIPIENT, **sums})["Body"]["Text"]["Data"]

    assert "Subtotal USD 49.00, discount -USD 10.00, VAT 19% USD 7.41, total USD 46.41." in text


def test_an_invoice_without_discounts_or_taxes_says_only_its_total():
    plain = {"subtotal": 4900, "total_discount": 0, "tax": 0, "total": 4900, "total_tax_amounts": []}

    text = notifications.invoice_finalized_email({**RECIPIENT, **plain, "amount_due": 4900})["Body"]["Text"]["Data"]

    assert "Subtotal" not in text and "Invoice TST-000007 for USD 49.00 is ready." in text
