"""Property: whatever a tenant does to its invoices (one-off items, one-off invoices paid, declined or
left waiting on a lost gateway answer, drafts finalized later, credit notes partial or full, by amount
or by line, on open, paid or uncollectible invoices, refunded, credited or both, voids, invoices
marked uncollectible, dunning retries, the scheduled settlers), on three accounts of a fresh tenant
(the third subscribed to a 49.00 monthly plan since 40 days ago: its renewal is due, and takes the
items added meanwhile), after every step:

(a) every invoice but a void one adds up: total - credit_applied - amount_paid - pre-payment credit
    notes = amount_due >= 0, and its credit notes (pre + post payment) stay within max(total, 0);
(b) the books balance: balance = sum(ledger) = what open and uncollectible invoices ask for less the
    credit balance, and the credit balance is what credit notes and failed refunds gave the
    customer less what invoices used of it;
(c) invoice numbers are {prefix}-000001..N and credit note numbers {prefix}-CN-000001..M, in the
    order of finalization, with no gap and no repeat, N being the invoices ever finalized;
(d) no invoice was credited beyond what was creditable, line by line or in all;
(e) running the settlers again (refunds, payments) and finalizing a finalized invoice again change
    nothing, and the gateway charged what the ledger says was paid and refunded each refund once.

A step the state does not allow is refused with the 422 (or 409) code predicted here, and changes
nothing at all. The predictions (what is pending, what is left creditable, what was collected and
refunded) come from a model of the steps and from the gateway's own records, not from the code under test.
"""

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from chalicelib import errors
from chalicelib.billing import (
    accounts,
    calendar,
    collection,
    credit_notes,
    invoice_items,
    invoices,
    payments,
    rebill,
    refunds,
)
from chalicelib.db import transaction
from chalicelib.db.scope import tenant_transaction
from tests import billing

U, CONFLICT = errors.UnprocessableState, errors.Conflict
PLAN_AMOUNT = 4900  # the subscribed account's monthly price
OUTCOME = st.sampled_from(["succeed", "decline", "timeout"])
WHO = st.integers(0, 2)  # which of the three accounts (the third is subscribed)
PICK = st.integers(0, 63)  # an invoice of the tenant, by position (modulo how many there are)


@dataclass(frozen=True)
class Credit:
    pick: int
    by: str  # "amount", "lines" or "rest" (everything still creditable)
    share: int  # percent of what is creditable (of each line, by lines): over 100 asks too much
    first_line: int  # by lines: the (at most two) lines from this one on
    back: str  # how the part already paid goes back (BACK)
    refund_outcome: str
    currency: str | None


# (refund_amount, credit_amount) for what a credit note gives back of what was paid (``post``).
BACK = {
    "credit": lambda post: (None, None),
    "refund": lambda post: (post, None),
    "both": lambda post: (post // 2, post - post // 2),
    "unbalanced": lambda post: (None, post + 1),
    "over_refund": lambda post: (post + 1, None),  # the credit left would be negative
}

CREDITS = st.builds(
    Credit,
    pick=PICK,
    by=st.sampled_from(["amount", "lines", "rest"]),
    share=st.one_of(st.integers(1, 100), st.integers(1, 100), st.integers(101, 130)),
    first_line=st.integers(0, 3),
    back=st.sampled_from(["credit", "refund", "both"] * 3 + ["unbalanced", "over_refund"]),
    refund_outcome=st.sampled_from(["succeed"] * 4 + ["decline", "timeout"]),
    currency=st.sampled_from([None] * 6 + ["USD", "EUR"]),
)
ITEM_AMOUNTS = st.lists(st.integers(0, 5_000), max_size=2)

# A one-off invoice of some new items, finalized (and collected) at once.
OPENING = st.tuples(st.just("invoice"), WHO, st.lists(st.integers(1, 5_000), min_size=1, max_size=2), OUTCOME)
OPENING = OPENING.map(lambda opening: (*opening, True))
ACTIONS = st.one_of(
    st.tuples(st.just("item"), WHO, st.integers(0, 5_000), st.sampled_from(["USD"] * 3 + ["EUR"])),
    st.tuples(st.just("invoice"), WHO, ITEM_AMOUNTS, OUTCOME, st.booleans()),  # finalized at once, or a draft
    OPENING,
    st.tuples(st.just("finalize"), PICK, OUTCOME),
    st.tuples(st.just("credit"), CREDITS),
    st.tuples(st.just("credit"), CREDITS),
    st.tuples(st.just("credit"), CREDITS),
    st.tuples(st.just("void"), PICK),
    st.tuples(st.just("uncollectible"), PICK),
    st.tuples(st.just("retry"), WHO, OUTCOME),
    st.tuples(st.just("renew"), OUTCOME),
    st.tuples(st.just("settle")),
)

# Everything a step could change, for "a refusal changes nothing" and "a replay changes nothing".
SNAPSHOT = {
    "invoices": "SELECT id, status, number, total, credit_applied, amount_due, amount_paid,"
    " pre_payment_credit_notes_amount, post_payment_credit_notes_amount FROM invoices ORDER BY id",
    "lines": "SELECT id, invoice_id, amount FROM invoice_lines ORDER BY id",
    "items": "SELECT id, invoice_id, amount FROM invoice_items ORDER BY id",
    "ledger": "SELECT seq, account_id, entry_type, amount FROM ledger_entries ORDER BY seq",
    "attempts": "SELECT id, outcome, amount FROM payment_attempts ORDER BY id",
    "notes": "SELECT id, number, amount FROM credit_notes ORDER BY id",
    "refunds": "SELECT id, status FROM refunds ORDER BY id",
    "sequences": "SELECT series, last_value FROM number_sequences ORDER BY series",
    "accounts": "SELECT id, status, failure_count, payment_retry_at FROM accounts ORDER BY id",
    "events": "SELECT (SELECT count(*) FROM outbox) AS outbox, (SELECT count(*) FROM audit_logs) AS audit",
}


class Books:
    """A fresh tenant's three accounts, the steps done to them, and the model the predictions come from."""

    def __init__(self, tenant_id: str, gateway: payments.MockGateway):
        self.tenant, self.actor, self.gateway = tenant_id, billing.actor(tenant_id), gateway
        self.totals: dict[str, int] = {}  # invoice id -> what it bills: its plan's price, the items it took
        self.items_of: dict[str, list[int]] = {}  # invoice id -> item amounts it took
        self.accounts = [self._account(name) for name in ("Ada", "Grace")] + [self._subscribed()]
        self.pending = {account: [] for account in self.accounts}  # item amounts no invoice took yet
        self.refunded: Counter = Counter()  # invoice id -> refunds sent and not failed
        self.line_credited: Counter = Counter()  # invoice line id -> credited on it by line

    def _subscribed(self) -> str:
        """An account subscribed 40 days ago: its first invoice paid, its first renewal due."""
        billing.priced_plan(self.tenant, "pro", PLAN_AMOUNT)
        account, _subscription = billing.subscribe(self.tenant, "pro", calendar.utcnow() - timedelta(days=40))
        (first,) = self.read("SELECT id FROM invoices WHERE account_id = :a", a=account)
        self.totals[str(first["id"])] = PLAN_AMOUNT
        return account

    def _account(self, name: str) -> str:
        with tenant_transaction(self.tenant) as tx:
            command = accounts.NewAccount(email=f"{name.lower()}@x.test", name=name, currency="USD")
            return str(accounts.create(tx, self.actor, command)["id"])

    # --- reading -------------------------------------------------------------------------------

    def read(self, sql: str, **params) -> list[dict]:
        with transaction(tenant_id=self.tenant) as tx:
            return tx.all(sql, **params)

    def snapshot(self) -> dict:
        return {name: self.read(sql) for name, sql in SNAPSHOT.items()} | {
            "gateway": (list(self.gateway.charges), list(self.gateway.refunds))
        }

    def invoices(self) -> list[dict]:
        return self.read(
            "SELECT id, account_id, status, number, total, credit_applied, amount_due, amount_paid, finalized_at,"
            " pre_payment_credit_notes_amount AS pre, post_payment_credit_notes_amount AS post"
            " FROM invoices ORDER BY created_at, id"
        )

    def pick(self, position: int) -> dict | None:
        found = self.invoices()
        return found[position % len(found)] if found else None

    def account(self, account_id: str) -> dict:
        with tenant_transaction(self.tenant) as tx:
            return accounts.get(tx, account_id)

    def payment_pending(self, invoice: dict) -> bool:
        return bool(
            self.read("SELECT 1 FROM payment_attempts WHERE invoice_id = :i AND outcome = 'pending'", i=invoice["id"])
        )

    def collected(self, invoice_id) -> int:
        """What the gateway charged for the invoice (its payments the ledger recorded)."""
        keys = {
            row["idempotency_key"]
            for row in self.read(
                "SELECT idempotency_key FROM payment_attempts WHERE invoice_id = :i AND outcome = 'succeeded'",
                i=invoice_id,
            )
        }
        return sum(amount for key, _account, amount, _currency in self.gateway.charges if key in keys)

    # --- doing ---------------------------------------------------------------------------------

    def act(self, action: tuple) -> None:
        event(f"step: {action[0]}")
        getattr(self, action[0])(*action[1:])
        for account in self.accounts:
            self.gateway.script(account, [])  # an outcome a step did not use is not left for the next

    def attempt(self, refusal: tuple[type, str] | None, work):
        """Do ``work``; when a refusal is predicted, it is raised with its code and nothing changed."""
        event(f"refused: {refusal[1]}" if refusal else "done")
        if refusal is None:
            return work()
        before = self.snapshot()
        with pytest.raises(errors.BillingError) as raised:
            work()
        assert (type(raised.value), raised.value.code) == refusal, raised.value.message
        assert self.snapshot() == before
        return None

    def item(self, who: int, amount: int, currency: str) -> None:
        account = self.accounts[who]
        body = {"account_id": account, "currency": currency, "description": "Workshop", "amount": amount}

        def work():
            with tenant_transaction(self.tenant) as tx:
                return invoice_items.create(tx, self.actor, invoice_items.NewInvoiceItem.of(body))

        if self.attempt(None if currency == "USD" else (U, "currency_mismatch"), work):
            self.pending[account].append(amount)

    def invoice(self, who: int, amounts: list[int], outcome: str, finalize: bool) -> None:
        account = self.accounts[who]
        items = tuple(
            invoice_items.NewInvoiceItem.of(
                {"account_id": account, "currency": "USD", "description": "Seat", "amount": a}
            )
            for a in amounts
        )
        taken = self.pending[account] + amounts
        expected = self.collection_of(account, sum(taken), outcome) if finalize else ("draft", sum(taken), 0, 0)
        self.gateway.script(account, [outcome])
        command = invoices.NewInvoice(account, items=items, finalize=finalize)
        refusal = None if taken else (U, "nothing_to_invoice")
        created = self.attempt(refusal, lambda: invoices.create(self.tenant, self.actor, command))
        if created:
            self.pending[account], self.totals[str(created["id"])] = [], sum(taken)
            self.items_of[str(created["id"])] = taken
            event(f"invoiced: {created['status']}")
            assert _collection(created) == expected

    def finalize(self, position: int, outcome: str) -> None:
        invoice = self.pick(position)
        if invoice is None:
            return
        account = str(invoice["account_id"])
        total = self.totals[str(invoice["id"])] + sum(self.pending[account])  # items added meanwhile join it
        expected = self.collection_of(account, total, outcome)
        self.gateway.script(account, [outcome])
        refusal = None if invoice["status"] == "draft" else (U, "invoice_not_draft")
        finalized = self.attempt(refusal, lambda: invoices.finalize(self.tenant, self.actor, str(invoice["id"])))
        if finalized:
            self.items_of[str(invoice["id"])] = self.items_of.get(str(invoice["id"]), []) + self.pending[account]
            self.pending[account], self.totals[str(invoice["id"])] = [], total
            assert _collection(finalized) == expected

    def collection_of(self, account_id: str, total: int, outcome: str) -> tuple:
        """(status, total, credit_applied, amount_paid) of an invoice of ``total`` finalized now: an ACTIVE
        account's credit balance first, then the gateway; an account in dunning is collected by its retry."""
        account = self.account(account_id)
        if total <= 0:
            return "paid", total, 0, 0
        if account["status"] != "ACTIVE":
            return "open", total, 0, 0
        applied = min(total, account["credit_balance"])
        if applied == total or outcome == "succeed":
            return "paid", total, applied, total - applied
        return "open", total, applied, 0

    def credit(self, c: Credit) -> None:
        invoice = self.pick(c.pick)
        if invoice is None:
            return
        lines = self.read(
            "SELECT id, amount FROM invoice_lines WHERE invoice_id = :i ORDER BY position", i=invoice["id"]
        )
        command, amount, split = _credit_note(invoice, lines, c)
        refusal = self.credit_refusal(invoice, command, amount, split)
        self.gateway.script(invoice["account_id"], [c.refund_outcome])
        refunds_before = len(self.gateway.refunds)
        note = self.attempt(refusal, lambda: credit_notes.create(self.tenant, self.actor, command))
        if note:
            self.credited(invoice, note, command, split, c.refund_outcome, refunds_before)

    def credit_refusal(self, invoice: dict, command, amount: int, split: tuple):
        pre, credit, refund = split
        creditable = max(invoice["total"], 0) - invoice["pre"] - invoice["post"]
        if invoice["status"] not in ("open", "paid", "uncollectible"):
            return U, "invoice_not_finalized"
        if command.currency not in (None, "USD"):
            return U, "currency_mismatch"
        if self.payment_pending(invoice):
            return CONFLICT, "payment_in_progress"
        if not self.lines_creditable(invoice, command.lines) or not 0 < amount <= creditable:
            return U, "amount_exceeds_creditable"
        if credit < 0 or pre + credit + refund != amount:
            return U, "amounts_do_not_add_up"
        if refund > self.collected(invoice["id"]) - self.refunded[str(invoice["id"])]:
            return U, "refund_exceeds_paid"
        return None

    def lines_creditable(self, invoice: dict, wanted: tuple) -> bool:
        lines = self.read("SELECT id, amount FROM invoice_lines WHERE invoice_id = :i AND amount > 0", i=invoice["id"])
        left = {str(line["id"]): line["amount"] - self.line_credited[str(line["id"])] for line in lines}
        return all(line_id in left and amount <= left[line_id] for line_id, amount in wanted)

    def credited(self, invoice: dict, note: dict, command, split: tuple, outcome: str, refunds_before: int) -> None:
        """The note is split as predicted, and its refund (if any) went to the gateway once, against the
        invoice's charge: succeeded, failed (back to the balance) or pending (the answer was lost)."""
        pre, credit, refund = split
        event(f"credited: {invoice['status']} invoice, refund {outcome if refund else 'none'}, credit {bool(credit)}")
        assert (note["pre_payment_amount"], note["credit_amount"], note["refund_amount"]) == split
        assert note["amount"] == pre + credit + refund and note["currency"] == "USD"
        for line_id, amount in command.lines:
            self.line_credited[line_id] += amount
        if not refund:
            assert note["refund_id"] is None and len(self.gateway.refunds) == refunds_before
            return
        status = {"succeed": "succeeded", "decline": "failed", "timeout": "pending"}[outcome]
        assert note["refund_status"] == status
        sent = self.gateway.refunds[refunds_before:]
        if status == "failed":
            assert sent == []
            return
        self.refunded[str(invoice["id"])] += refund
        assert [(key, account, amount) for key, account, amount, _c, _ref in sent] == [
            (f"refund:{note['id']}", str(invoice["account_id"]), refund)
        ]
        assert sent[0][4] in {f"mock_{key}" for key, *_rest in self.gateway.charges}

    def void(self, position: int) -> None:
        invoice = self.pick(position)
        if invoice is None:
            return
        refusal = self.void_refusal(invoice, ("draft", "open", "uncollectible"), "invoice_not_voidable")
        balance = self.account(invoice["account_id"])["balance"]

        def work():
            with tenant_transaction(self.tenant) as tx:
                return invoices.void(tx, self.actor, str(invoice["id"]))

        if voided := self.attempt(refusal, work):
            charged = 0 if invoice["status"] == "draft" else max(invoice["total"], 0) - invoice["pre"] - invoice["post"]
            event(f"voided: {invoice['status']}")
            assert (voided["status"], voided["amount_due"]) == ("void", 0)
            if invoice["status"] == "draft":  # its items wait for the account's next invoice again
                self.pending[str(invoice["account_id"])] += self.items_of.get(str(invoice["id"]), [])
            assert self.account(invoice["account_id"])["balance"] == balance - charged

    def uncollectible(self, position: int) -> None:
        invoice = self.pick(position)
        if invoice is None:
            return
        refusal = self.void_refusal(invoice, ("open",), "invoice_not_open")

        def work():
            with tenant_transaction(self.tenant) as tx:
                return invoices.mark_uncollectible(tx, self.actor, str(invoice["id"]))

        if marked := self.attempt(refusal, work):
            assert (marked["status"], marked["amount_due"]) == ("uncollectible", invoice["amount_due"])

    def void_refusal(self, invoice: dict, statuses: tuple, code: str):
        if invoice["status"] not in statuses:
            return U, code
        if invoice["status"] != "draft" and self.payment_pending(invoice):
            return CONFLICT, "payment_in_progress"
        return None

    def retry(self, who: int, outcome: str) -> None:
        """A dunning retry: the account's open invoices charged oldest first (its credit balance first)."""
        self.gateway.script(self.accounts[who], [outcome])
        result = collection.collect_open(self.tenant, self.accounts[who], calendar.utcnow())
        assert result in ("succeeded", "declined", "inactive", "timeout")

    def renew(self, outcome: str) -> None:
        """The subscribed account's renewal at its boundary (once: the next one is in the future)."""
        account = self.accounts[2]
        due = self.account(account)["next_billing_at"]
        if due is None or due > calendar.utcnow():
            return
        known = set(self.totals)
        self.gateway.script(account, [outcome])
        try:
            rebill.renew(self.tenant, account, due, due)
        except (payments.RetryableGatewayError, collection.PaymentUnresolved):
            pass  # a lost answer, or an earlier payment still pending: the settlers' to resolve
        new = [invoice for invoice in self.invoices() if str(invoice["id"]) not in known]
        if new:
            event(f"renewed: {new[0]['status']}")
            total = PLAN_AMOUNT + sum(self.pending[account])  # the items added meanwhile land on it
            assert [(str(invoice["account_id"]), invoice["total"]) for invoice in new] == [(account, total)]
            self.pending[account], self.totals[str(new[0]["id"])] = [], total

    def settle(self) -> None:
        """The scheduled settlers, later: refunds and payments a lost answer left pending are resolved."""
        with transaction(tenant_id=self.tenant) as tx:  # five minutes on, as the finalizer finds them
            tx.run("UPDATE refunds SET created_at = created_at - interval '10 minutes' WHERE status = 'pending'")
        refunds.settle_stale(calendar.utcnow())
        for account in self.accounts:
            collection.settle_pending(self.tenant, account, calendar.utcnow())
        assert not self.anything_pending()

    def anything_pending(self) -> bool:
        return bool(
            self.read(
                "SELECT 1 FROM payment_attempts WHERE outcome = 'pending'"
                " UNION ALL SELECT 1 FROM refunds WHERE status = 'pending'"
            )
        )

    # --- checking ------------------------------------------------------------------------------

    def check(self) -> None:
        found = self.invoices()
        notes = self.read("SELECT * FROM credit_notes ORDER BY created_at, number")
        for invoice in found:
            _check_invoice(invoice, [note for note in notes if note["invoice_id"] == invoice["id"]])  # (a), (d)
            assert invoice["total"] == self.totals[str(invoice["id"])]
            assert invoice["amount_paid"] == self.collected(invoice["id"])
        self.check_items()
        for account in self.accounts:
            self.check_account(account, found, notes)  # (b)
        self.check_numbers(found, notes)  # (c)

    def check_items(self) -> None:
        """Every item is pending or on exactly one invoice, as its one line; an invoice's lines are its total."""
        rows = self.read(
            "SELECT i.id, i.total, (SELECT CAST(coalesce(sum(l.amount), 0) AS bigint) FROM invoice_lines l"
            " WHERE l.invoice_id = i.id) AS lines FROM invoices i"
        )
        assert all(row["total"] == row["lines"] for row in rows)
        items = self.read(
            "SELECT it.account_id, it.amount, it.invoice_id, (SELECT count(*) FROM invoice_lines l"
            " WHERE l.invoice_item_id = it.id AND l.invoice_id = it.invoice_id) AS lines FROM invoice_items it"
        )
        assert all(item["lines"] == (0 if item["invoice_id"] is None else 1) for item in items)
        for account in self.accounts:
            pending = [
                item["amount"] for item in items if str(item["account_id"]) == account and not item["invoice_id"]
            ]
            assert sorted(pending) == sorted(self.pending[account])

    def check_account(self, account_id: str, found: list[dict], notes: list[dict]) -> None:
        account = self.account(account_id)
        mine = [invoice for invoice in found if str(invoice["account_id"]) == account_id]
        ledger = self.read("SELECT entry_type, amount FROM ledger_entries WHERE account_id = :a", a=account_id)
        due = sum(invoice["amount_due"] for invoice in mine if invoice["status"] in ("open", "uncollectible"))
        assert account["balance"] == sum(entry["amount"] for entry in ledger) == due - account["credit_balance"]
        failed = self.read(
            "SELECT CAST(coalesce(sum(amount), 0) AS bigint) AS s FROM refunds"
            " WHERE account_id = :a AND status = 'failed'",
            a=account_id,
        )[0]["s"]
        given_back = sum(note["credit_amount"] for note in notes if str(note["account_id"]) == account_id) + failed
        used = sum(invoice["credit_applied"] for invoice in mine if invoice["status"] != "void")
        assert account["credit_balance"] == given_back - used >= 0
        paid = -sum(entry["amount"] for entry in ledger if entry["entry_type"] == "payment")
        assert paid == sum(invoice["amount_paid"] for invoice in mine)
        assert paid <= sum(amount for _k, account, amount, _c in self.gateway.charges if account == account_id)

    def check_numbers(self, found: list[dict], notes: list[dict]) -> None:
        prefix = self.read("SELECT invoice_prefix FROM tenants")[0]["invoice_prefix"]
        numbered = sorted((i for i in found if i["number"]), key=lambda invoice: invoice["number"])
        assert [i["number"] for i in numbered] == [f"{prefix}-{n:06d}" for n in range(1, len(numbered) + 1)]
        assert len(numbered) == sum(1 for invoice in found if invoice["finalized_at"] is not None)
        assert [i["finalized_at"] for i in numbered] == sorted(i["finalized_at"] for i in numbered)
        assert [note["number"] for note in notes] == [f"{prefix}-CN-{n:06d}" for n in range(1, len(notes) + 1)]

    def check_replays_change_nothing(self) -> None:
        """(e) The settlers run again, and a finalized invoice finalized again: nothing moves."""
        if self.anything_pending():
            return  # a lost answer is the settlers' to resolve: a change, on purpose
        before = self.snapshot()
        refunds.settle_stale(calendar.utcnow())
        for account in self.accounts:
            assert collection.settle_pending(self.tenant, account, calendar.utcnow()) is None
        finalized = [invoice for invoice in self.invoices() if invoice["status"] != "draft"]
        if finalized:
            with pytest.raises(U) as again:
                invoices.finalize(self.tenant, self.actor, str(finalized[-1]["id"]))
            assert again.value.code in ("invoice_not_draft",)
        assert self.snapshot() == before

    def check_gateway(self) -> None:
        """Once everything is settled: each refund that succeeded was sent once, for its amount, against
        a charge of its invoice and within it; no failed one was; every charge is a recorded payment."""
        sent = Counter((key, amount) for key, _a, amount, _c, _r in self.gateway.refunds)
        succeeded = self.read("SELECT idempotency_key AS key, amount FROM refunds WHERE status = 'succeeded'")
        assert sent == Counter((row["key"], row["amount"]) for row in succeeded)
        per_charge = defaultdict(int)
        for _key, _account, amount, _currency, reference in self.gateway.refunds:
            per_charge[reference] += amount
        charged = {f"mock_{key}": amount for key, _account, amount, _currency in self.gateway.charges}
        assert all(total <= charged[reference] for reference, total in per_charge.items())
        payments_recorded = self.read(
            "SELECT CAST(coalesce(-sum(amount), 0) AS bigint) AS s FROM ledger_entries WHERE entry_type = 'payment'"
        )[0]["s"]
        assert payments_recorded == sum(charged.values())


def _credit_note(invoice: dict, lines: list[dict], c: Credit) -> tuple:
    """The credit note ``c`` asks for on the invoice as it stands: (command, amount, the split it should
    have: (pre-payment, credit, refund)). What was not paid yet is lowered first; the rest goes back."""
    wanted = tuple(
        (str(line["id"]), max(1, line["amount"] * c.share // 100)) for line in lines[c.first_line % len(lines) :][:2]
    )
    creditable = max(invoice["total"], 0) - invoice["pre"] - invoice["post"]
    by = {"amount": max(1, creditable * c.share // 100), "rest": creditable, "lines": sum(a for _i, a in wanted)}
    amount = by[c.by]
    pre = min(amount, invoice["amount_due"]) if invoice["status"] in ("open", "uncollectible") else 0
    refund, credit = BACK[c.back](amount - pre)
    command = credit_notes.NewCreditNote(
        str(invoice["id"]),
        "order_change",
        amount=amount if c.by == "amount" else None,
        lines=wanted if c.by == "lines" else (),
        refund_amount=refund,
        credit_amount=credit,
        currency=c.currency,
    )
    return command, amount, (pre, amount - pre - (refund or 0) if credit is None else credit, refund or 0)


def _collection(invoice: dict) -> tuple:
    return invoice["status"], invoice["total"], invoice["credit_applied"], invoice["amount_paid"]


def _check_invoice(invoice: dict, notes: list[dict]) -> None:
    """(a) and (d) for one invoice: it adds up, and its credit notes stay within what was creditable."""
    assert sum(note["amount"] for note in notes) <= max(invoice["total"], 0)
    assert invoice["pre"] == sum(note["pre_payment_amount"] for note in notes)
    assert invoice["post"] == sum(note["credit_amount"] + note["refund_amount"] for note in notes)
    assert invoice["pre"] + invoice["post"] <= max(invoice["total"], 0)
    if invoice["status"] == "void":
        assert invoice["amount_due"] == 0
        return
    owed = max(invoice["total"], 0) - invoice["credit_applied"] - invoice["amount_paid"] - invoice["pre"]
    assert owed == invoice["amount_due"] >= 0
    if invoice["status"] == "paid":
        assert invoice["amount_due"] == 0
    elif invoice["status"] in ("open", "uncollectible"):
        assert invoice["amount_due"] > 0


def _credit(pick=0, by="rest", share=100, back="credit", refund_outcome="succeed", first_line=0):
    return ("credit", Credit(pick, by, share, first_line, back, refund_outcome, None))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(opening=st.lists(OPENING, min_size=2, max_size=3), actions=st.lists(ACTIONS, min_size=4, max_size=16))
# Invoice 0 is the subscribed account's first (4900, paid); the examples' invoices are 1, 2, ...
@example(  # paid, refunded in part and credited the rest; declined and credited before payment; a void
    opening=[("invoice", 0, [4000], "succeed", True)],
    actions=[
        _credit(1, "amount", 50, "both"),  # 2000: 1000 refunded, 1000 to the balance
        _credit(1, "rest", back="over_refund"),
        ("invoice", 1, [1500, 500], "decline", True),
        _credit(2, "lines", 100, "credit"),  # all of it, before payment: paid
        ("invoice", 1, [700], "timeout", True),
        ("void", 3),  # its payment waits for an answer
        ("settle",),
        ("void", 3),  # paid
        ("invoice", 0, [2500], "succeed", True),  # 1000 of the balance, 1500 collected
        ("invoice", 1, [800], "decline", True),
        _credit(5, "amount", 25),  # 200 before payment
        ("void", 5),  # reverses the 600 it still charged
    ],
)
@example(  # a credit balance pays part of an invoice, so only what the gateway collected can be refunded;
    # a declined invoice paid in part by the balance is credited; an uncollectible one credited to paid
    opening=[("invoice", 0, [4000], "succeed", True)],
    actions=[
        _credit(1, "rest", back="credit"),
        ("invoice", 0, [5000], "succeed", True),  # 4000 of the balance, 1000 collected
        _credit(2, "rest", back="refund"),
        _credit(2, "amount", 10, "refund", refund_outcome="decline"),  # 500: back to the balance
        _credit(2, "amount", 10, "refund", refund_outcome="timeout"),  # 450, sent
        _credit(2, "amount", 10, "refund"),  # 405: 145 of the 1000 collected left to refund
        _credit(2, "amount", 10, "refund"),  # 364 is more than that
        _credit(2, "rest", back="credit"),
        ("invoice", 0, [9000], "decline", True),  # the balance first: 4145, 4855 declined
        _credit(3, "amount", 80, "credit"),  # 7200: 4855 before payment, 2345 back to the balance
        ("invoice", 1, [100], "decline", True),
        ("uncollectible", 4),
        ("retry", 1, "succeed"),
        _credit(4, "lines", 100),
        ("item", 1, 0, "USD"),
        ("invoice", 1, [], "succeed", True),
        ("finalize", 5, "succeed"),
        ("renew", "decline"),
        _credit(6, "rest"),  # the renewal, declined: credited before payment
    ],
)
@example(  # credited by line: never more than what is left on a line, even with more left on the invoice
    opening=[("item", 1, 1000, "USD"), ("invoice", 1, [1000, 1000], "succeed", True)],
    actions=[_credit(1, "lines", 60, "refund"), _credit(1, "lines", 60, "refund"), _credit(1, "lines", 40, "both")],
)
def test_any_sequence_of_invoices_credit_notes_voids_and_refunds_keeps_the_books_balanced_and_numbers_gapless(
    make_tenant, gateway, opening, actions
):
    fresh = payments.MockGateway()
    payments.set_gateway(fresh)  # the fixture's teardown uninstalls it
    books = Books(make_tenant(), fresh)
    for action in opening + actions:
        books.act(action)
        books.check()
        books.check_replays_change_nothing()
    books.settle()
    books.check()
    books.check_replays_change_nothing()
    books.check_gateway()
