"""The ops topic: CloudWatch alarms and other operator notices, turned into structured logs."""

import json
import logging

log = logging.getLogger("billing.ops")


def handle_alert(subject: str | None, message: str) -> dict:
    """Log an alarm (or any notice) at a level matching its state; returns what was logged."""
    try:
        body = json.loads(message)
    except (TypeError, ValueError):
        body = {"message": message}
    if not isinstance(body, dict):
        body = {"message": body}
    notice = {
        "subject": subject,
        "alarm": body.get("AlarmName"),
        "state": body.get("NewStateValue"),
        "reason": body.get("NewStateReason") or body.get("message"),
    }
    level = logging.ERROR if notice["state"] == "ALARM" else logging.INFO
    log.log(level, "ops notice: %s", json.dumps(notice))
    return notice
