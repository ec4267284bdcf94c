"""Our minor units (ISO 4217) and Stripe's agree for most currencies, not all: the one conversion."""

import pytest

from chalicelib.billing import payments
from chalicelib.billing.stripe_gateway import from_stripe, to_stripe


@pytest.mark.parametrize(
    "amount,currency,at_stripe",
    [
        (4900, "USD", 4900),  # two decimals both sides
        (500, "JPY", 500),  # zero-decimal both sides
        (12300, "MGA", 123),  # ISO: 2 decimals; Stripe: zero-decimal
        (500, "ISK", 50000),  # ISO: 0 decimals; Stripe: sent as two-decimal
        (12340, "KWD", 12340),  # three decimals, ending in 0 as Stripe requires
    ],
)
def test_amounts_cross_to_stripe_and_back_exactly(amount, currency, at_stripe):
    assert to_stripe(amount, currency) == at_stripe
    assert from_stripe(at_stripe, currency.lower()) == amount


@pytest.mark.parametrize("amount,currency", [(12345, "MGA"), (12345, "KWD"), (1001, "BHD")])
def test_an_amount_stripe_cannot_take_exactly_is_refused_never_rounded(amount, currency):
    with pytest.raises(payments.RequestRefused):
        to_stripe(amount, currency)
