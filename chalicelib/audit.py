"""The append-only audit trail: who did what to which entity, in the tenant's scope."""

import json

from chalicelib import encoding
from chalicelib.db.queries import load

Q = load("audit")


def record(tx, actor, action: str, entity_type: str, entity_id, data: dict | None = None) -> None:
    """Append one row. ``actor`` is a Principal or a system name such as ``"rebill"``."""
    who = actor_name(actor)
    tx.run(
        Q["record"],
        actor=who,
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id) if entity_id is not None else None,
        data=json.dumps(data or {}, default=str),
    )


def record_many(tx, actor, rows: list[tuple[str, str, object, dict]]) -> None:
    """Append ``(action, entity_type, entity_id, data)`` rows by one actor in one statement (a billing round's)."""
    if rows:
        values = [
            {"actor": actor_name(actor), "action": a, "entity_type": t, "entity_id": str(i), "data": d or {}}
            for a, t, i, d in rows
        ]
        tx.run(Q["record_many"], rows=encoding.dumps(values))


def actor_name(actor) -> str:
    if isinstance(actor, str):
        return actor
    return f"client:{actor.client_id}" if getattr(actor, "client_id", None) else f"user:{actor.user_id}"
