"""The SQL aggregation of metered usage (``billing_usage``, migration 0018) equals a plain-Python reading
of the rules over the same events, and what it answers prices to whole, non-negative lines.

The reference below is written from the rules (docs/pricing.md), not from the SQL: an event counts when
its metric is the price's, it falls in [from, to) and its properties match the filters; its value is the
quantity or the field when a JSON integer >= 0 or a string of digits (at most 15 either way); groups are
the text of a scalar ``group_by`` property.
"""

import json
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.billing import usage_charges
from chalicelib.db import transaction

FROM = datetime(2027, 1, 1, tzinfo=UTC)
TO = datetime(2027, 1, 11, tzinfo=UTC)
MICRO = timedelta(microseconds=1)

property_values = st.one_of(
    st.integers(0, 50),
    st.sampled_from(["eu", "us", "7", "007", "1e3", -1, 1.5, True, None, {"a": 1}, 10**15, "1000000000000000"]),
)
events = st.lists(
    st.fixed_dictionaries(
        {
            "metric": st.sampled_from(["m", "m", "m", "n"]),
            "quantity": st.integers(0, 1000),
            # A few shared instants (the window's edges among them), so ties happen; else any second around it.
            "at": st.sampled_from([FROM - timedelta(days=1), FROM, FROM + timedelta(days=3), TO - MICRO, TO])
            | st.integers(-172800, 950400).map(lambda s: FROM + timedelta(seconds=s)),
            "properties": st.fixed_dictionaries(
                {}, optional={"region": property_values, "n": property_values, "user": property_values}
            ),
        }
    ),
    min_size=4,
    max_size=30,
)
filters = st.one_of(
    st.none(),
    st.none(),
    st.dictionaries(
        st.sampled_from(["region", "user"]), st.sampled_from(["eu", "us", "7"]) | st.just(["eu", "7"]), min_size=1
    ),
)
aggregated = st.fixed_dictionaries(
    {
        "metric": st.sampled_from(["m", "m", "n"]),
        "aggregation": st.sampled_from(usage_charges.AGGREGATIONS),
        "field": st.sampled_from([None, "n", "user"]),
        "filters": filters,
        "group_by": st.sampled_from([None, "region", "user"]),
        "unit_amount": st.integers(0, 100),
    }
)
percentage = st.fixed_dictionaries(
    {
        "metric": st.sampled_from(["m", "n"]),
        "aggregation": st.just("sum"),
        "model": st.just("percentage"),
        "field": st.sampled_from(["n", "user"]),
        "filters": filters,
        "group_by": st.sampled_from([None, "region"]),
        "rate": st.sampled_from(["0", "2.5", "0.125", "33.333333", "100"]),
        "fixed_amount": st.integers(0, 40),
        "min_amount": st.sampled_from([None, 0, 10]),
        "max_amount": st.sampled_from([None, 50, 500]),
    }
)


def _clean(price: dict) -> dict:
    price = {k: v for k, v in price.items() if v is not None}
    if price.get("min_amount", 0) > price.get("max_amount", 10**9):
        price["min_amount"] = price["max_amount"]
    if price["aggregation"] == "unique_count" and "field" not in price:
        price["field"] = "user"
    return price


prices = st.lists(st.one_of(aggregated, percentage).map(_clean), min_size=1, max_size=4)


def _text(properties: dict, name: str | None):
    value = properties.get(name) if name else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, (int, float, str)) else None


def _value(event: dict, field: str | None):
    if field is None:
        return event["quantity"]
    value = event["properties"].get(field)
    if type(value) is int and 0 <= value < 10**15:
        return value
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 15 else None


def _matches(properties: dict, wanted: dict | None) -> bool:
    def one(name, want):
        text = _text(properties, name)
        return text is not None and (text in want if isinstance(want, list) else text == want)

    return all(one(name, want) for name, want in (wanted or {}).items())


def _key(event: dict):
    return event["at"], event["event_id"].encode()


def _reference(events: list[dict], price: dict) -> dict:
    """Each group's exact quantity (and a percentage's exact fees), by group."""
    field, group_by = price.get("field"), price.get("group_by")
    mine = [e for e in events if e["metric"] == price["metric"] and _matches(e["properties"], price.get("filters"))]
    inside = [e for e in mine if FROM <= e["at"] < TO]
    groups: dict = {}
    for event in inside:
        groups.setdefault(_text(event["properties"], group_by), []).append(event)
    if price["aggregation"] == "weighted_sum":
        return _gauge(mine, groups, field, group_by)
    return {group: _aggregate(members, price) for group, members in groups.items()}


def _aggregate(members: list[dict], price: dict):
    field, aggregation = price.get("field"), price["aggregation"]
    valued = [e for e in members if _value(e, field) is not None]
    values = [_value(e, field) for e in valued]
    if price.get("model") == "percentage":
        fees = [_fee(v, price) for v in values]
        return sum(values), sum(fees, Fraction(0)) / 100
    if aggregation == "count":
        return len([e for e in members if field is None or _text(e["properties"], field) is not None])
    if aggregation == "unique_count":
        return len({_text(e["properties"], field) for e in members} - {None})
    if aggregation == "latest":
        return _value(max(valued, key=_key), field) if valued else 0
    return max(values, default=0) if aggregation == "max" else sum(values)


def _fee(value: int, price: dict) -> Fraction:
    fee = value * Fraction(price["rate"]) + 100 * price.get("fixed_amount", 0)
    if "min_amount" in price:
        fee = max(fee, 100 * price["min_amount"])
    if "max_amount" in price:
        fee = min(fee, 100 * price["max_amount"])
    return fee


def _gauge(mine: list[dict], groups: dict, field, group_by) -> dict:
    result = {}
    before = {}
    for event in sorted((e for e in mine if e["at"] < FROM and _value(e, field) is not None), key=_key):
        before[_text(event["properties"], group_by)] = _value(event, field)
    for group in set(groups) | set(before):
        readings = [(FROM, before.get(group, 0))] + [
            (e["at"], _value(e, field)) for e in sorted(groups.get(group, []), key=_key) if _value(e, field) is not None
        ]
        ends = [at for at, _level in readings[1:]] + [TO]
        weighted = sum(level * ((end - at) // MICRO) for (at, level), end in zip(readings, ends, strict=True))
        result[group] = Fraction(weighted, (TO - FROM) // MICRO)
    return result


def _from_sql(groups: list[dict], price: dict) -> dict:
    if price.get("model") == "percentage":
        fees = lambda g: Fraction(g["fees_numerator"]) / int(g["fees_denominator"])  # noqa: E731
        return {g["group"]: (g["quantity"], fees(g)) for g in groups}
    return {g["group"]: usage_charges.quantity(g) for g in groups}


def _account(tx) -> str:
    return str(tx.scalar("INSERT INTO accounts (email, name, currency) VALUES ('p@x.test', 'P', 'USD') RETURNING id"))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=events, prices=prices)
def test_sql_aggregation_equals_the_python_reference_and_prices_whole_non_negative_lines(make_tenant, events, prices):
    tenant = make_tenant() if not hasattr(make_tenant, "tenant") else make_tenant.tenant
    make_tenant.tenant = tenant  # one tenant (one database) for every example, a fresh account each
    with transaction(tenant_id=tenant) as tx:
        account = _account(tx)
        for n, event in enumerate(events):
            event["event_id"] = f"{account}-{chr(97 + n * 7 % 26)}{n}"  # ids not in insertion order
            tx.run(
                "INSERT INTO usage_events (event_id, account_id, metric, quantity, occurred_at, properties)"
                " VALUES (:e, :a, :m, :q, :t, CAST(:p AS jsonb))",
                e=event["event_id"],
                a=account,
                m=event["metric"],
                q=event["quantity"],
                t=event["at"],
                p=json.dumps(event["properties"]),
            )
        usage = tx.scalar(
            "SELECT billing_usage(:a, :f, :t, CAST(:p AS jsonb))", a=account, f=FROM, t=TO, p=json.dumps(prices)
        )
    assert len(usage) == len(prices)
    for groups, price in zip(usage, prices, strict=True):
        assert _from_sql(groups, price) == _reference(events, price), price
    for line in usage_charges.lines(prices, usage):
        assert isinstance(line.amount, int) and isinstance(line.quantity, int)
        assert line.amount >= 0 and line.quantity >= 0
