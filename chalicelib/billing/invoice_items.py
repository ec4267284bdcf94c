"""Invoice items: one-off charges on an account (a setup fee, an extra seat, a consultation).

An item is pending until an invoice takes it: the account's next invoice, whatever bills it
(a renewal, a draft being finalized, a one-off invoice: ``invoicing`` attaches them), so an
item is billed exactly once. Its amount is integer minor units in the account's currency:
``amount``, or ``quantity x unit_amount``. A pending item can be deleted; a billed one is
part of its invoice and is corrected with a credit note.
"""

from dataclasses import dataclass, field

from chalicelib import audit, encoding, errors
from chalicelib.billing import accounts
from chalicelib.billing.lines import MAX_AMOUNT
from chalicelib.db import paging
from chalicelib.db.queries import load

Q = load("invoice_items")


@dataclass(frozen=True)
class NewInvoiceItem:
    account_id: str
    currency: str
    description: str
    quantity: int
    unit_amount: int
    metadata: dict = field(default_factory=dict)

    @classmethod
    def of(cls, body: dict) -> "NewInvoiceItem":
        """From the API's body (``invoice_item_create``): ``amount``, or ``quantity`` and ``unit_amount``."""
        if ("amount" in body) == ("unit_amount" in body):
            issue = "give amount, or unit_amount (with an optional quantity), not both"
            raise errors.InvalidRequest("invalid invoice item", details=[{"field": "amount", "issue": issue}])
        quantity = body.get("quantity", 1)
        unit_amount = body["unit_amount"] if "unit_amount" in body else body["amount"]
        if "amount" in body and quantity != 1:
            issue = "a quantity goes with unit_amount"
            raise errors.InvalidRequest("invalid invoice item", details=[{"field": "quantity", "issue": issue}])
        if quantity * unit_amount > MAX_AMOUNT:
            raise errors.UnprocessableState(
                f"the item comes to {quantity * unit_amount} minor units; the largest amount is {MAX_AMOUNT}",
                code="amount_too_large",
            )
        return cls(
            body["account_id"].lower(),
            body["currency"],
            body["description"],
            quantity,
            unit_amount,
            body.get("metadata", {}),
        )


def create(tx, actor, command: NewInvoiceItem) -> dict:
    """A pending item on the account (404 when it is not this tenant's; 422 in another currency)."""
    account = accounts.lock(tx, command.account_id)  # the pending total below holds until this item is in
    if command.currency != account["currency"]:
        raise errors.UnprocessableState(
            f"the account is billed in {account['currency']}, not {command.currency}",
            code="currency_mismatch",
            details=[{"field": "currency", "issue": f"must be the account's currency, {account['currency']}"}],
        )
    pending = tx.scalar(Q["pending_total"], account_id=command.account_id)
    if pending + command.quantity * command.unit_amount > MAX_AMOUNT:
        raise errors.UnprocessableState(
            f"the account's pending items would come to more than {MAX_AMOUNT} minor units", code="amount_too_large"
        )
    item = tx.one(
        Q["create"],
        account_id=command.account_id,
        currency=command.currency,
        description=command.description,
        quantity=command.quantity,
        unit_amount=command.unit_amount,
        metadata=encoding.dumps(command.metadata),
    )
    audit.record(tx, actor, "invoice_item.created", "invoice_item", item["id"], {"amount": item["amount"]})
    return item


def get(tx, item_id: str) -> dict:
    item = tx.one(Q["get"], id=item_id)
    if item is None:
        raise errors.NotFound("no such invoice item")
    return item


def delete(tx, actor, item_id: str) -> dict:
    """Delete a pending item; one an invoice took is 422 (credit the invoice instead)."""
    item = get(tx, item_id)
    accounts.lock(tx, str(item["account_id"]))
    if tx.one(Q["delete_pending"], id=item_id) is None:
        raise errors.UnprocessableState("the item is on an invoice; credit the invoice instead", code="item_invoiced")
    audit.record(tx, actor, "invoice_item.deleted", "invoice_item", item_id)
    return {"id": item_id, "object": "invoice_item", "deleted": True}


def list_page(tx, page: paging.PageRequest, *, account_id: str | None = None, pending: bool | None = None) -> dict:
    accounts.check_visible(tx, account_id)
    paging.check_cursor(tx, Q["exists"], page, "invoice item")
    rows = tx.all(Q["list"], account_id=account_id, pending=pending, after=page.starting_after, limit=page.limit + 1)
    return paging.page(rows, page, "/v1/invoice_items")
