"""Plans: a tenant's price list. A code may have one price per interval (pro monthly, pro yearly)."""

import json

from chalicelib import audit, errors, pagination
from chalicelib.db import errors as db_errors
from chalicelib.db.queries import load

Q = load("plans")


def _check_tiers(usage_prices: list[dict]) -> None:
    """Graduated tiers must rise strictly and end with an open tier, or units go unpriced."""
    details = []
    for i, usage_price in enumerate(usage_prices):
        tiers = usage_price.get("tiers")
        if not tiers:
            continue
        bounds = [t["up_to"] for t in tiers]
        if bounds[-1] is not None or None in bounds[:-1] or bounds[:-1] != sorted(set(bounds[:-1])):
            details.append(
                {"field": f"usage_prices.{i}.tiers", "issue": "up_to must rise strictly and only the last may be null"}
            )
    if details:
        raise errors.InvalidRequest("invalid tiers", details=details)


def create(tx, request) -> tuple[int, dict]:
    body = request.body
    _check_tiers(body.get("usage_prices", []))
    try:
        plan = tx.one(
            Q["create"],
            code=body["code"],
            name=body["name"],
            interval=body["interval"],
            interval_count=body.get("interval_count", 1),
            amount=body["amount"],
            currency=body["currency"],
            features=json.dumps(body.get("features", {})),
            limits=json.dumps(body.get("limits", {})),
            usage_prices=json.dumps(body.get("usage_prices", [])),
        )
    except db_errors.UniqueViolation as exc:
        raise errors.Conflict(
            f"plan {body['code']!r} already has a {body['interval']} price", code="plan_exists"
        ) from exc
    audit.record(tx, request.principal, "plan.created", "plan", plan["id"], {"code": plan["code"]})
    return 201, plan


def list_page(tx, page: pagination.PageRequest) -> dict:
    pagination.check_cursor(tx, Q["exists"], page, "plan")
    rows = tx.all(Q["list"], after=page.starting_after, limit=page.limit + 1)
    return pagination.page(rows, page, "/v1/plans")


def find(tx, code: str, interval: str | None = None) -> dict | None:
    return tx.one(Q["find_for_cycle"], code=code, interval=interval)
