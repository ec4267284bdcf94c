"""ISO 4217 currency codes and each currency's minor-unit exponent.

This module owns the answer to "is this a currency?" and "how many decimal places do its
minor units have?" (USD 2: 4900 is 49.00; JPY 0: 4900 is 4900; BHD 3: 4900 is 4.900), and
so how an amount is shown to people (``format_amount``: the one formatting of money, used by
the PDF, the hosted page and the emails). Amounts are integer minor units everywhere, so the
exponent is an ``int`` and nothing here is a float.

The table is ISO 4217 list one (the "A.1" table of current codes) as published after the
2025 amendments: XCG replaced ANG, ZWG replaced ZWL, and HRK, SLL and CUC are withdrawn.
BGN is still listed: Bulgaria adopted the euro on 1 January 2026, and ISO drops a replaced
code some time after the changeover; remove it here when list one does.

Included on purpose: the national fund and indexed units that carry a minor unit in list
one (BOV, CHE, CHW, CLF, COU, MXV, USN, UYI, UYW), since contracts are priced in them
(CLF and UYW have 4 decimal places), and the currencies of monetary unions (XAF, XCD, XCG,
XOF, XPF).

Excluded on purpose, although list one has them, because nobody is billed in them and
most have no minor unit at all ("N.A."), so an amount in minor units means nothing:

- precious metals: XAU (gold), XAG (silver), XPT (platinum), XPD (palladium);
- bond-market units: XBA, XBB, XBC, XBD;
- supranational units of account: XDR (IMF special drawing right), XSU (SUCRE),
  XUA (ADB unit of account), XAD (Arab accounting dinar);
- codes reserved for testing and for "no currency": XTS, XXX.
"""

from collections.abc import Mapping
from types import MappingProxyType

# exponent -> the codes whose minor unit is 10**-exponent of the major unit
_CODES_BY_EXPONENT = {
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
    2: (
        "AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD"
        " CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL"
        " GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR"
        " LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD"
        " PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC"
        " SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW"
        " ZWG"
    ),
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW",
}

EXPONENTS: Mapping[str, int] = MappingProxyType(
    {code: places for places, codes in _CODES_BY_EXPONENT.items() for code in codes.split()}
)


class UnknownCurrency(LookupError):
    """A code that is not in the table: not ISO 4217, withdrawn, or one of the excluded units."""


def is_known(code) -> bool:
    """True for an ISO 4217 code in the table, exactly as written (upper case, three letters)."""
    return isinstance(code, str) and code in EXPONENTS


def exponent(code: str) -> int:
    """Decimal places of ``code``'s minor unit (USD 2, JPY 0, BHD 3); UnknownCurrency otherwise."""
    try:
        return EXPONENTS[code]
    except (KeyError, TypeError):
        shown = repr(code) if isinstance(code, str) and len(code) <= 16 else f"a {type(code).__name__}"
        raise UnknownCurrency(f"{shown} is not an ISO 4217 currency code") from None


def format_amount(amount: int, currency: str) -> str:
    """``amount`` minor units of ``currency`` for people: ``USD 1,234.56``, ``-USD 12.00``, ``JPY 4,900``,
    ``KWD 1.234``: as many decimal places as the currency's ISO 4217 exponent, none for JPY.

    Exact: the exponent splits the integer with ``divmod``; no rounding, no float. TypeError for
    anything but an int; UnknownCurrency for a code that is not in the table.
    """
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise TypeError(f"an amount is an int of minor units, not a {type(amount).__name__}")
    places = exponent(currency)
    major, minor = divmod(abs(amount), 10**places)
    fraction = f".{minor:0{places}d}" if places else ""
    return f"{'-' if amount < 0 else ''}{currency} {major:,}{fraction}"
