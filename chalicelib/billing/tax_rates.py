"""Tax rates: a tenant's rates, applied to invoice lines by ``adjustments`` (migration 0020).

A rate's ``percentage`` is exact (a decimal string, at most 4 decimals, stored as
``numeric(7,4)``; ``basis_points`` is accepted as another way to write it: 1900 = "19"), and
``inclusive`` says whether prices contain it. Both are fixed once the rate exists, as at
Stripe: a rate that changes is a new rate. ``display_name``, ``description`` and ``active``
change; an inactive rate is no longer applied to new invoices (the invoices it taxed keep it).
Rates reach invoices as defaults: an account's ``default_tax_rates`` and a plan price's
``tax_rates`` (``check_ids`` validates both).
"""

from dataclasses import dataclass
from fractions import Fraction

from chalicelib import audit, encoding, errors
from chalicelib.db import paging
from chalicelib.db.queries import load

Q = load("tax_rates")
MAX_DEFAULTS = 5  # rates per account or plan price (Stripe allows 5 per line)


@dataclass(frozen=True)
class NewTaxRate:
    display_name: str
    percentage: str  # exact decimal string, 0-100, at most 4 decimals
    inclusive: bool
    jurisdiction: str | None = None
    country: str | None = None
    description: str | None = None
    active: bool = True

    @classmethod
    def of(cls, body: dict) -> "NewTaxRate":
        """From the API's body (``tax_rate_create``): ``percentage`` or ``basis_points``, one of them."""
        if ("percentage" in body) == ("basis_points" in body):
            issue = "give percentage (an exact decimal string) or basis_points, one of them"
            raise errors.InvalidRequest("invalid tax rate", details=[{"field": "percentage", "issue": issue}])
        exact = Fraction(body["percentage"]) if "percentage" in body else Fraction(body["basis_points"], 100)
        fields = ("jurisdiction", "country", "description")
        return cls(
            body["display_name"],
            _decimal(exact),
            body["inclusive"],
            **{name: body.get(name) for name in fields},
            active=body.get("active", True),
        )


def _decimal(value: Fraction) -> str:
    """An exact percentage with at most 4 decimals as its shortest decimal string (19, 7.25)."""
    whole, rest = divmod(value.numerator * 10_000 // value.denominator, 10_000)
    return f"{whole}.{rest:04d}".rstrip("0").rstrip(".")


def create(tx, actor, command: NewTaxRate) -> dict:
    rate_id = tx.scalar(
        Q["create"],
        display_name=command.display_name,
        description=command.description,
        percentage=command.percentage,
        inclusive=command.inclusive,
        jurisdiction=command.jurisdiction,
        country=command.country,
        active=command.active,
    )
    audit.record(tx, actor, "tax_rate.created", "tax_rate", rate_id, {"percentage": command.percentage})
    return get(tx, rate_id)


def get(tx, rate_id: str) -> dict:
    rate = tx.one(Q["get"], id=rate_id)
    if rate is None:
        raise errors.NotFound("no such tax rate")
    return rate


def update(tx, actor, rate_id: str, body: dict) -> dict:
    """Change ``display_name``, ``description`` or ``active`` (``tax_rate_update``); nothing else changes."""
    changed = tx.scalar(
        Q["update"],
        id=rate_id,
        display_name=body.get("display_name"),
        set_description="description" in body,
        description=body.get("description"),
        active=body.get("active"),
    )
    if changed is None:
        raise errors.NotFound("no such tax rate")
    audit.record(tx, actor, "tax_rate.updated", "tax_rate", rate_id, {"fields": sorted(body)})
    return get(tx, rate_id)


def list_page(tx, page: paging.PageRequest, *, active: bool | None = None) -> dict:
    paging.check_cursor(tx, Q["exists"], page, "tax rate")
    rows = tx.all(Q["list"], active=active, after=page.starting_after, limit=page.limit + 1)
    return paging.page(rows, page, "/v1/tax_rates")


def check_ids(tx, ids: list[str], field_name: str) -> list[str]:
    """Rate ids (an account's defaults, a plan price's) that must all name this tenant's rates, each once:
    a 400 on ``field_name.N`` otherwise (another tenant's rate is no rate). Lower-cased, in their order
    (the account schema's fast validator has no uniqueItems)."""
    ids = [rate_id.lower() for rate_id in ids]
    found = {row["id"] for row in tx.all(Q["found"], ids=encoding.dumps(ids))} if ids else set()
    details = [
        {"field": f"{field_name}.{n}", "issue": "no such tax rate" if rate_id not in found else "named twice"}
        for n, rate_id in enumerate(ids)
        if rate_id not in found or rate_id in ids[:n]
    ]
    if details:
        raise errors.InvalidRequest("invalid tax rates", details=details)
    return ids
