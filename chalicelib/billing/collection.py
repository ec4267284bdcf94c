"""Collecting invoices through the gateway, and the dunning state machine after a decline.

Three steps, so money never moves without a record that says so:
1. In the billing transaction: a ``pending`` payment attempt with its gateway key
   (``periods.payment_key``) and the amount, committed together with the invoice and
   its ledger charge (an invoice's first attempt is opened by the writer's one statement,
   ``invoicing``; a later one by ``open_for_invoice``).
2. ``settle_many``: each attempt is *claimed* (``claimed_until``, a lease on the
   database's clock) in a short transaction of its own, so exactly one settler calls
   the gateway for an attempt at a time; an attempt someone else holds answers
   ``in_progress``. The gateway is called with exactly that key and amount outside
   any transaction, up to ``PAYMENT_CONCURRENCY`` attempts at a time (``_charge_all``:
   each carries its own key, so their order changes nothing). A timeout, or the
   gateway's own "a request with this key is in flight", leaves the attempt pending
   and releases the claim (``timeout``); a crashed settler's claim lapses after
   ``PAYMENT_CLAIM_LEASE_S``.
3. In a new transaction the outcome is written onto the attempt (once: one that is
   no longer pending was resolved by someone else) with its ledger entry and the
   dunning transition. Successes are recorded set-based, in one statement (``pay``).
``settle_pending`` resolves attempts a crash or a timeout left behind; the same key
makes the gateway answer with what really happened, never charge again.

A charge the customer must authenticate (``requires_action``) is recorded like a decline
(dunning, and an ``invoice.payment_action_required`` event whose email links the hosted
invoice), but its attempt waits: the customer may still complete it (``record_answer``
from the gateway's webhook), and before the next attempt at that invoice the waiting one
is withdrawn at the gateway (``_withdraw_waiting``), so an invoice never has two live
charges.

Dunning: a decline makes the account PENDING and schedules a retry at the start of
the day DUNNING_RETRY_DAYS[n] days later (1, 3, 7), so the daily run finds it that
day; a decline after the last retry makes it INACTIVE, stops billing and marks its
open invoices uncollectible. The account returns to ACTIVE only when no open
invoice remains. Every transition is an audit row; every outcome a ledger entry (a
payment negative, a failure recorded at zero).
"""

import contextvars
import logging
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta

from chalicelib import audit, encoding, outbox, tracing
from chalicelib.billing import accounts, gateways, ledger, payments, periods
from chalicelib.config import get_settings
from chalicelib.db import transaction
from chalicelib.db.queries import load
from chalicelib.observability import emit_metric

Q = load("collection")
log = logging.getLogger("billing.collection")


class PaymentUnresolved(Exception):
    """Another settler holds the account's payment: try again once it is done (or its claim lapsed)."""


# Outcomes that leave a payment pending: the message (or request) must come back for it.
# ``unsettled`` is the engine's: an earlier payment of the account is still pending.
UNRESOLVED = ("timeout", "in_progress", "unsettled")


def resolved(outcome: str | None) -> str | None:
    """A settling outcome, or the exception that sends the message (or the request) back for later."""
    if outcome == "timeout":
        raise payments.GatewayTimeout("the gateway gave no final answer; the payment stays pending")
    if outcome in UNRESOLVED:
        raise PaymentUnresolved("another settler holds this payment")
    return outcome


@dataclass(frozen=True)
class Intent:
    attempt_id: str
    account_id: str
    invoice_id: str
    key: str
    amount: int
    currency: str
    reference: str | None = None  # the gateway's id of an attempt that waits for the customer


# --- opening attempts (in the billing transaction) ----------------------------------------


def pending_for_invoice(tx, invoice_id: str) -> Intent | None:
    """The attempt at an invoice still waiting for the gateway's answer, if any."""
    row = tx.one(Q["pending_for_invoice"], invoice_id=invoice_id)
    return _intent(row) if row else None


def waiting_for(tx, invoice_id: str) -> Intent | None:
    """The attempt at an invoice that waits for the customer to authenticate, if any."""
    row = tx.one(Q["waiting_for_invoice"], invoice_id=invoice_id)
    return _intent(row) if row else None


def open_for_invoice(tx, account_id: str, invoice: dict) -> Intent | None:
    """The pending attempt at an open invoice, opening the next one if there is none (for what the
    account's credit balance leaves of it)."""
    pending = pending_for_invoice(tx, invoice["id"])
    if pending is not None:
        return pending
    invoice = {**invoice, "amount_due": tx.scalar(Q["use_credit"], id=invoice["id"])}
    if invoice["amount_due"] == 0:
        tx.run(Q["mark_paid"], id=invoice["id"])
        return None
    attempt = tx.scalar(Q["attempts_for_invoice"], invoice_id=invoice["id"])
    key = periods.payment_key(
        invoice["id"], invoice["subscription_id"], invoice["billing_reason"], invoice["period_start"], attempt
    )
    row = {
        "account_id": account_id,
        "invoice_id": invoice["id"],
        "attempt": attempt,
        "idempotency_key": key,
        "amount": invoice["amount_due"],
        "currency": invoice["currency"],
    }
    # Unclaimed: ``settle`` claims it like any pending attempt it finds.
    return _intent(tx.one(Q["open_intents"], rows=encoding.dumps([row]), lease_s=0, claim=False))


# --- settling: one settler per attempt --------------------------------------------------------


def settle_many(tenant_id: str, intents: list[Intent], now: datetime, *, claimed: bool = False) -> dict[str, str]:
    """Charge each intent once and record it; outcome by attempt id.

    ``succeeded``, ``declined`` or ``inactive`` (recorded), ``timeout`` (no answer
    or the gateway was busy with this key: still pending, retry later) or
    ``in_progress`` (another settler holds it, or resolved it meanwhile). With
    ``claimed`` the caller already holds every intent's claim (it opened them).
    """
    if not intents:
        return {}
    claimed = {i.attempt_id for i in intents} if claimed else _claim(tenant_id, intents)
    outcomes = {i.attempt_id: "in_progress" for i in intents if i.attempt_id not in claimed}
    answers = {}
    charging = [i for i in intents if i.attempt_id in claimed]
    try:
        gateway = gateways.of(tenant_id)  # once: the same gateway for every payer and charge of this call
        payers = _payers(tenant_id, gateway, charging)
    except payments.RetryableGatewayError:
        gateway, payers = None, {}
    for intent, answer in _charge_all(tenant_id, gateway, charging, payers):
        if isinstance(answer, payments.RetryableGatewayError):
            gateways.note_unanswered(answer, f"attempt {intent.attempt_id}")
            outcomes[intent.attempt_id] = "timeout"
            _release(tenant_id, intent)
        else:
            answers[intent.attempt_id] = (intent, answer)
    outcomes.update(_record(tenant_id, answers, now, opened_now=claimed))
    return outcomes


# Per warm function and width: the threads stay, and so does each one's HTTP session to the gateway.
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _charge_all(tenant_id: str, gateway, intents: list[Intent], payers: dict) -> list[tuple]:
    """Each intent charged once: (intent, the gateway's answer or the retryable error it met). A renewal
    round's charges wait on the gateway (a Stripe PaymentIntent takes 0.3-0.7 s), so up to
    ``PAYMENT_CONCURRENCY`` accounts are charged at once, each account's attempts in order, on threads
    that touch no database (the caller records every answer); a gateway that answers in process (the
    mock) is charged inline. Any other error is raised once every charge is back."""

    def one(intent: Intent) -> tuple:
        try:
            with tracing.subsegment("payment.charge", tenant_id=tenant_id):
                return intent, _charge(tenant_id, gateway, intent, payers)
        except payments.RetryableGatewayError as exc:
            return intent, exc

    accounts: dict[str, list[Intent]] = {}
    for intent in intents:
        accounts.setdefault(intent.account_id, []).append(intent)
    width = get_settings().payment_concurrency
    if len(accounts) <= 1 or width <= 1 or not getattr(gateway, "remote", False):
        return [one(intent) for intent in intents]
    with _pools_lock:
        if width not in _pools:
            _pools[width] = ThreadPoolExecutor(max_workers=width, thread_name_prefix="payment-charge")
        pool = _pools[width]
    # Each account's charges run in a copy of this context: their log lines carry the invocation's fields.
    futures = [
        pool.submit(contextvars.copy_context().run, lambda group=group: [one(i) for i in group])
        for group in accounts.values()
    ]
    wait(futures)  # every charge back before anything is raised: none is still running when the caller goes on
    return [answer for future in futures for answer in future.result()]


def _payers(tenant_id: str, gateway, intents: list[Intent]) -> dict:
    """Who each attempt charges, by attempt id, fixed on the attempt the first time it is sent; read
    only for a gateway that needs one (not the mock)."""
    if not (intents and gateway.needs_payer):
        return {}
    with transaction(tenant_id=tenant_id) as tx:
        rows = tx.all(Q["payers"], ids=sorted(i.attempt_id for i in intents))
    return {str(r["id"]): _payer(r) for r in rows}


def _payer(row: dict) -> payments.Payer:
    payer = row["payer"] or {}
    return payments.Payer(
        payer.get("customer"),
        payer.get("payment_method"),
        payer.get("gateway_account"),
        row["sent_before_s"],
        first_send=row["first_send"],
    )


def _claim(tenant_id: str, intents: list[Intent]) -> set[str]:
    """Claim the intents no live settler holds, in a short transaction of its own; the ids claimed."""
    with transaction(tenant_id=tenant_id) as tx:
        ids = sorted(intent.attempt_id for intent in intents)
        lease_s = get_settings().payment_claim_lease_s
        return {str(row[0]) for row in tx.run(Q["claim_attempts"], ids=ids, lease_s=lease_s)}


def settle(tenant_id: str, intent: Intent, now: datetime) -> str:
    """Charge one intent and record the outcome (see ``settle_many``)."""
    return settle_many(tenant_id, [intent], now)[intent.attempt_id]


def settle_pending(tenant_id: str, account_id: str, now: datetime) -> str | None:
    """Resolve attempts a crash or timeout left pending; the last outcome, or None if there were none."""
    with transaction(tenant_id=tenant_id) as tx:
        intents = [_intent(row) for row in tx.all(Q["pending_for_account"], account_id=account_id)]
    outcomes = settle_many(tenant_id, intents, now)
    return outcomes[intents[-1].attempt_id] if intents else None


def collect_open(tenant_id: str, account_id: str, now: datetime) -> str:
    """A dunning retry: charge the account's open invoices oldest first, stopping at anything but success.
    A charge of the invoice that waits for the customer is withdrawn first (or found completed)."""
    outcome = "succeeded"
    while outcome == "succeeded":
        with transaction(tenant_id=tenant_id) as tx:
            accounts.find_locked(tx, account_id)
            invoice = tx.one(Q["oldest_open_invoice"], account_id=account_id)
            if invoice is None:
                reactivate_if_clear(tx, account_id)
                return outcome
            waiting = waiting_for(tx, invoice["id"])
            intent = None if waiting else open_for_invoice(tx, account_id, invoice)
        if waiting:
            _withdraw_waiting(tenant_id, waiting, now)
        elif intent is not None:
            outcome = settle(tenant_id, intent, now)
    return outcome


def withdraw_waiting(tenant_id: str, invoice_id: str, now: datetime) -> None:
    """Withdraw the invoice's payment that waits for the customer, if any; quietly nothing if the
    gateway does not answer (the caller's check then still finds it waiting)."""
    with transaction(tenant_id=tenant_id) as tx:
        waiting = waiting_for(tx, invoice_id)
    if waiting is None:
        return
    try:
        _withdraw_waiting(tenant_id, waiting, now)
    except payments.RetryableGatewayError:
        log.warning("payment %s still waits: the gateway did not answer its withdrawal", waiting.attempt_id)


def _withdraw_waiting(tenant_id: str, waiting: Intent, now: datetime) -> None:
    """Cancel at the gateway a charge that waits for the customer; if they completed it, record it paid."""
    gateway = gateways.of(tenant_id)
    result = gateway.withdraw(reference=waiting.reference, idempotency_key=f"withdraw:{waiting.key}")
    with transaction(tenant_id=tenant_id) as tx:
        record_answer(tx, waiting, result, now)


def attempt_at_gateway(tx, attempt_id: str | None, reference: str | None) -> Intent | None:
    """The attempt a gateway's charge belongs to (by the attempt id it carried, else its reference)."""
    if attempt_id is None and reference is None:
        return None
    row = tx.one(Q["attempt_at_gateway"], id=attempt_id, reference=reference)
    return _intent(row) if row else None


def record_answer(tx, intent: Intent, result: payments.PaymentResult, now: datetime) -> str:
    """The gateway's later word on an attempt (its webhook, or a withdrawal), in ``tx``.

    A success pays a pending or waiting attempt; a decline, a wait or a cancellation
    resolves a pending one (a waiting attempt that the customer failed to authenticate
    stays waiting: dunning already counts it; a canceled one is resolved). A success
    for an attempt already declined or canceled is money the gateway took all the same:
    it is posted to the ledger (the account's credit, which its next invoice uses first)
    and alarmed. Anything else was settled already: ``in_progress``, nothing written.
    """
    accounts.find_locked(tx, intent.account_id)  # the account first, as every writer of its money locks
    if result.succeeded:
        still, dunning = _pay(tx, [(intent, result)], waiting=True)
        if not still:
            _late_success(tx, intent, result)
            return "in_progress"
        for account_id in dunning:
            reactivate_if_clear(tx, account_id)
        return "succeeded"
    if result.outcome == "canceled":
        if not tx.all(Q["lock_pending"], ids=[intent.attempt_id], waiting=True):
            return "in_progress"
        resolution = {"outcome": "canceled", "reference": result.reference, "decline_code": None}
        tx.run(Q["resolve_attempt"], id=intent.attempt_id, **resolution)
        return "canceled"
    return _record_unpaid(tx, intent, result, now)


def _pay(tx, paid: list, *, waiting: bool, commit: bool = False) -> tuple[set[str], list[str]]:
    """Successes onto the attempts still pending (with ``waiting``, or waiting for the customer): their
    payments. The attempt ids paid, and the accounts paid that were in dunning (``reactivate_if_clear``
    them). ``commit``: the statement takes its transaction's COMMIT with it."""
    rows = [
        {"attempt_id": i.attempt_id, "reference": r.reference, "paid": i.amount, **_payment_entry(i, r)}
        for i, r in paid
    ]
    result = (tx.all_then_commit if commit else tx.all)(Q["pay"], rows=encoding.dumps(rows), waiting=waiting)
    still = {row["id"] for row in result}
    return still, sorted({row["account_id"] for row in result if row["in_dunning"]})


def _overtaken(tx, intent: Intent, result: payments.PaymentResult) -> str:
    """A success someone recorded first (the gateway's webhook) is a success; one for an attempt
    resolved otherwise is the account's credit (``_late_success``)."""
    outcome = tx.scalar(Q["attempt_outcome"], id=intent.attempt_id)
    if outcome == "succeeded":
        return "succeeded"
    _late_success(tx, intent, result)
    return "in_progress"


def _late_success(tx, intent: Intent, result: payments.PaymentResult) -> None:
    """The gateway says it took money for an attempt we resolved otherwise: the money is the account's."""
    if tx.scalar(Q["attempt_outcome"], id=intent.attempt_id) not in ("declined", "canceled"):
        return  # paid already: this is a replay
    log.error("attempt %s was charged after it was resolved: posted as the account's credit", intent.attempt_id)
    emit_metric("payment_after_resolution", 1)
    ledger.post_many(tx, [_payment_entry(intent, result, "Payment received after its attempt was resolved")])


def lease_retry(tx, account_id: str, until: datetime) -> None:
    """Hold a dunning retry until ``until``: a duplicate message finds it not due meanwhile."""
    tx.run(Q["lease_retry"], id=account_id, lease_until=until)


def _charge(tenant_id: str, gateway, intent: Intent, payers: dict) -> payments.PaymentResult:
    if gateway is None:
        raise payments.GatewayUnavailable("no gateway answered for this tenant")
    payer = payers.get(intent.attempt_id)
    if payer is None and gateway.needs_payer:  # not read (the database or the store failed): never a decline
        raise payments.GatewayTimeout(f"no payer read for attempt {intent.attempt_id}")
    return gateway.charge(
        account_id=intent.account_id,
        amount=intent.amount,
        currency=intent.currency,
        idempotency_key=intent.key,
        payer=payer or payments.NO_PAYER,
        metadata={"tenant_id": tenant_id, "attempt_id": intent.attempt_id, "invoice_id": intent.invoice_id},
    )


def _release(tenant_id: str, intent: Intent) -> None:
    with transaction(tenant_id=tenant_id) as tx:
        tx.run(Q["release_attempt"], id=intent.attempt_id)


def _record(tenant_id: str, answers: dict, now: datetime, *, opened_now: bool = False) -> dict[str, str]:
    """Write the gateway's answers: successes in one transaction, each decline under its account's lock.

    ``opened_now``: the caller opened these attempts in this round, for accounts it found ACTIVE under
    their locks (a renewal round), so the successes' statement takes its COMMIT with it (one round
    trip) and what may follow it (an account found in dunning after all, an attempt recorded meanwhile
    by a webhook: both races) runs in a second transaction, after the declines: a reactivation is
    idempotent, and a dunning retry of an account with nothing open reactivates it too. Otherwise (a
    dunning retry, a pending payment settled) all of it is one transaction, as it always was.
    """
    if not answers:
        return {}
    outcomes, later = {}, None
    paid = {a: (i, r) for a, (i, r) in answers.items() if r.succeeded}
    if paid:
        with transaction(tenant_id=tenant_id) as tx:
            still, dunning = _pay(tx, [paid[a] for a in sorted(paid)], waiting=False, commit=opened_now)
            # Recorded meanwhile (a webhook), or resolved otherwise: the statement left these alone.
            overtaken = {a: paid[a] for a in sorted(set(paid) - still)}
            if not opened_now:
                outcomes.update(_after_payments(tx, dunning, overtaken))
        later = (dunning, overtaken) if opened_now and (dunning or overtaken) else None
        outcomes.update({a: "succeeded" for a in still})
    for attempt_id, (intent, result) in answers.items():
        if not result.succeeded:
            outcomes[attempt_id] = _record_decline(tenant_id, intent, result, now)
    if later:
        with transaction(tenant_id=tenant_id) as tx:
            outcomes.update(_after_payments(tx, *later))
    return outcomes


def _after_payments(tx, dunning: list[str], overtaken: dict) -> dict[str, str]:
    """What follows recorded successes: their accounts in dunning reactivated if nothing is left open, and
    the outcomes of the attempts the record found resolved already."""
    for account_id in dunning:
        reactivate_if_clear(tx, account_id)
    return {attempt_id: _overtaken(tx, *answer) for attempt_id, answer in overtaken.items()}


def _payment_entry(intent: Intent, result: payments.PaymentResult, description: str = "Payment") -> dict:
    """The ledger entry of money the gateway took for an attempt: one per attempt, whoever records it."""
    return {
        "account_id": intent.account_id,
        "entry_type": "payment",
        "amount": -intent.amount,
        "currency": intent.currency,
        "invoice_id": intent.invoice_id,
        "period_start": None,
        "idempotency_key": f"payment:{intent.key}",
        "description": description,
        "metadata": {"reference": result.reference},
    }


def _record_decline(tenant_id: str, intent: Intent, result, now: datetime) -> str:
    with transaction(tenant_id=tenant_id) as tx:
        return _record_unpaid(tx, intent, result, now)


def _record_unpaid(tx, intent: Intent, result, now: datetime) -> str:
    """A decline, or a charge that waits for the customer, onto a pending attempt: its ledger
    record and the dunning step (``in_progress`` if it is no longer pending)."""
    account = accounts.find_locked(tx, intent.account_id)
    if not tx.run(Q["lock_pending"], ids=[intent.attempt_id], waiting=False):
        return "in_progress"  # resolved by a settler that took over a lapsed claim, or by a webhook
    waits = result.outcome == "requires_action"
    tx.run(
        Q["resolve_attempt"],
        id=intent.attempt_id,
        outcome=result.outcome if waits else "declined",
        reference=result.reference,
        decline_code=result.decline_code,
    )
    ledger.post(
        tx,
        account_id=intent.account_id,
        entry_type="payment_failed",
        amount=0,
        currency=intent.currency,
        idempotency_key=f"payment_failed:{intent.key}",
        invoice_id=intent.invoice_id,
        description="Payment needs the customer's authentication"
        if waits
        else f"Payment declined ({result.decline_code})",
    )
    fields = {"accountId": intent.account_id, "invoiceId": intent.invoice_id, "timestamp": now.isoformat()}
    if not waits:
        fields["declineCode"] = result.decline_code
    event_type = "invoice.payment_action_required" if waits else "invoice.payment_failed"
    outbox.add(tx, event_type, fields, tx.scalar(Q["invoice_object"], id=intent.invoice_id))
    emit_metric("payment_action_required" if waits else "payment_declines", 1, TenantId=str(account["tenant_id"]))
    return _dun(tx, account, now)


def _dun(tx, account: dict, now: datetime) -> str:
    """After a decline: the next retry (PENDING), or INACTIVE after the last one."""
    failures = account["failure_count"] + 1
    schedule = get_settings().dunning_retry_days
    if failures > len(schedule):
        _transition(tx, account, "INACTIVE", failures, None, "unpaid")
        tx.run(Q["mark_uncollectible"], account_id=account["id"])
        return "inactive"
    day = (now + timedelta(days=schedule[failures - 1])).replace(hour=0, minute=0, second=0, microsecond=0)
    _transition(tx, account, "PENDING", failures, day, "past_due")
    return "declined"


def reactivate_if_clear(tx, account_id) -> None:
    """An account in dunning with no open invoice left (paid, credited or voided) is ACTIVE again."""
    account = accounts.find_locked(tx, account_id)
    if account is None or (account["status"] == "ACTIVE" and not account["failure_count"]):
        return
    if account["status"] == "INACTIVE" or tx.one(Q["oldest_open_invoice"], account_id=account_id):
        return
    _transition(tx, account, "ACTIVE", 0, None, "active")


def _transition(tx, account, status, failures, retry_at, subscription_status) -> None:
    previous = account["status"]
    tx.run(Q["set_dunning"], id=account["id"], status=status, failure_count=failures, retry_at=retry_at)
    tx.run(Q["set_subscription_status"], account_id=account["id"], status=subscription_status)
    audit.record(
        tx,
        "system:dunning",
        f"account.{status.lower()}",
        "account",
        account["id"],
        {"from": account["status"], "failure_count": failures, "retry_at": retry_at},
    )
    account.update(status=status, failure_count=failures, payment_retry_at=retry_at)
    fields = {"accountId": str(account["id"]), "status": status, "previousStatus": previous, "retryAt": retry_at}
    outbox.add(tx, ACCOUNT_EVENTS[status], fields, accounts.get(tx, account["id"]))


# An account's dunning status, as the event that says it changed.
ACCOUNT_EVENTS = {"PENDING": "account.past_due", "INACTIVE": "account.inactive", "ACTIVE": "account.reactivated"}


def _intent(row: dict) -> Intent:
    return Intent(
        attempt_id=str(row["id"]),
        account_id=str(row["account_id"]),
        invoice_id=str(row["invoice_id"]),
        key=row["idempotency_key"],
        amount=row["amount"],
        currency=row["currency"],
        reference=row.get("gateway_reference"),
    )
