"""The upcoming invoice: what an account's next invoice would be if it were issued now.

Computed by the same code as the daily round (``engine.upcoming``: the state a round reads, the bill
``periods`` computes, the lines the writer composes), on the usage recorded so far, and shown as an
invoice without an id or a number (Stripe's upcoming invoice, Lago's current usage). Writes nothing.
"""

from chalicelib import errors
from chalicelib.billing import accounts, adjustments, engine, invoicing
from chalicelib.billing.periods import Bill


def of_account(tx, account_id: str) -> dict:
    """The account's upcoming invoice; 404 for an unknown account, or one with nothing upcoming
    (``invoice_upcoming_none``: no live subscription, or billing stopped)."""
    account = accounts.get(tx, account_id)
    bill = engine.upcoming(tx, account_id)
    if bill is None:
        raise errors.NotFound("the account has no upcoming invoice", code="invoice_upcoming_none")
    return _invoice(bill, account["credit_balance"] or 0)


def _invoice(bill: Bill, credit: int) -> dict:
    total = bill.total
    applied = min(max(total, 0), credit)
    lines = [_line(line, position, bill) for position, line in enumerate(bill.lines)]
    return {
        "id": None,
        "object": "invoice",
        "account_id": bill.account_id,
        "subscription_id": bill.subscription.id,
        "billing_reason": bill.reason,
        "number": None,
        "status": "draft",
        "currency": bill.currency,
        **adjustments.summary(bill.lines),  # subtotal, discounts and taxes, as the issued invoice sums them
        "total": total,
        "credit_applied": applied,
        "amount_due": max(total, 0) - applied,
        "period_start": bill.period_start,
        "period_end": bill.period_end,
        "next_payment_attempt": None if bill.draft else bill.boundary,
        "auto_finalize_at": bill.auto_finalize_at,
        "lines": {"object": "list", "data": lines},
    }


def _line(line, position: int, bill: Bill) -> dict:
    """A line as the invoice's lines show it (``invoicing.line_row``: the fields the writer writes)."""
    return {
        "object": "line_item",
        "id": None,
        **invoicing.line_row(line, position, bill.currency),
        "period_start": line.period_start or bill.period_start,
        "period_end": line.period_end or bill.period_end,
    }
