-- name: fan_out
-- One delivery per (endpoint, event), whatever the redeliveries; then every endpoint with this event
-- still to deliver (a redelivery after a crash re-kicks them).
WITH made AS (
    INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, next_attempt_at)
    SELECT e.id, :event_id, :event_type, now()
      FROM webhook_endpoints e
     WHERE e.enabled AND (e.event_types @> ARRAY['*'] OR e.event_types @> ARRAY[CAST(:event_type AS text)])
    ON CONFLICT (endpoint_id, event_id) DO NOTHING
    RETURNING endpoint_id
)
SELECT endpoint_id FROM made
UNION
SELECT endpoint_id FROM webhook_deliveries WHERE event_id = :event_id AND status = 'pending';

-- name: due
SELECT d.id, d.event_id, d.schedule_from, d.schedule_failures, o.event_type, o.payload, o.created_at AS event_created
  FROM webhook_deliveries d
  JOIN outbox o ON o.id = d.event_id
 WHERE d.endpoint_id = :endpoint_id AND d.status = 'pending' AND d.next_attempt_at <= :now
 ORDER BY d.next_attempt_at, d.id
 LIMIT :limit;

-- name: next_due
SELECT min(next_attempt_at) FROM webhook_deliveries WHERE endpoint_id = :endpoint_id AND status = 'pending';

-- name: record_attempt
INSERT INTO webhook_attempts (delivery_id, attempted_at, status_code, latency_ms, response_excerpt, error)
VALUES (:delivery_id, :attempted_at, :status_code, :latency_ms, :excerpt, :error);

-- name: delivered
UPDATE webhook_deliveries
   SET status = 'delivered', attempts = attempts + 1, last_status = :status_code, next_attempt_at = NULL,
       delivered_at = :now
 WHERE id = :id AND status = 'pending';

-- name: retry_later
UPDATE webhook_deliveries
   SET attempts = attempts + 1, schedule_failures = schedule_failures + 1, last_status = :status_code,
       next_attempt_at = :next_attempt_at
 WHERE id = :id AND status = 'pending';

-- name: failed
UPDATE webhook_deliveries
   SET status = 'failed', attempts = attempts + 1, last_status = :status_code, next_attempt_at = NULL,
       failed_at = :now
 WHERE id = :id AND status = 'pending';

-- name: fail_pending
-- An endpoint that was disabled delivers nothing more; what it still owed is failed.
UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, failed_at = :now
 WHERE endpoint_id = :endpoint_id AND status = 'pending';

-- name: list
SELECT d.id, 'webhook_delivery' AS object, d.endpoint_id, d.event_id, d.event_type, d.status,
       d.attempts AS attempt_count,
       d.next_attempt_at, d.last_status, d.created_at, d.delivered_at, d.failed_at,
       COALESCE((SELECT jsonb_agg(jsonb_build_object('attempted_at', api_ts(a.attempted_at), 'status_code', a.status_code,
                                                    'latency_ms', a.latency_ms, 'response_excerpt', a.response_excerpt,
                                                    'error', a.error) ORDER BY a.attempted_at, a.id)
                   FROM webhook_attempts a WHERE a.delivery_id = d.id), '[]'::jsonb) AS attempts
  FROM webhook_deliveries d
 WHERE d.endpoint_id = :endpoint_id
   AND (CAST(:id AS uuid) IS NULL OR d.id = CAST(:id AS uuid))
   AND (CAST(:status AS text) IS NULL OR d.status = CAST(:status AS text))
   AND (CAST(:after AS uuid) IS NULL
        OR (d.created_at, d.id) < (SELECT created_at, id FROM webhook_deliveries WHERE id = CAST(:after AS uuid)))
 ORDER BY d.created_at DESC, d.id DESC
 LIMIT :limit;

-- name: exists
SELECT 1 FROM webhook_deliveries WHERE id = :id AND endpoint_id = :endpoint_id;

-- name: resend
-- A manual retry: pending again, due now (a delivered one is sent once more, with the same webhook-id).
UPDATE webhook_deliveries
   SET status = 'pending', next_attempt_at = :now, delivered_at = NULL, failed_at = NULL, schedule_from = :now,
       schedule_failures = 0
 WHERE id = :id AND endpoint_id = :endpoint_id
RETURNING id;

-- name: lanes_due
SELECT tenant_id, endpoint_id FROM webhook_lanes_due(:now, :max_rows);
