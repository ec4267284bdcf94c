-- name: record
/* prepared */ INSERT INTO audit_logs (actor, action, entity_type, entity_id, data)
VALUES (:actor, :action, :entity_type, :entity_id, CAST(:data AS jsonb));

-- name: record_many
-- Set-based: a billing round's audit rows in one statement.
INSERT INTO audit_logs (actor, action, entity_type, entity_id, data)
SELECT v.actor, v.action, v.entity_type, v.entity_id, v.data
  FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(actor text, action text, entity_type text, entity_id text,
                                                     data jsonb);
