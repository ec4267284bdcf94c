"""Discounts and taxes on an invoice's lines (``adjustments.apply``): the figures of docs/pricing_adjustments.md."""

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.billing import adjustments
from chalicelib.billing.lines import Line, total_of

VAT19_INCLUSIVE = {"id": "vat", "display_name": "VAT", "percentage": "19", "inclusive": True}
SALES_TAX = {"id": "st", "display_name": "Sales tax", "percentage": "7.25", "inclusive": False}
STATE = {"id": "state", "display_name": "State", "percentage": "6", "inclusive": False}
COUNTY = {"id": "county", "display_name": "County", "percentage": "2.5", "inclusive": False}


def named(rate: dict) -> dict:
    """What a tax amount shows of its rate."""
    return {"display_name": rate["display_name"], "percentage": rate["percentage"]}


def fee(amount: int, kind: str = "subscription") -> Line:
    return Line(kind, "Pro (pro)", 1, amount, amount)


def discount(ident="d", *, percent_off=None, amount_off=None, duration="forever", periods_left=None, **extra):
    return {
        "id": ident,
        "scope": extra.pop("scope", "subscription"),
        "coupon": "c",
        "name": extra.pop("name", "Launch"),
        "percent_off": percent_off,
        "amount_off": amount_off,
        "currency": "USD" if amount_off is not None else None,
        "duration": duration,
        "periods_left": periods_left,
        "plans": extra.pop("plans", None),
    }


def terms(*discounts, account=(), plans=None) -> dict:
    return {"tax_rates": {"account": list(account), "plans": plans or {}}, "discounts": list(discounts)}


def test_an_inclusive_19_percent_vat_splits_1000_into_840_net_and_160_tax():
    done = adjustments.apply([fee(1000)], terms(account=[VAT19_INCLUSIVE]), "USD")

    (line,) = done.lines  # inclusive tax is in the price: no tax line
    assert line.amount == 1000
    assert line.tax_amounts == (
        {"tax_rate": "vat", "amount": 160, "inclusive": True, "taxable_amount": 840, **named(VAT19_INCLUSIVE)},
    )
    sums = adjustments.summary(done.lines)
    assert (sums["subtotal"], sums["tax"], total_of(done.lines)) == (1000, 160, 1000)


def test_an_exclusive_tax_is_computed_per_line_half_to_even_and_added_as_its_own_line():
    # 7.25% of 1000 = 72.5 -> 72 (even); of 1400 = 101.5 -> 102 (even): per line, 174 (on 2400 it would be 174.0)
    lines = [fee(1000), Line("usage", "api_calls", 700, 2, 1400, metric="api_calls")]

    done = adjustments.apply(lines, terms(account=[SALES_TAX]), "USD")

    assert [item["amount"] for line in done.lines[:2] for item in line.tax_amounts] == [72, 102]
    assert done.lines[2] == Line("tax", "Sales tax (7.25%)", 1, 174, 174, tax_rate_id="st")
    assert total_of(done.lines) == 2574


def test_several_exclusive_rates_each_get_their_own_tax_line():
    done = adjustments.apply([fee(4900)], terms(account=[STATE, COUNTY]), "USD")

    # 6% of 4900 = 294; 2.5% of 4900 = 122.5 -> 122 (even)
    assert [(line.kind, line.amount) for line in done.lines] == [("subscription", 4900), ("tax", 294), ("tax", 122)]
    assert adjustments.summary(done.lines)["total_tax_amounts"] == [
        {"tax_rate": "state", "amount": 294, "inclusive": False, "taxable_amount": 4900, **named(STATE)},
        {"tax_rate": "county", "amount": 122, "inclusive": False, "taxable_amount": 4900, **named(COUNTY)},
    ]


def test_a_plan_prices_rates_replace_the_accounts_defaults_but_invoice_items_keep_the_accounts():
    lines = [fee(1000), fee(500, "invoice_item")]

    done = adjustments.apply(lines, terms(account=[STATE], plans={"p": [SALES_TAX]}), "USD", plan_id="p")

    assert [item["tax_rate"] for line in done.lines[:2] for item in line.tax_amounts] == ["st", "state"]


def test_a_percent_discount_is_rounded_half_to_even_per_line_and_shown_as_its_own_line():
    # 12.5% of 4900 = 612.5 -> 612 (even); of 100 = 12.5 -> 12
    lines = [fee(4900), Line("usage", "api_calls", 50, 2, 100, metric="api_calls")]

    done = adjustments.apply(lines, terms(discount(percent_off="12.5")), "USD", plan_code="pro")

    assert [line.discount_amounts for line in done.lines[:2]] == [
        ({"discount": "d", "amount": 612},),
        ({"discount": "d", "amount": 12},),
    ]
    assert done.lines[2] == Line("discount", "Launch (12.5% off)", 1, -624, -624, discount_id="d")
    assert total_of(done.lines) == 5000 - 624


def test_a_fixed_discount_is_taken_in_line_order_and_never_makes_a_line_or_the_invoice_negative():
    lines = [fee(300), Line("usage", "api_calls", 100, 2, 200, metric="api_calls")]

    done = adjustments.apply(lines, terms(discount(amount_off=1000)), "USD")

    assert [line.discount_amounts[0]["amount"] for line in done.lines[:2]] == [300, 200]
    assert total_of(done.lines) == 0


def test_a_discount_skips_credits_and_is_capped_at_what_the_invoice_charges():
    lines = [Line("proration", "unused", 1, -800, -800), fee(1000)]

    done = adjustments.apply(lines, terms(discount(percent_off="50")), "USD")

    assert done.lines[0].discount_amounts == ()
    assert done.lines[1].discount_amounts == ({"discount": "d", "amount": 200},)  # 500, capped at 1000 - 800
    assert total_of(done.lines) == 0


def test_an_exclusive_tax_with_a_fixed_amount_coupon_is_charged_on_the_discounted_amount():
    # docs/pricing_adjustments.md, example 3: 4900 - 1000 off = 3900; 19% of 3900 = 741
    rate = {"id": "vat", "display_name": "VAT", "percentage": "19", "inclusive": False}

    done = adjustments.apply([fee(4900)], terms(discount(amount_off=1000), account=[rate]), "USD")

    assert [(line.kind, line.amount) for line in done.lines] == [
        ("subscription", 4900),
        ("discount", -1000),
        ("tax", 741),
    ]
    assert adjustments.summary(done.lines) == {
        "subtotal": 4900,
        "total_discount": 1000,
        "tax": 741,
        "total_discount_amounts": [{"discount": "d", "amount": 1000}],
        "total_tax_amounts": [
            {"tax_rate": "vat", "amount": 741, "inclusive": False, "taxable_amount": 3900, **named(rate)}
        ],
    }
    assert total_of(done.lines) == 4641


def test_a_coupon_for_other_plans_or_another_currency_discounts_nothing():
    for offer, currency in ((discount(percent_off="20", plans=["team"]), "USD"), (discount(amount_off=100), "EUR")):
        done = adjustments.apply([fee(1000)], terms(offer), currency, plan_code="pro")
        assert [line.kind for line in done.lines] == ["subscription"]
        assert done.consumed == ()


def test_a_subscriptions_discount_comes_before_the_accounts_and_items_take_only_the_accounts():
    lines = [fee(1000), fee(1000, "invoice_item")]
    offers = (discount("sub", percent_off="20"), discount("acct", percent_off="10", scope="account"))

    done = adjustments.apply(lines, terms(*offers), "USD")

    assert [line.discount_amounts[0]["discount"] for line in done.lines[:2]] == ["sub", "acct"]


def test_a_repeating_discount_is_consumed_by_invoices_that_open_a_period_and_a_once_one_by_what_it_discounts():
    offers = (discount("rep", percent_off="20", duration="repeating", periods_left=2),)

    assert adjustments.apply([fee(1000)], terms(*offers), "USD", opens_period=True).consumed == ("rep",)
    assert adjustments.apply([fee(1000)], terms(*offers), "USD").consumed == ()
    spent = discount("rep", percent_off="20", duration="repeating", periods_left=0)
    assert [line.kind for line in adjustments.apply([fee(1000)], terms(spent), "USD").lines] == ["subscription"]
    once = discount("once", amount_off=100, duration="once", periods_left=1)
    assert adjustments.apply([fee(1000)], terms(once), "USD").consumed == ("once",)
    assert adjustments.apply([fee(0)], terms(once), "USD").consumed == ()


def test_applying_again_to_applied_lines_changes_nothing():
    first = adjustments.apply([fee(4900)], terms(discount(percent_off="20"), account=[SALES_TAX]), "USD")

    again = adjustments.apply(first.lines, terms(discount(percent_off="20"), account=[SALES_TAX]), "USD")

    assert again.lines == first.lines


@given(
    amounts=st.lists(st.integers(-50_000, 50_000), min_size=1, max_size=6),
    percent=st.sampled_from(["5", "12.5", "33.3333", "100"]),
    amount_off=st.integers(1, 100_000),
    rate=st.sampled_from(["0", "7.25", "19", "20"]),
    inclusive=st.booleans(),
    fixed=st.booleans(),
)
def test_the_total_is_the_sum_of_the_lines_and_no_discount_makes_a_line_or_the_invoice_negative(
    amounts, percent, amount_off, rate, inclusive, fixed
):
    lines = [Line("proration" if a < 0 else "subscription", "x", 1, a, a) for a in amounts]
    offer = discount(amount_off=amount_off) if fixed else discount(percent_off=percent)
    tax = {"id": "t", "display_name": "T", "percentage": rate, "inclusive": inclusive}

    done = adjustments.apply(lines, terms(offer, account=[tax]), "USD")

    sums = adjustments.summary(done.lines)
    exclusive = 0 if inclusive else sums["tax"]
    assert total_of(done.lines) == sums["subtotal"] - sums["total_discount"] + exclusive
    for line in done.lines[: len(lines)]:
        assert line.amount - sum(d["amount"] for d in line.discount_amounts) >= min(line.amount, 0)
    assert sums["subtotal"] - sums["total_discount"] >= min(sums["subtotal"], 0)
