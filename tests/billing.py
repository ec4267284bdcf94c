"""Helpers that put accounts into billable states directly in the database (tenant-scoped)."""

import json
import threading
from datetime import datetime

from chalicelib.billing import calendar, periods
from chalicelib.db import reset_connection, transaction

METERED = [{"metric": "api_calls", "aggregation": "sum", "unit_amount": 2}]


def subscription_state(anchor: datetime, interval: str = "month", interval_count: int = 1, **changes):
    """A ``periods.Subscription`` on a 49.00 USD "pro" price with METERED usage, in its first period
    from ``anchor`` (no database): what the pure billing functions are computed from."""
    values = dict(
        id="11111111-2222-3333-4444-555555555555",
        account_id="a",
        plan_id="p",
        plan_code="pro",
        plan_name="Pro",
        interval=interval,
        interval_count=interval_count,
        amount=4900,
        currency="USD",
        usage_prices=METERED,
        billing_anchor=anchor,
        current_period_start=anchor,
        current_period_end=calendar.period_boundary(anchor, interval, interval_count, 1),
    )
    return periods.Subscription(**{**values, **changes})


def plan(tenant_id: str, code="pro", amount=4900, interval="month", currency="USD", usage_prices=METERED) -> str:
    with transaction(tenant_id=tenant_id) as tx:
        return str(
            tx.scalar(
                "INSERT INTO plans (code, name, interval, amount, currency, usage_prices)"
                " VALUES (:c, :c, :i, :a, :cur, CAST(:u AS jsonb)) RETURNING id",
                c=code,
                i=interval,
                a=amount,
                cur=currency,
                u=json.dumps(usage_prices),
            )
        )


def subscribed_account(
    tenant_id: str, plan_id: str, anchor: datetime, periods_elapsed: int = 1, interval: str = "month", **_ignored
) -> str:
    """An account whose subscription started at ``anchor`` and whose next renewal is ``periods_elapsed`` on."""
    with transaction(tenant_id=tenant_id) as tx:
        account = tx.scalar(
            "INSERT INTO accounts (email, name, currency, plan_id, billing_anchor) VALUES"
            " ('c@x.test', 'C', 'USD', :p, :anchor) RETURNING id",
            p=plan_id,
            anchor=anchor,
        )
        start = calendar.period_boundary(anchor, interval, 1, periods_elapsed - 1)
        end = calendar.period_boundary(anchor, interval, 1, periods_elapsed)
        tx.run(
            "INSERT INTO subscriptions (account_id, plan_id, billing_anchor, current_period_start, current_period_end)"
            " VALUES (:a, :p, :anchor, :s, :e)",
            a=account,
            p=plan_id,
            anchor=anchor,
            s=start,
            e=end,
        )
        tx.run("UPDATE accounts SET next_billing_at = :e WHERE id = :a", e=end, a=account)
    return str(account)


def in_threads(*targets) -> None:
    """Run each target on its own thread (each with its own database connection) and wait for all."""

    def run(target):
        try:
            target()
        finally:
            reset_connection()

    threads = [threading.Thread(target=run, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def usage(
    tenant_id: str, account_id: str, at: datetime, quantity: int, event_id: str, metric="api_calls", properties=None
) -> None:
    with transaction(tenant_id=tenant_id) as tx:
        tx.run(
            "INSERT INTO usage_events (event_id, account_id, metric, quantity, occurred_at, properties)"
            " VALUES (:e, :a, :m, :q, :t, CAST(:p AS jsonb))",
            e=event_id,
            a=account_id,
            m=metric,
            q=quantity,
            t=at,
            p=json.dumps(properties or {}),
        )


def state(tenant_id: str, account_id: str) -> dict:
    with transaction(tenant_id=tenant_id) as tx:
        account = tx.one(
            "SELECT status, next_billing_at, payment_retry_at, failure_count FROM accounts WHERE id = :a", a=account_id
        )
        account["entries"] = [
            (row["entry_type"], row["amount"])
            for row in tx.all(
                "SELECT entry_type, amount FROM ledger_entries WHERE account_id = :a ORDER BY seq", a=account_id
            )
        ]
        account["balance"] = sum(amount for _kind, amount in account["entries"])
        account["charges_by_period"] = [
            row[0]
            for row in tx.run(
                "SELECT period_start FROM ledger_entries WHERE account_id = :a AND entry_type = 'charge' ORDER BY 1",
                a=account_id,
            )
        ]
        account["invoices"] = tx.all(
            "SELECT status, total, period_start, period_end FROM invoices WHERE account_id = :a ORDER BY period_start",
            a=account_id,
        )
        account["subscription"] = tx.scalar("SELECT status FROM subscriptions WHERE account_id = :a", a=account_id)
    return account


def books(tenant_id: str, account_id: str) -> dict:
    """The ledger's sums beside the invoices'. Balanced books: charged = invoiced, paid = invoices_paid,
    balance = due (what the open invoices still ask for)."""
    with transaction(tenant_id=tenant_id) as tx:
        return tx.one(
            "SELECT CAST(coalesce(sum(amount) FILTER (WHERE entry_type = 'charge'), 0) AS bigint) AS charged,"
            " CAST(coalesce(-sum(amount) FILTER (WHERE entry_type = 'payment'), 0) AS bigint) AS paid,"
            " CAST(coalesce(sum(amount), 0) AS bigint) AS balance,"
            " (SELECT CAST(coalesce(sum(total), 0) AS bigint) FROM invoices WHERE account_id = :a) AS invoiced,"
            " (SELECT CAST(coalesce(sum(amount_paid), 0) AS bigint) FROM invoices WHERE account_id = :a)"
            " AS invoices_paid,"
            " (SELECT CAST(coalesce(sum(amount_due), 0) AS bigint) FROM invoices WHERE account_id = :a"
            " AND status = 'open') AS due"
            " FROM ledger_entries WHERE account_id = :a",
            a=account_id,
        )


def pending_attempts(tenant_id: str, account_id: str) -> int:
    with transaction(tenant_id=tenant_id) as tx:
        return tx.scalar(
            "SELECT count(*) FROM payment_attempts WHERE account_id = :a AND outcome = 'pending'", a=account_id
        )


TENANT_TABLES = [
    "tenants",
    "plans",
    "accounts",
    "subscriptions",
    "invoices",
    "invoice_lines",
    "usage_events",
    "ledger_entries",
    "processed_events",
    "idempotency_keys",
    "audit_logs",
    "outbox",
    "payment_attempts",
    "number_sequences",
    "invoice_items",
    "credit_notes",
    "refunds",
    "webhook_endpoints",
    "webhook_deliveries",
    "webhook_attempts",
    "tenant_rate_limits",
    "api_clients",
    "usage_events_archive",
    "usage_counters",
    "tax_rates",
    "coupons",
    "discounts",
    "discount_uses",
]
# Moved by every usage request the rate admits, whatever becomes of it (a rejected batch too): a
# tenant's place in its request rate, not data a request stores.
NOT_STORED = ("tenant_rate_limits",)


def owner_column(table: str) -> str:
    return "id" if table == "tenants" else "tenant_id"


def snapshot(owner_conn, tenant_id: str) -> dict:
    """Every row of ``tenant_id`` in every tenant table, as the owner sees it."""
    return {
        table: sorted(
            str(row[0])
            for row in owner_conn.run(
                f"SELECT to_jsonb(t) FROM {table} t WHERE {owner_column(table)} = CAST(:t AS uuid)", t=tenant_id
            )
        )
        for table in TENANT_TABLES
        if table not in NOT_STORED
    }


def actor(tenant_id: str):
    """A tenant's user, as a verified token makes it (the domain commands' ``actor``)."""
    from chalicelib import auth

    return auth.Principal(tenant_id=tenant_id, user_id="u", groups=frozenset({"USER"}))


def priced_plan(tenant_id: str, code: str, amount: int, interval: str = "month", currency="USD", **extra) -> None:
    """A plan price made as the API makes it (``plans.create``): no metered usage unless given."""
    from chalicelib.billing import plans

    command = plans.NewPlan(code=code, name=code.title(), interval=interval, amount=amount, currency=currency, **extra)
    with transaction(tenant_id=tenant_id) as tx:
        plans.create(tx, actor(tenant_id), command)


def subscribe(tenant_id: str, plan_code: str, at: datetime, currency="USD", **options) -> tuple[str, str]:
    """A new account in ``currency`` subscribed at ``at`` through ``subscriptions.create``, its first invoice
    issued and collected as the generate-invoice consumer does it; (account id, subscription id)."""
    from chalicelib.billing import accounts, collection, engine, subscriptions

    with transaction(tenant_id=tenant_id) as tx:
        new = accounts.NewAccount(email="c@x.test", name="C", currency=currency)
        account = accounts.create(tx, actor(tenant_id), new)
        command = subscriptions.NewSubscription(account_id=str(account["id"]), plan=plan_code, **options)
        subscription = subscriptions.create(tx, actor(tenant_id), command, now=at)
    with transaction(tenant_id=tenant_id) as tx:
        engine.bill_first_period(tx, tenant_id, str(subscription["id"]))
    collection.settle_pending(tenant_id, str(account["id"]), at)
    return str(account["id"]), str(subscription["id"])


def invoices_of(tenant_id: str, account_id: str) -> list[dict]:
    """Every invoice with its lines as (kind, quantity, amount, period_start, period_end), oldest first."""
    with transaction(tenant_id=tenant_id) as tx:
        invoices = tx.all(
            "SELECT id, billing_reason, status, total, credit_applied, amount_due, period_start, period_end"
            " FROM invoices WHERE account_id = :a ORDER BY created_at, period_start",
            a=account_id,
        )
        for invoice in invoices:
            invoice["lines"] = [
                (r["kind"], r["quantity"], r["amount"], r["period_start"], r["period_end"])
                for r in tx.all("SELECT * FROM invoice_lines WHERE invoice_id = :i ORDER BY position", i=invoice["id"])
            ]
    return invoices


def snapshot_books(tenant_id: str, account_id: str) -> dict:
    """Everything money about one account: ledger entries, invoices and payment attempts."""
    with transaction(tenant_id=tenant_id) as tx:
        return {
            "ledger": tx.all(
                "SELECT entry_type, amount, idempotency_key FROM ledger_entries WHERE account_id = :a ORDER BY seq",
                a=account_id,
            ),
            "invoices": tx.all(
                "SELECT id, status, total, credit_applied, amount_due, amount_paid FROM invoices"
                " WHERE account_id = :a ORDER BY id",
                a=account_id,
            ),
            "attempts": tx.all(
                "SELECT id, outcome, amount FROM payment_attempts WHERE account_id = :a ORDER BY id", a=account_id
            ),
            "subscription": tx.all("SELECT * FROM subscriptions WHERE account_id = :a", a=account_id),
        }


def flat_fee_lines(tenant_id: str, account_id: str) -> list[dict]:
    """The flat-fee and proration lines of the account's issued (not draft) invoices, with their reason."""
    with transaction(tenant_id=tenant_id) as tx:
        return tx.all(
            "SELECT l.kind, l.amount, l.period_start, l.period_end, i.billing_reason FROM invoice_lines l"
            " JOIN invoices i ON i.id = l.invoice_id"
            " WHERE i.account_id = :a AND i.status <> 'draft' AND l.kind IN ('subscription', 'proration')",
            a=account_id,
        )


def credits(tenant_id: str, account_id: str) -> int:
    """The ledger's credits (negative): invoices whose credits exceeded their charges."""
    with transaction(tenant_id=tenant_id) as tx:
        return tx.scalar(
            "SELECT CAST(coalesce(sum(amount), 0) AS bigint) FROM ledger_entries"
            " WHERE account_id = :a AND entry_type = 'credit'",
            a=account_id,
        )


def unused_credit(tenant_id: str, account_id: str) -> int:
    """The account's credit balance from the invoices' side: negative totals not yet used by later invoices."""
    with transaction(tenant_id=tenant_id) as tx:
        return tx.scalar(
            "SELECT CAST(coalesce(sum(-total) FILTER (WHERE total < 0), 0) - coalesce(sum(credit_applied), 0)"
            " AS bigint) FROM invoices WHERE account_id = :a AND status <> 'draft'",
            a=account_id,
        )
