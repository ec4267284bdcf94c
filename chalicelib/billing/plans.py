"""Plans: a tenant's price list. A code may have one price per interval (pro monthly, pro yearly)."""

import json

from chalicelib import audit, errors, pagination
from chalicelib.db import errors as db_errors
from chalicelib.db.queries import load

Q = load("plans")


def create(tx, request) -> tuple[int, dict]:
    body = request.body
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
