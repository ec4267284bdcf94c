"""The one writer of bills: invoices, their lines, ledger entries, subscription state and payment intents.

``periods`` computes what each billing instant bills; ``issue`` writes a list of those
bills in the caller's transaction with one statement (``write``: a data-modifying CTE per
table, every table's rows one JSON parameter), so a batch of renewals, one account's
renewal, a subscription's first invoice and its final invoice are all written by the same
code, in one round trip. It is idempotent twice over: an invoice is unique per
subscription, reason and period, and a charge's ledger key is ``periods.charge_key``, so a
retry of any step adds nothing. Amounts are integer minor units in the plan's currency.
The payment intents it opens (first attempts, under ``periods.payment_key``) are settled
after commit by ``collection``.

A bill's total is posted to the ledger: a charge, or a credit when its credits exceed its
charges (a negative total). An invoice uses the account's credit balance before
anything is collected (in ``write``), so balance = sum(ledger) always, and
what the gateway is asked for is the amount due. A draft posts nothing.

Two things join a bill here, whatever computed it (``Pending``): the account's pending invoice
items (one-off charges), which land on its next invoice; and the tenant's grace period: a
renewal or final invoice is *held* as a draft until ``boundary + invoice_grace_hours``,
when ``revise_draft`` prices its usage again (late events count) and takes the items
added meanwhile, and ``invoices.finalize`` numbers, charges and collects it. The invoices
a round writes are born numbered (in ``write``, through ``numbering``'s one rule:
gapless, the series' row stays locked until commit).
"""

import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from chalicelib import encoding, outbox
from chalicelib.billing import adjustments, collection, periods, subscription_views, usage_charges
from chalicelib.billing.lines import Line, total_of
from chalicelib.billing.periods import Bill
from chalicelib.config import get_settings
from chalicelib.db.queries import load
from chalicelib.observability import emit_metric

Q = load("invoicing")
# Invoices that bill metered usage in arrears: the ones a tenant's grace period holds as drafts.
HELD_REASONS = ("subscription_cycle", "subscription_cancel")


@dataclass(frozen=True)
class Issued:
    bill: Bill
    invoice_id: str | None  # None: nothing to invoice, or already invoiced (a retry)
    intent: collection.Intent | None  # the payment to settle after commit
    amount_due: int = 0  # what is left to collect once the account's credit balance was used

    @property
    def total(self) -> int:
        return self.bill.total


@dataclass(frozen=True)
class Pending:
    """What joins bills at the writer, whatever computed them: the tenant's grace hours, and each
    account's invoice items no invoice has taken yet (its status and the items as lines, oldest
    first), locked by whoever read them. A billing round reads both with its state
    (``engine``); ``issue`` reads them itself otherwise."""

    grace_hours: int
    items: dict[str, tuple[str, tuple[Line, ...]]]


def issue(
    tx,
    tenant_id: str,
    bills: list[Bill],
    *,
    settle_now: bool = False,
    pending: Pending | None = None,
    commit: bool = False,
) -> dict[str, Issued]:
    """Write ``bills`` (at most one per account) in one statement; what was issued, by account id.

    ``settle_now``: the caller settles the payments right after commit, so they are opened
    already claimed by it (``collection.settle_many(..., claimed=True)``). ``commit``: the caller
    runs nothing after this in its transaction, so the write takes the COMMIT with it (one round
    trip); no bill may end a subscription then (its events are written after the write).
    """
    started = time.perf_counter()
    if len({bill.account_id for bill in bills}) != len(bills):
        raise ValueError("one bill per account per call")
    if commit and any(bill.ends for bill in bills):
        raise ValueError("a bill that ends a subscription writes its events after the write: no commit")
    bills = prepare(bills, pending or _pending(tx, bills))
    written, intents = _write(tx, bills, settle_now, commit)
    bills_written = [bill for bill in bills if bill.account_id in written]
    _end(tx, [bill for bill in bills if bill.ends])
    elapsed_ms = (time.perf_counter() - started) * 1000
    for bill in bills_written:
        emit_metric("invoice_amount", bill.total, "None", TenantId=tenant_id, PlanId=bill.subscription.plan_id)
    if bills_written:
        emit_metric("invoice_generation_time", elapsed_ms / len(bills_written), "Milliseconds", TenantId=tenant_id)
    return {bill.account_id: _issued(bill, written, intents) for bill in bills}


def prepare(bills: list[Bill], pending: Pending) -> list[Bill]:
    """The bills as they are written, whatever computed them: held as drafts for the tenant's grace
    period, with the accounts' pending invoice items, then discounted and taxed (``adjustments``).
    ``engine.preview`` and ``engine.upcoming`` call it too, so an upcoming invoice is the one issued."""
    return [_adjusted(bill) for bill in _with_pending_items(_held(bills, pending.grace_hours), pending.items)]


def _adjusted(bill: Bill) -> Bill:
    """The bill's lines discounted and taxed on the plan it bills (after a change at this boundary, the
    new one); collected only if something is still owed; the discounts its invoice consumes."""
    if not bill.lines:
        return bill
    terms = bill.then or bill.subscription
    done = adjustments.apply(
        bill.lines,
        bill.subscription.adjustments,
        bill.currency,
        plan_id=terms.plan_id,
        plan_code=terms.plan_code,
        opens_period=bill.opens_period,
    )
    if done.lines == bill.lines and not done.consumed:
        return bill  # nothing applied: the bill as it is (most of a round's bills)
    return replace(bill, lines=done.lines, collect=bill.collect and total_of(done.lines) > 0, consumes=done.consumed)


def _issued(bill: Bill, written: dict, intents: dict) -> Issued:
    invoice_id, amount_due = written.get(bill.account_id, (None, 0))
    return Issued(bill, invoice_id, intents.get(bill.account_id), 0 if bill.draft else amount_due)


def item_line(item: dict) -> Line:
    """A pending invoice item (``id``, ``description``, ``quantity``, ``unit_amount``, ``amount``) as its line."""
    return Line(
        "invoice_item",
        item["description"],
        item["quantity"],
        item["unit_amount"],
        item["amount"],
        invoice_item_id=str(item["id"]),
    )


def usage_totals(tx, windows: list[tuple[str, object, object, list]]) -> dict[str, list]:
    """Metered usage per account over each ``(account_id, from, to, usage_prices)`` window, as those prices
    aggregate it (``billing_usage``, the function a billing round reads it through), in one statement:
    per usage price (by index) its groups' exact quantities, as ``usage_charges.lines`` prices them."""
    totals: dict[str, list] = {account_id: [] for account_id, *_window in windows}
    rows = [{"account_id": a, "from_at": f, "to_at": t, "prices": p} for a, f, t, p in windows]
    if rows:
        for row in tx.all(Q["usage_totals"], windows=encoding.dumps(rows)):
            totals[str(row["account_id"])] = row["usage"] or []
    return totals


def subscription_state(tx, subscription_id: str) -> dict | None:
    """A subscription with its plan price (``periods.Subscription.of`` reads it) and status."""
    return tx.one(Q["subscription_state"], subscription_id=subscription_id)


def _write(tx, bills: list[Bill], settle_now: bool, commit: bool) -> tuple[dict[str, tuple[str, int]], dict]:
    """The one statement (with the COMMIT, if ``commit``): invoices (a retry writes none), their lines,
    ledger entries and first payment attempts, and the subscriptions as the bills leave them. The
    invoices written, by account id (invoice id, amount due), and the attempts opened, by account id."""
    invoiced = [bill for bill in bills if bill.lines]
    states = [_state_row(bill) for bill in bills if bill.ends or bill.then is not None]
    if not invoiced and not states:
        return {}, {}
    rows = (tx.all_then_commit if commit else tx.all)(
        Q["write"],
        invoices=encoding.dumps([_invoice_row(bill) for bill in invoiced]),
        lines=encoding.dumps([line for bill in invoiced for line in _line_rows(bill)]),
        states=encoding.dumps(states),
        claim=settle_now,
        lease_s=get_settings().payment_claim_lease_s,
    )
    written = {row["account_id"]: (row["invoice_id"], row["amount_due"]) for row in rows}
    intents = {
        row["account_id"]: collection.Intent(
            row["attempt_id"],
            row["account_id"],
            row["invoice_id"],
            row["idempotency_key"],
            row["amount"],
            row["currency"],
        )
        for row in rows
        if row["attempt_id"] is not None
    }
    return written, intents


def _invoice_row(bill: Bill) -> dict:
    """The bill's invoice, its ledger entry (its total as a charge, or as a credit when negative: one key
    either way) and the gateway key of its first payment attempt."""
    return {
        "account_id": bill.account_id,
        "subscription_id": bill.subscription.id,
        "billing_reason": bill.reason,
        "currency": bill.currency,
        "total": bill.total,
        "period_start": _stamp(bill.period_start),
        "period_end": _stamp(bill.period_end),
        "boundary": _stamp(bill.boundary),
        "draft": bill.draft,
        "auto_finalize_at": _stamp(bill.auto_finalize_at),
        "usage_terms": bill.usage_terms,
        "collect": bill.collect,
        # A bill's invoice is its subscription's: the key does not need the invoice's id.
        "pay_key": periods.payment_key(None, bill.subscription.id, bill.reason, bill.period_start, 0),
        "entry_type": "charge" if bill.total >= 0 else "credit",
        "charge_key": bill.charge_key,
        "description": bill.description,
        **adjustments.summary(bill.lines),
        # A draft keeps what it was discounted and taxed with: it is finalized on those (``revise_draft``).
        "adjustments": _terms_of(bill) if bill.draft else None,
        "consumes": list(bill.consumes),
    }


def _terms_of(bill: Bill) -> dict:
    terms = bill.then or bill.subscription
    return {**(bill.subscription.adjustments or {}), "plan_id": terms.plan_id, "plan_code": terms.plan_code}


def _line_rows(bill: Bill) -> list[dict]:
    """The bill's lines in order (a line with no period of its own has the invoice's: sent as null)."""
    return [
        {
            "account_id": bill.account_id,
            **line_row(line, position, bill.currency),
            "period_start": _stamp(line.period_start),
            "period_end": _stamp(line.period_end),
        }
        for position, line in enumerate(bill.lines)
    ]


def line_row(line, position: int, currency: str) -> dict:
    """What every written line carries, whichever statement writes it (and the upcoming invoice shows)."""
    return {
        "kind": line.kind,
        "description": line.description,
        "metric": line.metric,
        "quantity": line.quantity,
        "unit_amount": line.unit_amount,
        "amount": line.amount,
        "currency": currency,
        "position": position,
        "invoice_item_id": line.invoice_item_id,
        "discount_amounts": list(line.discount_amounts),
        "tax_amounts": list(line.tax_amounts),
        "discount_id": line.discount_id,
        "tax_rate_id": line.tax_rate_id,
    }


def _stamp(value: datetime | None) -> str | None:
    """An instant as the statement's JSON carries it (ISO 8601 with its offset: PostgreSQL reads it as is)."""
    return None if value is None else value.isoformat()


def _write_lines(tx, invoices: list[tuple]) -> None:
    """Each ``(invoice id, currency, lines, period start, period end)``'s lines, in order (a line with no
    period of its own has the invoice's); a line billing an invoice item attaches the item to its
    invoice (in the same statement). For one-off invoices and drafts being finalized."""
    rows = [
        {
            "invoice_id": invoice_id,
            **line_row(line, position, currency),
            "period_start": line.period_start or period_start,
            "period_end": line.period_end or period_end,
        }
        for invoice_id, currency, lines, period_start, period_end in invoices
        for position, line in enumerate(lines)
    ]
    if rows:
        tx.run(Q["write_lines"], rows=encoding.dumps(rows))


def _pending(tx, bills: list[Bill]) -> Pending:
    """The grace hours (read only when a bill could be held) and the pending items of accounts billed."""
    holdable = any(bill.lines and bill.reason in HELD_REASONS and not bill.draft for bill in bills)
    hours = tx.scalar(Q["grace_hours"]) if holdable else 0
    return Pending(hours or 0, _pending_items(tx, [bill.account_id for bill in bills if bill.lines]))


def _held(bills: list[Bill], hours: int) -> list[Bill]:
    """Renewal and final bills held as drafts for the tenant's grace period (none by default)."""
    if not hours:
        return bills
    return [
        bill.held(bill.boundary + timedelta(hours=hours))
        if bill.lines and bill.reason in HELD_REASONS and not bill.draft
        else bill
        for bill in bills
    ]


def _with_pending_items(bills: list[Bill], found: dict[str, tuple[str, tuple[Line, ...]]]) -> list[Bill]:
    """Each invoiced bill with its account's pending invoice items as lines, collected if the items
    leave an ACTIVE account something to pay."""
    with_items = []
    for bill in bills:
        if not found.get(bill.account_id, (None, ()))[1] or not bill.lines:
            with_items.append(bill)
            continue
        status, items = found[bill.account_id]
        lines = (*bill.lines, *items)
        with_items.append(replace(bill, lines=lines, collect=not bill.draft and periods.collects(status, lines)))
    return with_items


def _pending_items(tx, account_ids: list[str]) -> dict[str, tuple[str, tuple[Line, ...]]]:
    """The accounts' invoice items no invoice has taken yet, as lines, oldest first (locked), with each
    account's status; only accounts that have some."""
    found: dict[str, tuple[str, list[Line]]] = {}
    if not account_ids:
        return {}
    for row in tx.all(Q["pending_items"], ids=encoding.dumps(sorted(account_ids))):
        found.setdefault(str(row["account_id"]), (row["account_status"], []))[1].append(item_line(row))
    return {account_id: (status, tuple(lines)) for account_id, (status, lines) in found.items()}


def write_one_off(tx, account: dict, at: datetime, description: str | None) -> str | None:
    """A one-off draft invoice of the account's pending items (None when there are none)."""
    account_id = str(account["id"])
    _status, items = _pending_items(tx, [account_id]).get(account_id, (None, []))
    if not items:
        return None
    terms = tx.scalar(Q["account_adjustments"], account_id=account_id)
    done = adjustments.apply(items, terms, account["currency"])
    row = {"account_id": account_id, "currency": account["currency"], "total": total_of(done.lines), "at": at}
    invoice_id = str(tx.scalar(Q["write_one_off"], **row, description=description))
    _write_lines(tx, [(invoice_id, account["currency"], done.lines, at, at)])
    # A once discount is used by the draft it discounts, as a held draft's is: no other invoice takes it
    # meanwhile (finalizing it applies the same terms and uses nothing more).
    _set_amounts(tx, invoice_id, done.lines, terms, done.consumed)
    return invoice_id


def _set_amounts(tx, invoice_id: str, lines, terms: dict | None, consumes) -> None:
    """The invoice's sums of its lines, the terms it was discounted and taxed on, and what it consumes."""
    sums = adjustments.summary(lines)
    tx.run(
        Q["set_amounts"],
        invoice_id=invoice_id,
        subtotal=sums["subtotal"],
        total_discount=sums["total_discount"],
        tax=sums["tax"],
        total_discount_amounts=encoding.dumps(sums["total_discount_amounts"]),
        total_tax_amounts=encoding.dumps(sums["total_tax_amounts"]),
        adjustments=encoding.dumps(terms) if terms is not None else None,
        consumes=encoding.dumps(list(consumes)),
    )


def revise_draft(tx, invoice: dict) -> int:
    """A draft's lines as they stand when it is finalized: its usage priced again from the terms it
    was held with (late usage counts), and the account's invoice items added meanwhile. Its total."""
    lines = [_line(row) for row in tx.all(Q["draft_lines"], invoice_id=invoice["id"])]
    terms = invoice["usage_terms"]
    if terms:
        from_at, to_at = (datetime.fromisoformat(terms[k]) for k in ("from", "to"))
        window = (str(invoice["account_id"]), from_at, to_at, terms["prices"])
        totals = usage_totals(tx, [window])[str(invoice["account_id"])]
        usage = usage_charges.lines(terms["prices"], totals, from_at, to_at)
        lines = [line for line in lines if line.kind != "usage"] + usage
    lines += _pending_items(tx, [str(invoice["account_id"])]).get(str(invoice["account_id"]), (None, []))[1]
    terms = invoice["adjustments"]  # what it was held with (None: a draft from before migration 0020)
    plan = terms or {}
    done = adjustments.apply(
        lines, terms, invoice["currency"], plan_id=plan.get("plan_id"), plan_code=plan.get("plan_code")
    )
    total = total_of(done.lines)
    tx.run(Q["clear_lines"], invoice_id=invoice["id"])
    _write_lines(tx, [(invoice["id"], invoice["currency"], done.lines, invoice["period_start"], invoice["period_end"])])
    _set_amounts(tx, str(invoice["id"]), done.lines, terms, done.consumed)
    return total


def _line(row: dict) -> Line:
    names = ("kind", "description", "quantity", "unit_amount", "amount", "metric", "period_start", "period_end")
    item = row["invoice_item_id"]
    return Line(**{name: row[name] for name in names}, invoice_item_id=str(item) if item else None)


def _state_row(bill: Bill) -> dict:
    """The subscription as its bill leaves it (``Bill.then``) and when its account is next billed, or its end."""
    if bill.ends:
        sub = bill.subscription
        ended_at = _stamp(bill.boundary)
        return {"account_id": sub.account_id, "subscription_id": sub.id, "ends": True, "ended_at": ended_at}
    sub = bill.then
    return {
        "account_id": sub.account_id,
        "subscription_id": sub.id,
        "ends": False,
        "plan_id": sub.plan_id,
        "quantity": sub.quantity,
        "status": sub.status,
        "billing_anchor": _stamp(sub.billing_anchor),
        "period_start": _stamp(sub.current_period_start),
        "period_end": _stamp(sub.current_period_end),
        "paused_s": sub.current_period_paused_s,
        "paid": sub.current_period_paid,
        "trial_end": _stamp(sub.trial_end),
        "cancel_at_period_end": sub.cancel_at_period_end,
        "paused_at": _stamp(sub.paused_at),
        "pause_behavior": sub.pause_behavior,
        "resumes_at": _stamp(sub.resumes_at),
        "pending_change": sub.pending_change,
        "pending_prorations": [periods.line_json(line) for line in sub.pending_prorations],
        "next_billing_at": _stamp(sub.next_billing_at),
    }


def _end(tx, ending: list[Bill]) -> None:
    """The events of the subscriptions whose last bill this was (ended by the writer's statement)."""
    objects = subscription_views.get_many(tx, [bill.subscription.id for bill in ending])
    for bill in ending:
        fields = {"subscriptionId": bill.subscription.id, "accountId": bill.account_id, "endedAt": bill.boundary}
        outbox.add(tx, "subscription.canceled", fields, objects[bill.subscription.id])
