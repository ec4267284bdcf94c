-- name: record
INSERT INTO audit_logs (actor, action, entity_type, entity_id, data)
VALUES (:actor, :action, :entity_type, :entity_id, CAST(:data AS jsonb));
