-- name: add
INSERT INTO outbox (event_type, payload) VALUES (:event_type, CAST(:payload AS jsonb)) RETURNING id;

-- name: take_unpublished
-- SKIP LOCKED: a request's own flush and the sweeper never publish a row twice at once.
-- A row that failed 20 times (say, over SNS's size limit) is left for an
-- operator rather than blocking the tenant's later events for ever.
SELECT id, event_type, payload FROM outbox
 WHERE published_at IS NULL AND attempts < 20
 ORDER BY created_at
 LIMIT :limit
 FOR UPDATE SKIP LOCKED;

-- name: mark_published
UPDATE outbox SET published_at = now(), attempts = attempts + 1, last_error = NULL WHERE id = :id;

-- name: mark_failed
UPDATE outbox SET attempts = attempts + 1, last_error = :error WHERE id = :id;

-- name: tenants_with_backlog
SELECT tenant_id, backlog FROM outbox_tenants_with_backlog(:older_than_s, :max_rows);

-- name: add_many
-- Set-based: a billing round's events in one statement.
INSERT INTO outbox (event_type, payload)
SELECT v.event_type, v.payload FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(event_type text, payload jsonb);

-- name: list
-- The tenant's event log: the last 30 days, newest first.
SELECT id, event_type, payload, created_at FROM outbox
 WHERE created_at > now() - interval '30 days'
   AND (CAST(:type AS text) IS NULL OR event_type = CAST(:type AS text))
   AND (CAST(:id AS uuid) IS NULL OR id = CAST(:id AS uuid))
   AND (CAST(:after AS uuid) IS NULL
        OR (created_at, id) < (SELECT created_at, id FROM outbox WHERE id = CAST(:after AS uuid)))
 ORDER BY created_at DESC, id DESC
 LIMIT :limit;

-- name: exists
SELECT 1 FROM outbox WHERE id = :id AND created_at > now() - interval '30 days';
