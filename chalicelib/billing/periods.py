"""What a billing instant bills: pure functions from a subscription's state to its invoice. No I/O.

Every invoice a subscription gets is computed here and nowhere else, as a ``Bill``:

- ``first``: when the subscription starts, the plan price for its first period (in advance);
- ``renewal``: at each period boundary, the plan price for the new period (in advance) and
  the closed period's metered usage (in arrears);
- ``final``: when it ends (the cancel instant, or the end of its last period for a cancel at
  period end), the metered usage since the last boundary and no new flat fee;
- and, in ``changes``, what a plan or quantity change, a trial's end, a pause or a resume bills.

A bill also says what the subscription is after it (``Bill.then``): its terms, period and
status. ``invoicing.issue`` writes both, so the subscription moves only with its bill.
A change scheduled for the period end is applied by the renewal at that boundary, and
proration lines waiting for the next invoice go on whichever bill comes next.

A bill is keyed by its *boundary*, the instant it is issued for: the ledger allows one
charge per account and boundary (``charge_key``), and the gateway's idempotency key
(``payment_key``) is built from what the invoice is for, in this one function, so a
retry of any step can never charge twice. ``invoicing.issue`` is the one writer of bills.

Money is integer minor units of the account's currency: a plan price's amount and usage prices in
that currency (``currency_prices``). Usage is priced per line by
``usage_charges`` (integer arithmetic, no rounding); ``lines.total_of`` is the one total rule
and ``lines.prorate`` the one rounding rule. Metered usage is priced on the terms in force
when its period closes; a change that ends the period early (a new interval) closes it.
"""

from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property

from chalicelib.billing import calendar, currency_prices, usage_charges
from chalicelib.billing.lines import Line, total_of

_END_OF_TIME = datetime(9999, 12, 31, tzinfo=UTC)
# Invoices issued at a subscription's own billing instants keep the gateway key format that
# attempts already recorded use; any other reason names itself in the key.
_PERIOD_REASONS = ("subscription_create", "subscription_cycle")


# The price terms a change replaces (a plan price and a quantity): what ``pending_change`` stores.
TERMS = ("plan_id", "plan_code", "plan_name", "interval", "interval_count", "amount", "currency", "usage_prices")
TERMS += ("trial_usage", "quantity")


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
    quantity: int = 1
    status: str = "active"  # trialing | active | past_due | paused
    trial_end: datetime | None = None  # set once a subscription had a trial (its first paid period starts there)
    trial_usage: str = "free"  # usage during a trial: free | billed (the plan's choice)
    paused_at: datetime | None = None
    pause_behavior: str | None = None  # void | keep_as_draft
    resumes_at: datetime | None = None
    current_period_paused_s: int = 0  # time paused within the current period: not paid for
    current_period_paid: int | None = None  # the flat fee the rest of the period was paid at (None: the price)
    pending_change: dict | None = None  # TERMS applied at the end of the current period
    pending_prorations: tuple[Line, ...] = ()  # lines waiting for the next invoice
    # The discounts and tax rates of its account's next invoice (billing_adjustments, migration 0020),
    # read with its state: ``adjustments.apply`` applies them where every bill is written.
    adjustments: dict | None = None

    @classmethod
    def of(cls, row: dict) -> "Subscription":
        """From a row that names every field (``engine.sql``'s ``billing_state``, ``invoicing.sql``'s state),
        its plan price in the account's currency (``currency_prices.in_currency``: the row's
        ``account_currency`` and the plan's ``amounts``), the price every bill of it charges."""
        values = {name: row[name] for name in cls.__dataclass_fields__}
        if row.get("account_currency"):
            values.update(currency_prices.in_currency(row, row["account_currency"]))
        ids = {"id": str(row["id"]), "account_id": str(row["account_id"]), "plan_id": str(row["plan_id"])}
        prorations = tuple(_line_of(item) for item in row["pending_prorations"] or ())
        return cls(**{**values, **ids, "pending_prorations": prorations})

    @property
    def next_billing_at(self) -> datetime | None:
        """When the daily run next bills it: the end of its period (or trial), or a paused one's resume date."""
        return self.resumes_at if self.status == "paused" else self.current_period_end

    @property
    def trialing(self) -> bool:
        return self.status == "trialing"

    @property
    def paid_length(self) -> timedelta:
        """The time the current period's flat fee paid for: its length less any time paused in it."""
        return self.current_period_end - self.current_period_start - timedelta(seconds=self.current_period_paused_s)

    @property
    def paid_fee(self) -> int:
        """The flat fee (price x quantity) the rest of the current period was paid at: what unused time is
        credited at. A change with proration pays the rest at the new terms; one without does not."""
        return self.amount * self.quantity if self.current_period_paid is None else self.current_period_paid

    def terms(self) -> dict:
        return {name: getattr(self, name) for name in TERMS}


@dataclass(frozen=True)
class Bill:
    """One billing instant of one subscription: the invoice (if any) and the subscription after it."""

    subscription: Subscription
    reason: str  # subscription_create | subscription_cycle | subscription_update | subscription_cancel
    boundary: datetime  # the instant billed: one charge per account and boundary
    period_start: datetime  # the invoice's period
    period_end: datetime
    lines: tuple[Line, ...]
    collect: bool  # open a payment attempt (an ACTIVE account with something to pay)
    then: Subscription | None = None  # the subscription as it goes on (None: unchanged, or it ends)
    ends: bool = False  # the subscription ends at ``boundary``
    draft: bool = False  # a draft invoice: no number, no charge, no payment until finalized
    auto_finalize_at: datetime | None = None  # a held draft: finalized then (None: by the tenant only)
    usage: tuple | None = None  # (usage prices, from, to): the metered usage the bill prices
    consumes: tuple[str, ...] = ()  # the discounts its invoice consumes (``adjustments.apply``)

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
    def description(self) -> str:
        kind = {"subscription_update": "Prorations", "subscription_cancel": "Final invoice"}.get(self.reason, "Invoice")
        return f"{kind} for {self.period_start:%Y-%m-%d} to {self.period_end:%Y-%m-%d}"

    def held(self, until: datetime) -> "Bill":
        """This bill as a draft finalized at ``until`` (a tenant's grace period): nothing is charged or
        collected before then, and its usage is priced again then (``usage_terms``)."""
        return replace(self, draft=True, collect=False, auto_finalize_at=until)

    @property
    def opens_period(self) -> bool:
        """The bill invoices a new billing period: a first or renewal invoice, or a change that starts a
        new period (a new interval, a trial's end): what consumes a repeating discount."""
        if self.reason in _PERIOD_REASONS:
            return True
        then = self.then
        return then is not None and then.current_period_start != self.subscription.current_period_start

    @property
    def usage_terms(self) -> dict | None:
        """What a held draft's usage lines are priced from when it is finalized (late usage counts)."""
        if self.usage is None or self.auto_finalize_at is None:
            return None
        prices, from_at, to_at = self.usage
        return {"prices": list(prices), "from": from_at.isoformat(), "to": to_at.isoformat()}


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


def first(sub: Subscription, account_status: str) -> Bill | None:
    """The first period's plan price, whenever the first bill is written: the anchor fixes the period.
    None for a subscription that started with a trial: its first paid period is billed at trial end."""
    if sub.trial_end is not None:
        return None
    start = sub.billing_anchor
    end = period_end(sub, start)
    lines = (*sub.pending_prorations, flat_fee(sub))
    then = replace(sub, pending_prorations=()) if sub.pending_prorations else None
    return Bill(sub, "subscription_create", start, start, end, lines, collects(account_status, lines), then=then)


def renewal(sub: Subscription, account_status: str, start: datetime, usage_totals: dict) -> Bill:
    """At a period boundary: the closed period's usage on the terms it was used under, then the new
    period in advance on the terms from here (a scheduled change applies now; a trial ends)."""
    terms = _terms_from(sub, start)
    end = period_end(terms, start)
    window = usage_window(sub, start)
    usage = usage_charges.lines(sub.usage_prices, usage_totals, *window) if _bills_usage(sub) else []
    fee = flat_fee(terms)
    lines = (*sub.pending_prorations, fee, *usage)
    then = replace(
        terms,
        current_period_start=start,
        current_period_end=end,
        current_period_paused_s=0,
        current_period_paid=fee.amount,
    )
    priced = (tuple(sub.usage_prices), *window) if usage else None
    collect = collects(account_status, lines)
    return Bill(sub, "subscription_cycle", start, start, end, lines, collect, then, usage=priced)


def final(
    sub: Subscription,
    account_status: str,
    ends_at: datetime,
    usage_totals: dict,
    *,
    credit: tuple = (),
    usage_until: datetime | None = None,
) -> Bill:
    """The last bill: usage since the current period began, no flat fee, and what ``credit``s the
    unused time if the cancel prorates (``changes.unused``); no invoice with nothing on it.

    ``usage_totals`` covers ``usage_window`` (with ``ending_now`` for a cancel now), which ends at
    ``usage_until`` if not at ``ends_at`` (a held draft prices that window again). An
    INACTIVE account's billing has stopped (its open invoices are uncollectible): it ends
    without a final invoice.
    """
    usage = usage_charges.lines(sub.usage_prices, usage_totals, sub.current_period_start, ends_at)
    usage = usage if _bills_usage(sub) and any(line.quantity for line in usage) else []
    lines = (*sub.pending_prorations, *credit, *usage)
    lines = lines if account_status != "INACTIVE" and any(line.amount or line.quantity for line in lines) else ()
    start = min(sub.current_period_start, ends_at)
    priced = (tuple(sub.usage_prices), sub.current_period_start, usage_until or ends_at) if usage else None
    collect = collects(account_status, lines)
    return Bill(sub, "subscription_cancel", ends_at, start, ends_at, lines, collect, ends=True, usage=priced)


def flat_fee(sub: Subscription) -> Line:
    """The plan price times the quantity, for the period the bill covers."""
    return Line(
        "subscription", f"{sub.plan_name} ({sub.plan_code})", sub.quantity, sub.amount, sub.amount * sub.quantity
    )


def line_json(line: Line) -> dict:
    """A line as ``pending_prorations`` stores it (``Subscription.of`` reads it back)."""
    return asdict(line)


def _line_of(item: dict) -> Line:
    stamps = {
        k: datetime.fromisoformat(item[k].replace("Z", "+00:00")) for k in ("period_start", "period_end") if item[k]
    }
    return Line(**{**item, **stamps})


def _terms_from(sub: Subscription, start: datetime) -> Subscription:
    """The subscription from boundary ``start``: its scheduled change applied (a new interval starts
    a new anchor there), its trial over; the change and the waiting prorations consumed."""
    changes = {"pending_change": None, "pending_prorations": (), **(sub.pending_change or {})}
    if sub.trialing:
        changes["status"] = "active"
    interval = (changes.get("interval", sub.interval), changes.get("interval_count", sub.interval_count))
    if interval != (sub.interval, sub.interval_count):
        changes["billing_anchor"] = start
    return replace(sub, **changes)  # one copy (the round's hot path: a copy is 25 fields)


def _bills_usage(sub: Subscription) -> bool:
    return not (sub.trialing and sub.trial_usage == "free")


def collects(account_status: str, lines) -> bool:
    """Open a payment attempt: an ACTIVE account with something to pay (what is left once its credit
    balance is used is known when the invoice is written). A PENDING account (in dunning) is
    invoiced only: its retry collects every open invoice."""
    return account_status == "ACTIVE" and total_of(lines) > 0
