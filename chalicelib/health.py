"""Liveness and readiness: can we reach the database, and which migration is it on."""

from chalicelib.db import errors, transaction
from chalicelib.db.queries import load


def check() -> dict:
    try:
        with transaction() as tx:
            version = tx.scalar(load("health")["migration_version"])
    except errors.DatabaseError as exc:
        return {"status": "degraded", "database": {"reachable": False, "error": type(exc).__name__}}
    return {"status": "ok", "database": {"reachable": True, "migration_version": version}}
