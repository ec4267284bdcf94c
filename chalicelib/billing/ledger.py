"""The ledger: signed, append-only money movements per account (minor units).

A charge is positive (the account owes more), a payment or credit negative; the
account's balance is the sum of its entries.
"""

from chalicelib import encoding
from chalicelib.billing import accounts
from chalicelib.db import paging
from chalicelib.db.queries import load

Q = load("ledger")


def list_page(tx, account_id: str, page: paging.PageRequest) -> dict:
    account = accounts.get(tx, account_id)
    paging.check_cursor(tx, Q["exists"], page, "ledger entry", account_id=account["id"])
    rows = tx.all(Q["entries"], account_id=account["id"], after=page.starting_after, limit=page.limit + 1)
    result = paging.page(rows, page, f"/v1/accounts/{account['id']}/ledger")
    result["balance"] = tx.scalar(Q["balance"], account_id=account["id"])
    result["currency"] = account["currency"]
    return result


def post(
    tx,
    *,
    account_id,
    entry_type: str,
    amount: int,
    currency: str,
    idempotency_key: str,
    invoice_id=None,
    period_start=None,
    description: str = "",
    metadata: dict | None = None,
    credit_note_id=None,
) -> bool:
    """Append one entry (signed minor units); False when this key was already posted."""
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise TypeError("ledger amounts are integer minor units")
    row = tx.run(
        Q["post"],
        account_id=account_id,
        entry_type=entry_type,
        amount=amount,
        currency=currency,
        invoice_id=invoice_id,
        period_start=period_start,
        idempotency_key=idempotency_key,
        description=description,
        metadata=encoding.dumps(metadata or {}),
        credit_note_id=credit_note_id,
    )
    return bool(row)


def post_many(tx, entries: list[dict]) -> None:
    """Append entries set-based (each a dict of ``post``'s keywords); keys already posted are skipped."""
    for entry in entries:
        if not isinstance(entry["amount"], int) or isinstance(entry["amount"], bool):
            raise TypeError("ledger amounts are integer minor units")
    if entries:
        tx.run(Q["post_many"], rows=encoding.dumps(entries))
