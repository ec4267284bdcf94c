-- name: claim
-- Takes the key when it is new, expired, or abandoned in flight by a crashed
-- request with the same body; otherwise returns nothing and the caller looks.
INSERT INTO idempotency_keys (key, request_method, request_path, request_hash)
VALUES (:key, :method, :path, :hash)
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
RETURNING key;

-- name: existing
SELECT request_method, request_path, request_hash, status, response_status, response_body
  FROM idempotency_keys
 WHERE key = :key;

-- name: complete
UPDATE idempotency_keys
   SET status = 'complete', response_status = :status, response_body = CAST(:body AS jsonb)
 WHERE key = :key;

-- name: release
DELETE FROM idempotency_keys WHERE key = :key AND status = 'in_progress';

-- name: purge_expired
DELETE FROM idempotency_keys WHERE expires_at <= now();
