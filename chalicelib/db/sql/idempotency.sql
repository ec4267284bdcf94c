-- name: claim
-- Takes the key when it is new, expired, or abandoned in flight by a crashed
-- request with the same body; otherwise returns nothing and the caller looks.
-- Its transaction commits without waiting for the WAL flush (set in this statement: no round trip of
-- its own). A claim is worth no flush: lost in a crash, it is a claim never made; the work's commit,
-- which waits, flushes it first. Only an active tenant's request claims (scope.sql's tenant_status rule,
-- here so that the claim is its transaction's first statement: one round trip fewer); when nothing is
-- claimed the caller asks scope.check why.
/* prepared */ INSERT INTO idempotency_keys (key, request_method, request_path, request_hash)
SELECT :key, :method, :path, :hash FROM (SELECT set_config('synchronous_commit', 'off', true)) AS without_flush
 WHERE EXISTS (SELECT 1 FROM tenants WHERE status = 'active')  -- under RLS: the current tenant's row only
ON CONFLICT (tenant_id, key) DO UPDATE
   SET request_method = EXCLUDED.request_method,
       request_path = EXCLUDED.request_path,
       request_hash = EXCLUDED.request_hash,
       status = 'in_progress',
       response_status = NULL,
       response_body = NULL,
       locked_at = now(),
       created_at = now(),
       expires_at = now() + interval '24 hours'
 WHERE idempotency_keys.expires_at <= now()
    OR (idempotency_keys.status = 'in_progress'
        AND idempotency_keys.locked_at < now() - make_interval(secs => :stale_after_s)
        AND idempotency_keys.request_hash = EXCLUDED.request_hash)
RETURNING locked_at;

-- name: existing
SELECT request_method, request_path, request_hash, status, response_status, response_body
  FROM idempotency_keys
 WHERE key = :key;

-- name: complete
-- Only by the claim's owner: locked_at is the claim's token. A claim taken over is an error
-- (SQLSTATE BK001, migration 0023), which rolls back the work in its transaction: the statement
-- carries that transaction's COMMIT.
/* prepared */ WITH completed AS (
    UPDATE idempotency_keys
       SET status = 'complete', response_status = :status, response_body = CAST(:body AS jsonb)
     WHERE key = :key AND locked_at = :locked_at AND status = 'in_progress'
    RETURNING key
)
SELECT CASE WHEN EXISTS (SELECT 1 FROM completed) THEN 'complete' ELSE idempotency_superseded() END AS status;

-- name: refresh
-- A completed key's response, as it stands once the work's after-commit step (a payment, a
-- refund) has run; the claim's token still names its owner.
UPDATE idempotency_keys SET response_body = CAST(:body AS jsonb)
 WHERE key = :key AND locked_at = :locked_at AND status = 'complete';

-- name: release
DELETE FROM idempotency_keys WHERE key = :key AND locked_at = :locked_at AND status = 'in_progress';

-- name: claim_message
-- A consumer's claim on one event. Taken when new, or when a claim still in
-- progress is older than the visibility timeout (its invocation crashed).
INSERT INTO processed_events (consumer, message_id)
VALUES (:consumer, :message_id)
ON CONFLICT (tenant_id, consumer, message_id) DO UPDATE
   SET claimed_at = now()
 WHERE processed_events.status = 'in_progress'
   AND processed_events.claimed_at < now() - make_interval(secs => :stale_after_s)
RETURNING claimed_at;

-- name: message_status
SELECT status FROM processed_events WHERE consumer = :consumer AND message_id = :message_id;

-- name: complete_message
-- Only by the claim's owner: claimed_at is the claim's token.
UPDATE processed_events SET status = 'done', completed_at = now()
 WHERE consumer = :consumer AND message_id = :message_id AND claimed_at = :claimed_at AND status = 'in_progress'
RETURNING message_id;

-- name: release_message
DELETE FROM processed_events
 WHERE consumer = :consumer AND message_id = :message_id AND claimed_at = :claimed_at AND status = 'in_progress';
