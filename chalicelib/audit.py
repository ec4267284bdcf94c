"""The append-only audit trail: who did what to which entity, in the tenant's scope."""

import json

from chalicelib.db.queries import load

Q = load("audit")


def record(tx, actor, action: str, entity_type: str, entity_id, data: dict | None = None) -> None:
    """Append one row. ``actor`` is a Principal or a system name such as ``"rebill"``."""
    who = actor if isinstance(actor, str) else f"user:{actor.user_id}"
    tx.run(
        Q["record"],
        actor=who,
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id) if entity_id is not None else None,
        data=json.dumps(data or {}, default=str),
    )
