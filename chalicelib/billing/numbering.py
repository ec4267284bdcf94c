"""Invoice and credit note numbers: sequential and gapless per tenant, in the order of finalization.

An invoice is ``{prefix}-000001``, a credit note ``{prefix}-CN-000001`` (the prefix is the
tenant's ``invoice_prefix``). Numbers are taken in the finalizing transaction from the
series' row in ``number_sequences``, by the one SQL rule ``take_numbers`` (migration 0007),
and that row stays locked until the transaction ends: a concurrent finalization waits for
it, and a rollback returns its numbers, so no number is skipped or used twice. A billing
round's invoices are born numbered (``invoicing.sql``'s ``write_invoices``, for the rows it
writes only); a finalized draft is numbered here, last. Drafts have no number.
"""

from chalicelib import encoding
from chalicelib.db.queries import load

Q = load("numbering")


def number_invoices(tx, invoice_ids: list[str]) -> dict[str, str]:
    """Number the invoices (in this order) with the tenant's next numbers; number by invoice id."""
    if not invoice_ids:
        return {}
    rows = tx.all(Q["number_invoices"], ids=encoding.dumps(list(invoice_ids)), n=len(invoice_ids))
    if len(rows) != len(invoice_ids):  # a numbered invoice among them: its numbers would leave a gap
        raise RuntimeError("only unnumbered invoices can be numbered")
    return {str(row["id"]): row["number"] for row in rows}


def next_credit_note_number(tx) -> str:
    return tx.scalar(Q["next_credit_note_number"])
