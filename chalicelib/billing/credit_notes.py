"""Credit notes: the one way a finalized invoice is corrected (never edited, never deleted).

A credit note credits part or all of what is left creditable on an open, paid or
uncollectible invoice (its total less earlier credit notes), as an amount or line by line
(never more than a line's amount less what was credited on it). It is split, as Stripe
splits it: what the invoice still has due is lowered first (``pre_payment_amount``: an
invoice left with nothing due is paid); the rest was paid, and goes back as a
``refund_amount`` through the gateway (``refunds``: at most what the gateway collected for
the invoice) and a ``credit_amount`` to the customer's balance, which the account's next
invoice uses before any payment is attempted. Its ledger entry is a ``credit`` of the whole
amount; a refund adds a ``refund`` entry (money paid back out), so
``balance = sum(ledger)`` holds after every step. Numbers are gapless per tenant.
"""

from dataclasses import dataclass

from chalicelib import audit, encoding, errors, outbox
from chalicelib.billing import calendar, collection, invoices, ledger, numbering, refunds
from chalicelib.db import paging
from chalicelib.db.queries import load
from chalicelib.db.scope import tenant_transaction

Q = load("credit_notes")
REASONS = ("duplicate", "fraudulent", "order_change", "product_unsatisfactory")


@dataclass(frozen=True)
class NewCreditNote:
    invoice_id: str
    reason: str
    amount: int | None = None  # None with no lines: everything still creditable
    lines: tuple[tuple[str, int], ...] = ()  # (invoice line id, amount)
    refund_amount: int | None = None
    credit_amount: int | None = None
    currency: str | None = None
    memo: str | None = None

    @classmethod
    def of(cls, body: dict) -> "NewCreditNote":
        lines = tuple((line["invoice_line_item"].lower(), line["amount"]) for line in body.get("lines", ()))
        if lines and "amount" in body:
            issue = "give amount or lines, not both"
            raise errors.InvalidRequest("invalid credit note", details=[{"field": "amount", "issue": issue}])
        fields = ("amount", "refund_amount", "credit_amount", "currency", "memo")
        return cls(body["invoice"].lower(), body["reason"], lines=lines, **{name: body.get(name) for name in fields})


@dataclass(frozen=True)
class Split:
    pre_payment: int  # lowers what the invoice has due
    credit: int  # to the customer's balance
    refund: int  # back through the gateway


def create(tenant_id: str, actor, command: NewCreditNote) -> dict:
    """Issue the credit note, then send its refund (``issue``, then ``refunded``)."""
    with tenant_transaction(tenant_id) as tx:
        note = issue(tx, actor, command)
    return refunded(tenant_id, note)


def issue(tx, actor, command: NewCreditNote) -> dict:
    """The credit note, its ledger entries and any refund (pending), in the caller's transaction."""
    account, invoice = invoices.lock_finalized(tx, command.invoice_id)
    _check_currency(invoice, command.currency)
    invoices.check_no_payment_in_flight(tx, invoice)
    lines = _lines(tx, invoice, command.lines)
    creditable = invoices.still_charged(invoice)
    amount = sum(amount for _id, amount in lines) if lines else command.amount
    amount = creditable if amount is None else amount
    if amount <= 0 or amount > creditable:
        raise errors.UnprocessableState(
            f"{amount} is not creditable: {creditable} of the invoice's {invoice['total']} is left to credit",
            code="amount_exceeds_creditable",
        )
    split = _split(tx, invoice, amount, command)
    note = tx.one(
        Q["create"],
        invoice_id=invoice["id"],
        account_id=account["id"],
        number=numbering.next_credit_note_number(tx),
        currency=invoice["currency"],
        amount=amount,
        pre=split.pre_payment,
        credit=split.credit,
        refund=split.refund,
        reason=command.reason,
        memo=command.memo,
        lines=encoding.dumps([{"invoice_line_item": line_id, "amount": value} for line_id, value in lines]),
    )
    _post(tx, account, invoice, note, split)
    if split.refund:
        refunds.record_pending(tx, invoice, note, split.refund)
    collection.reactivate_if_clear(tx, str(account["id"]))
    _announce(tx, actor, invoice, note)
    return get(tx, str(note["id"]))


def refunded(tenant_id: str, note: dict) -> dict:
    """After commit: the credit note's pending refund sent to the gateway; the note as it stands then."""
    if note["refund_status"] == "pending":
        refunds.settle_for_credit_note(tenant_id, str(note["id"]), calendar.utcnow())
    with tenant_transaction(tenant_id) as tx:
        return get(tx, str(note["id"]))


def _check_currency(invoice: dict, currency: str | None) -> None:
    if currency is not None and currency != invoice["currency"]:
        raise errors.UnprocessableState(
            f"the invoice is in {invoice['currency']}, not {currency}",
            code="currency_mismatch",
            details=[{"field": "currency", "issue": f"must be the invoice's currency, {invoice['currency']}"}],
        )


def _announce(tx, actor, invoice: dict, note: dict) -> None:
    fields = {"creditNoteId": note["id"], "invoiceId": invoice["id"], "accountId": invoice["account_id"]}
    fields.update(number=note["number"], amount=note["amount"], currency=invoice["currency"])
    outbox.add(tx, "credit_note.created", fields, get(tx, str(note["id"])))
    audit.record(tx, actor, "credit_note.created", "credit_note", note["id"], {"invoice": invoice["id"]})


def _lines(tx, invoice: dict, wanted: tuple[tuple[str, int], ...]) -> list[tuple[str, int]]:
    """Each credited line checked against what is left creditable on it."""
    if not wanted:
        return []
    left = {str(row["id"]): row["creditable"] for row in tx.all(Q["creditable_lines"], invoice_id=invoice["id"])}
    problems = []
    for position, (line_id, amount) in enumerate(wanted):
        if line_id not in left:
            problems.append({"field": f"lines.{position}.invoice_line_item", "issue": "no such line on the invoice"})
        elif amount > left[line_id]:
            problems.append({"field": f"lines.{position}.amount", "issue": f"at most {left[line_id]} is creditable"})
        else:
            left[line_id] -= amount
    if problems:
        raise errors.UnprocessableState(
            "the lines cannot be credited so", code="amount_exceeds_creditable", details=problems
        )
    return list(wanted)


def _split(tx, invoice: dict, amount: int, command: NewCreditNote) -> Split:
    """What lowers the amount due, and how the rest (already paid) goes back: refunded, or credited."""
    pre = min(amount, invoice["amount_due"]) if invoice["status"] in ("open", "uncollectible") else 0
    post = amount - pre
    refund = command.refund_amount or 0
    credit = post - refund if command.credit_amount is None else command.credit_amount
    if refund + credit != post or credit < 0:
        raise errors.UnprocessableState(
            f"refund_amount and credit_amount must add up to the {post} already paid of this credit note",
            code="amounts_do_not_add_up",
        )
    refundable = refunds.refundable(tx, invoice)
    if refund > refundable:
        raise errors.UnprocessableState(
            f"at most {refundable} can be refunded: what the gateway collected for the invoice less refunds",
            code="refund_exceeds_paid",
        )
    return Split(pre, credit, refund)


def _post(tx, account: dict, invoice: dict, note: dict, split: Split) -> None:
    ledger.post(
        tx,
        account_id=account["id"],
        entry_type="credit",
        amount=-note["amount"],
        currency=invoice["currency"],
        idempotency_key=f"credit_note:{note['id']}",
        invoice_id=invoice["id"],
        credit_note_id=note["id"],
        description=f"Credit note {note['number']}",
    )
    tx.run(Q["apply_to_invoice"], id=invoice["id"], pre=split.pre_payment, post=split.credit + split.refund)


def get(tx, note_id: str) -> dict:
    note = tx.one(Q["get"], id=note_id)
    if note is None:
        raise errors.NotFound("no such credit note")
    return note


def list_page(tx, page: paging.PageRequest, *, invoice_id: str | None = None) -> dict:
    invoices.check_visible(tx, invoice_id)
    paging.check_cursor(tx, Q["exists"], page, "credit note")
    rows = tx.all(Q["list"], invoice_id=invoice_id, after=page.starting_after, limit=page.limit + 1)
    return paging.page(rows, page, "/v1/credit_notes")


def of_invoice(tx, invoice_id: str) -> list[dict]:
    return tx.all(Q["of_invoice"], invoice_id=invoice_id)
