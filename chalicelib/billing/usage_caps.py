"""Hard caps on metered usage: a plan's usage price may say ``"hard_cap": N``, and an event that would
take its billing period's aggregated quantity of the metric past N is rejected (``hard_cap_reached``)
while the rest of its batch is stored.

The aggregate is the invoice's own (``usage_charges.aggregate``: sum, count or max of the quantities),
over the period the event is billed in: the live subscription's current period (an
event stamped after its end, before the renewal has run, counts towards the next one), or the window
of a draft held for the tenant's grace period, capped by the prices it was held with. Events are
judged in batch order: one that does not fit is refused, a later smaller one may still fit.

Each window's aggregates are a running counter (``usage_counters``, migration 0015): made from the
events already stored in the window the first time a capped event falls in it, then kept by a trigger
on every insert into ``usage_events``. A batch makes, locks and reads the counters of its capped windows
in one statement, in one order (two batches of one window queue on its row until the first commits, and
never deadlock), then looks up which of its events are resends, so a batch costs two statements whatever
the period holds. Uncapped usage pays nothing.
"""

from datetime import UTC, datetime

from chalicelib import encoding
from chalicelib.billing import usage_charges
from chalicelib.db.queries import load

Q = load("usage_caps")
CODE = "hard_cap_reached"
_LATER = datetime.max.replace(tzinfo=UTC)  # the next period's end is not known before its renewal


def refused(tx, known: dict[str, dict], events: list[dict]) -> dict[int, str]:
    """Which of ``events`` (accepted so far, in batch order) a hard cap refuses: position -> reason.

    ``known`` is each account's billing window as ``usage.known_accounts`` reads it.
    """
    capped = {}
    for position, event in enumerate(events):
        window, prices = _period(known[event["account_id"]], _instant(event["timestamp"]))
        caps = [p for p in prices if p["metric"] == event["metric"] and p.get("hard_cap") is not None]
        if caps:
            capped[position] = (window, caps)
    if not capped:
        return {}
    totals = _counters(tx, sorted({(window, events[i]["metric"]) for i, (window, _caps) in capped.items()}))
    # After the lock: a resend committed by the batch we waited for is seen as stored.
    stored = {row[0] for row in tx.run(Q["stored"], ids=encoding.dumps([events[i]["event_id"] for i in capped]))}
    running: dict[tuple, int] = {}  # (window, metric, aggregation) -> the aggregate with this batch's events
    reasons = {}
    for position, (window, caps) in capped.items():
        event = events[position]
        if event["event_id"] in stored:  # a resend: a duplicate, it adds nothing
            continue
        keys = [(window, event["metric"], price["aggregation"]) for price in caps]
        after = [_with(_so_far(running, totals, key), key[2], event["quantity"]) for key in keys]
        over = [price for price, value in zip(caps, after, strict=True) if value > price["hard_cap"]]
        if over:
            reasons[position] = _reason(event["metric"], over[0])
        else:
            running.update(zip(keys, after, strict=True))
    return reasons


def _reason(metric: str, price: dict) -> str:
    return f"the plan's hard cap of {price['hard_cap']} ({price['aggregation']} of {metric}) for the period is reached"


def _period(account: dict, at: datetime) -> tuple[tuple, list]:
    """The window ``(account, from, to)`` the event at ``at`` is billed in, and the prices it is billed at."""
    for start, end, prices in account["held_windows"] or ():
        start, end = _instant(start), _instant(end)
        if start <= at < end:
            return (str(account["id"]), start, end), prices or []
    start, end = account["open_since"], account["period_end"]
    if start is None:  # no live subscription: judged rejected before, never capped here
        return (str(account["id"]), at, at), []
    if at >= end:
        start, end = end, _LATER
    return (str(account["id"]), start, end), account["usage_prices"] or []


def _counters(tx, keys: list[tuple]) -> dict[tuple, dict]:
    """The running totals of each ``(window, metric)``, ``{key: {"sum", "count", "max"}}``, locked until commit."""
    rows = [
        {"i": i, "account_id": window[0], "metric": metric, "from_at": window[1], "to_at": window[2]}
        for i, (window, metric) in enumerate(keys)
    ]
    return {keys[row["i"]]: row for row in tx.all(Q["counters"], windows=encoding.dumps(rows))}


def _so_far(running: dict, totals: dict, key: tuple) -> int:
    """The aggregate before this event: with the batch's earlier events, else as stored."""
    window, metric, aggregation = key
    return running[key] if key in running else usage_charges.aggregate(totals[(window, metric)], aggregation)


def _with(value: int, aggregation: str, quantity: int) -> int:
    """The aggregate with one more event of ``quantity``."""
    return {"sum": value + quantity, "count": value + 1, "max": max(value, quantity)}[aggregation]


def _instant(stamp) -> datetime:
    return stamp if isinstance(stamp, datetime) else datetime.fromisoformat(stamp.replace("Z", "+00:00"))
