"""Renewals a batch at a time: the same effects as ``rebill.renew``, in a handful of statements.

A rebill SQS batch (up to 100 messages) is grouped by tenant; each group's
ordinary renewals are billed in one transaction with one set-based statement per
table (invoices, lines, charges, period advance, payment intents), then the
intents are settled with the gateway and the successes recorded in one more
transaction. Everything unusual in a group (an account with an unsettled
payment, in dunning, canceling, without a subscription, a period that is not
the account's next) goes through ``rebill.handle`` one message at a time, and so
does the whole group if anything in it fails, so a failure is reported for its
own record only. Keys, periods and amounts are computed exactly as the
single-account path computes them, so a message processed either way (or both,
on a redelivery) bills the same period once.
"""

import logging
from collections import defaultdict
from datetime import UTC, datetime

from chalicelib import encoding, events, tracing
from chalicelib.billing import calendar, collection, payments, rebill, usage_charges
from chalicelib.billing.invoicing import Line, charge_key, total_of
from chalicelib.db import transaction
from chalicelib.db.queries import load
from chalicelib.observability import emit_metric

Q = load("rebill")
log = logging.getLogger("billing.rebill")


def process(records: list[dict], now: datetime | None = None) -> dict:
    """The rebill_processor body: returns the SQS partial-batch response."""
    now = now or calendar.utcnow()
    failures: list[str] = []
    groups: dict[str, list[tuple[str, str, dict]]] = defaultdict(list)
    for record in records:
        message_id, body = record.get("messageId", ""), record.get("body", "")
        try:
            message = rebill.parse(body)
        except events.PoisonMessage as exc:
            log.error("rebill: poison message %s: %s", message_id, exc)
            failures.append(message_id)
            continue
        groups[message["tenantId"]].append((message_id, body, message))
    for tenant_id, group in groups.items():
        failures += _process_group(tenant_id, group, now)
    from chalicelib import consumers

    return consumers.respond("rebill", failures, len(records))


def _process_group(tenant_id: str, group: list, now: datetime) -> list[str]:
    renewals = [item for item in group if item[2]["kind"] == "renewal"]
    others = [item for item in group if item[2]["kind"] != "renewal"]
    try:
        handled, timed_out, caught_up_to = _renew_together(tenant_id, renewals, now)
    except Exception:  # noqa: BLE001 - retried one message at a time below, failures reported per record
        log.exception("rebill: batch path failed for tenant %s; falling back to one by one", tenant_id)
        handled, timed_out, caught_up_to = set(), set(), {}
    failures = [message_id for message_id, _body, message in renewals if message["accountId"] in timed_out]
    # Accounts more than one period behind (a scheduler outage) catch up one by one.
    behind = [
        r
        for r in renewals
        if r[0] in handled
        and r[2]["accountId"] in caught_up_to
        and caught_up_to[r[2]["accountId"]] <= now
        and r[2]["accountId"] not in timed_out
    ]
    behind = list({r[2]["accountId"]: r for r in behind}.values())  # one catch-up per account
    for message_id, body, _message in others + [r for r in renewals if r[0] not in handled] + behind:
        try:
            rebill.handle(body, now=now)
        except Exception:  # noqa: BLE001 - reported for this record; SQS redelivers it
            log.exception("rebill: message %s failed", message_id)
            failures.append(message_id)
    return failures


def _renew_together(tenant_id: str, renewals: list, now: datetime):
    """Bill the group's plain renewals.

    Returns the handled message ids, the accounts whose payment timed out, and
    each billed account's new ``next_billing_at``.
    """
    if not renewals:
        return set(), set(), {}
    due_at = defaultdict(set)
    for _message_id, _body, message in renewals:
        due_at[message["accountId"]].add(message["dueAt"])
    with tracing.subsegment("rebill.batch", tenant_id=tenant_id), transaction(tenant_id=tenant_id) as tx:
        rows = tx.all(Q["batch_accounts"], ids=sorted(due_at))
        plain = [r for r in rows if _plain(r, due_at[str(r["id"])], now)]
        if not plain:
            return set(), set(), {}
        periods = {str(r["id"]): (r["next_billing_at"], rebill._period_end(r, r["next_billing_at"])) for r in plain}
        totals = defaultdict(dict)
        windows = [
            {"account_id": str(r["id"]), "from_at": r["current_period_start"], "to_at": r["next_billing_at"]}
            for r in plain
            if r["usage_prices"]
        ]
        if windows:
            for row in tx.all(Q["batch_usage_totals"], windows=encoding.dumps(windows)):
                totals[str(row["account_id"])][row["metric"]] = row
        bills = {}
        for r in plain:
            account_id = str(r["id"])
            start, end = periods[account_id]
            lines = [Line("subscription", f"{r['plan_name']} ({r['plan_code']})", 1, r["amount"], r["amount"])]
            lines += usage_charges.lines(r["usage_prices"], totals[account_id], r["current_period_start"], start)
            bills[account_id] = (r, start, end, lines, total_of(lines))
        invoice_rows = [
            {
                "account_id": a,
                "subscription_id": str(r["subscription_id"]),
                "currency": r["currency"],
                "total": total,
                "period_start": start,
                "period_end": end,
            }
            for a, (r, start, end, _lines, total) in bills.items()
        ]
        invoices = {
            str(row["account_id"]): str(row["id"])
            for row in tx.all(Q["batch_invoices"], rows=encoding.dumps(invoice_rows))
        }
        tx.run(
            Q["batch_lines"],
            rows=encoding.dumps(
                [
                    {
                        "invoice_id": invoices[a],
                        "kind": line.kind,
                        "description": line.description,
                        "metric": line.metric,
                        "quantity": line.quantity,
                        "unit_amount": line.unit_amount,
                        "amount": line.amount,
                        "currency": r["currency"],
                        "period_start": line.period_start or start,
                        "period_end": line.period_end or end,
                        "position": position,
                    }
                    for a, (r, start, end, lines, _total) in bills.items()
                    if a in invoices
                    for position, line in enumerate(lines)
                ]
            ),
        )
        tx.run(
            Q["batch_ledger"],
            rows=encoding.dumps(
                [
                    {
                        "account_id": a,
                        "entry_type": "charge",
                        "amount": total,
                        "currency": r["currency"],
                        "invoice_id": invoices[a],
                        "period_start": start,
                        "idempotency_key": charge_key(a, start),
                        "description": f"Invoice for {start:%Y-%m-%d} to {end:%Y-%m-%d}",
                    }
                    for a, (r, start, end, _lines, total) in bills.items()
                    if a in invoices
                ]
            ),
        )
        tx.run(
            Q["batch_advance"],
            rows=encoding.dumps(
                [
                    {
                        "account_id": a,
                        "subscription_id": str(r["subscription_id"]),
                        "period_start": start,
                        "period_end": end,
                    }
                    for a, (r, start, end, _lines, _total) in bills.items()
                ]
            ),
        )
        intents = (
            [
                collection._intent(row)
                for row in tx.all(
                    Q["batch_intents"],
                    rows=encoding.dumps(
                        [
                            {
                                "account_id": a,
                                "invoice_id": invoices[a],
                                "amount": total,
                                "currency": r["currency"],
                                "idempotency_key": f"pay:{r['subscription_id']}:{_key_time(start)}:0",
                            }
                            for a, (r, start, _end, _lines, total) in bills.items()
                            if a in invoices and total > 0
                        ]
                    ),
                )
            ]
            if invoices
            else []
        )
        for a, (r, _start, _end, _lines, total) in bills.items():
            if a in invoices and total == 0:
                tx.run(Q["mark_paid"], id=invoices[a])
            if a in invoices:
                emit_metric("invoice_amount", total, "None", TenantId=tenant_id, PlanId=str(r["plan_id"]))
    handled = {message_id for message_id, _body, message in renewals if message["accountId"] in periods}
    next_billing = {a: end for a, (_start, end) in periods.items()}
    return handled, _settle_together(tenant_id, intents, now), next_billing


def _plain(row: dict, due_at: set, now: datetime) -> bool:
    """An ACTIVE account due for exactly the period its messages name, with nothing else going on."""
    return (
        row["status"] == "ACTIVE"
        and not row["failure_count"]
        and not row["unsettled"]
        and row["subscription_id"] is not None
        and not row["cancel_at_period_end"]
        and row["next_billing_at"] is not None
        and row["next_billing_at"] <= now
        and row["next_billing_at"] in due_at
    )


def _key_time(start: datetime) -> str:
    """The period start as the single-account path's SQL formats it into the gateway key."""
    return start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _settle_together(tenant_id: str, intents: list, now: datetime) -> set[str]:
    """Charge each intent, then record every success in one transaction; declines go the single path."""
    results, timed_out = {}, set()
    gateway = payments.get_gateway()
    for intent in intents:
        try:
            with tracing.subsegment("payment.charge", tenant_id=tenant_id):
                results[intent.attempt_id] = (
                    intent,
                    gateway.charge(
                        account_id=intent.account_id,
                        amount=intent.amount,
                        currency=intent.currency,
                        idempotency_key=intent.key,
                    ),
                )
        except payments.GatewayTimeout:
            timed_out.add(intent.account_id)  # stays pending; the redelivery settles it
    if not results:
        return timed_out
    with transaction(tenant_id=tenant_id) as tx:
        still_pending = {str(row[0]) for row in tx.run(Q["batch_lock_pending"], ids=sorted(results))}
        paid = [(i, r) for a, (i, r) in results.items() if a in still_pending and r.succeeded]
        if paid:
            tx.run(
                Q["batch_resolve_paid"],
                rows=encoding.dumps(
                    [
                        {"attempt_id": i.attempt_id, "reference": r.reference, "invoice_id": i.invoice_id}
                        for i, r in paid
                    ]
                ),
            )
            tx.run(
                Q["batch_ledger"],
                rows=encoding.dumps(
                    [
                        {
                            "account_id": i.account_id,
                            "entry_type": "payment",
                            "amount": -i.amount,
                            "currency": i.currency,
                            "invoice_id": i.invoice_id,
                            "period_start": None,
                            "idempotency_key": f"payment:{i.key}",
                            "description": "Payment",
                            "metadata": {"reference": r.reference},
                        }
                        for i, r in paid
                    ]
                ),
            )
    for attempt_id, (intent, result) in results.items():
        if attempt_id in still_pending and not result.succeeded:
            with transaction(tenant_id=tenant_id) as tx:  # a decline: the dunning path, one account
                account = tx.one(Q["lock_account"], id=intent.account_id)
                if tx.scalar(Q["lock_attempt"], id=attempt_id) == "pending":
                    tx.run(
                        Q["resolve_attempt"],
                        id=attempt_id,
                        outcome=result.outcome,
                        reference=result.reference,
                        decline_code=result.decline_code,
                    )
                    collection._apply(tx, tenant_id, account, intent, result, now)
                    emit_metric("rebill_failures", 1, TenantId=tenant_id)
    return timed_out
