"""What a billing instant bills: pure functions from a subscription's state to its invoice. No I/O.

Every invoice a subscription gets is computed here and nowhere else, as a ``Bill``:

- ``first``: when the subscription starts, the plan price for its first period (in advance);
- ``renewal``: at each period boundary, the plan price for the new period (in advance) and
  the closed period's metered usage (in arrears);
- ``final``: when it ends (the cancel instant, or the end of its last period for a cancel at
  period end), the metered usage since the last boundary and no new flat fee.

A bill is keyed by its *boundary*, the instant it is issued for: the ledger allows one
charge per account and boundary (``charge_key``), and the gateway's idempotency key
(``payment_key``) is built from what the invoice is for, in this one function, so a
retry of any step can never charge twice. ``invoicing.issue`` is the one writer of bills.

Money is integer minor units of the plan's currency. Usage is priced per line by
``usage_charges`` (integer arithmetic, no rounding); ``lines.total_of`` is the one total rule.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

from chalicelib.billing import calendar, usage_charges
from chalicelib.billing.lines import Line, total_of

_END_OF_TIME = datetime(9999, 12, 31, tzinfo=UTC)
# Invoices issued at a subscription's own billing instants keep the key format that
# attempts already recorded use; any other reason names itself in the key.
_PERIOD_REASONS = ("subscription_create", "subscription_cycle")


@dataclass(frozen=True)
class Subscription:
    """A live subscription with its plan price: everything a bill is computed from."""

    id: str
    account_id: str
    plan_id: str
    plan_code: str
    plan_name: str
    interval: str
    interval_count: int
    amount: int
    currency: str
    usage_prices: list = field(default_factory=list)
    billing_anchor: datetime | None = None
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None
    cancel_at_period_end: bool = False

    @classmethod
    def of(cls, row: dict) -> "Subscription":
        """From a row that names every field (``engine.sql``'s ``billing_state``, ``invoicing.sql``'s state)."""
        values = {name: row[name] for name in cls.__dataclass_fields__}
        return cls(
            **{**values, "id": str(row["id"]), "account_id": str(row["account_id"]), "plan_id": str(row["plan_id"])}
        )


@dataclass(frozen=True)
class Bill:
    """One billing instant of one subscription: the invoice (if any) and what follows it."""

    subscription: Subscription
    reason: str  # subscription_create | subscription_cycle | subscription_cancel
    boundary: datetime  # the instant billed: one charge per account and boundary
    period_start: datetime  # the invoice's period
    period_end: datetime
    lines: tuple[Line, ...]
    collect: bool  # open a payment attempt (an ACTIVE account with something to pay)
    next_period: tuple[datetime, datetime] | None = None  # the subscription moves on to this period
    ends: bool = False  # the subscription ends at ``boundary``

    @property
    def account_id(self) -> str:
        return self.subscription.account_id

    @property
    def currency(self) -> str:
        return self.subscription.currency

    @cached_property
    def total(self) -> int:
        return total_of(self.lines)

    @property
    def charge_key(self) -> str:
        return charge_key(self.account_id, self.boundary)

    @property
    def number(self) -> str:
        suffix = "" if self.reason in _PERIOD_REASONS else "-F"
        compact = self.subscription.id.replace("-", "")[:10].upper()
        return f"INV-{self.boundary.astimezone(UTC):%Y%m%d}-{compact}{suffix}"

    @property
    def description(self) -> str:
        kind = "Final invoice" if self.ends else "Invoice"
        return f"{kind} for {self.period_start:%Y-%m-%d} to {self.period_end:%Y-%m-%d}"


def charge_key(account_id, boundary: datetime) -> str:
    return f"charge:{account_id}:{boundary.isoformat()}"


def payment_key(invoice_id, subscription_id, reason: str, period_start: datetime, attempt: int) -> str:
    """The gateway's idempotency key for attempt ``attempt`` at an invoice: built here only.

    From what the invoice is for (subscription, reason, period), not its row id, so the
    same charge always carries the same key; one-off invoices use their id.
    """
    if subscription_id is None:
        return f"pay:invoice:{invoice_id}:{attempt}"
    stamp = period_start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    if reason in _PERIOD_REASONS:
        return f"pay:{subscription_id}:{stamp}:{attempt}"
    return f"pay:{subscription_id}:{reason}:{stamp}:{attempt}"


def period_end(sub: Subscription, start: datetime) -> datetime:
    """The end of the period starting at ``start``, on the anchor's grid (Jan 31 -> Feb 28 -> Mar 31)."""
    grid_start, grid_end = calendar.period_containing(sub.billing_anchor, sub.interval, sub.interval_count, start)
    if grid_start != start:  # billing date moved off the anchor's grid: keep the interval from here
        return calendar.period_boundary(start, sub.interval, sub.interval_count, 1)
    return grid_end


def usage_window(sub: Subscription, boundary: datetime, *, ending_now: bool = False) -> tuple[datetime, datetime]:
    """The metered usage a bill at ``boundary`` prices: since the current period began, up to the
    boundary. Ending now, every event recorded since the period began, also those stamped up to
    USAGE_MAX_FUTURE_S ahead that were accepted before the cancel (no later one is accepted)."""
    return sub.current_period_start, (_END_OF_TIME if ending_now else boundary)


def first(sub: Subscription, account_status: str) -> Bill:
    """The first period's plan price, whenever the first bill is written: the anchor fixes the period."""
    start = sub.billing_anchor
    end = period_end(sub, start)
    lines = (_flat_fee(sub),)
    return Bill(sub, "subscription_create", start, start, end, lines, _collects(account_status, lines))


def renewal(sub: Subscription, account_status: str, start: datetime, usage_totals: dict) -> Bill:
    end = period_end(sub, start)
    usage = usage_charges.lines(sub.usage_prices, usage_totals, *usage_window(sub, start))
    lines = (_flat_fee(sub), *usage)
    collect = _collects(account_status, lines)
    return Bill(sub, "subscription_cycle", start, start, end, lines, collect, next_period=(start, end))


def final(sub: Subscription, account_status: str, ends_at: datetime, usage_totals: dict) -> Bill:
    """The last bill: usage since the current period began, no flat fee; no invoice without usage.

    ``usage_totals`` covers ``usage_window`` (with ``ending_now`` for a cancel now). An
    INACTIVE account's billing has stopped (its open invoices are uncollectible): it ends
    without a final invoice.
    """
    usage = usage_charges.lines(sub.usage_prices, usage_totals, sub.current_period_start, ends_at)
    billable = account_status != "INACTIVE" and any(line.quantity for line in usage)
    lines = tuple(usage) if billable else ()
    collect = _collects(account_status, lines)
    return Bill(sub, "subscription_cancel", ends_at, sub.current_period_start, ends_at, lines, collect, ends=True)


def _flat_fee(sub: Subscription) -> Line:
    return Line("subscription", f"{sub.plan_name} ({sub.plan_code})", 1, sub.amount, sub.amount)


def _collects(account_status: str, lines) -> bool:
    # A PENDING account (in dunning) is invoiced only: its retry collects every open invoice.
    return account_status == "ACTIVE" and total_of(lines) > 0
