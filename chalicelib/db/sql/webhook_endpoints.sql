-- name: count
-- Under tenant_limits' lock: endpoints are counted and made one at a time per tenant.
SELECT count(*) FROM webhook_endpoints;

-- name: create
INSERT INTO webhook_endpoints (url, event_types, description, secret)
VALUES (:url, CAST(:event_types AS text[]), :description, :secret)
RETURNING id;

-- name: list
-- Also one endpoint (:id): one shape, one statement.
SELECT id, 'webhook_endpoint' AS object, url, event_types AS enabled_events, description, enabled, disabled_reason, failing_since,
       previous_secret_expires_at, created_at, updated_at
  FROM webhook_endpoints
 WHERE (CAST(:id AS uuid) IS NULL OR id = CAST(:id AS uuid))
   AND (CAST(:after AS uuid) IS NULL
        OR (created_at, id) < (SELECT created_at, id FROM webhook_endpoints WHERE id = CAST(:after AS uuid)))
 ORDER BY created_at DESC, id DESC
 LIMIT :limit;

-- name: exists
SELECT 1 FROM webhook_endpoints WHERE id = :id;

-- name: update
UPDATE webhook_endpoints
   SET url = COALESCE(CAST(:url AS text), url),
       event_types = COALESCE(CAST(:event_types AS text[]), event_types),
       description = CASE WHEN CAST(:set_description AS boolean) THEN CAST(:description AS text) ELSE description END,
       enabled = COALESCE(CAST(:enabled AS boolean), enabled),
       disabled_reason = CASE WHEN COALESCE(CAST(:enabled AS boolean), enabled) THEN NULL ELSE disabled_reason END,
       failing_since = CASE WHEN CAST(:enabled AS boolean) THEN NULL ELSE failing_since END,
       updated_at = now()
 WHERE id = :id
RETURNING id;

-- name: delete
DELETE FROM webhook_endpoints WHERE id = :id RETURNING id;

-- name: rotate
-- The old secret keeps signing (next to the new one) for 24 hours, so receivers can switch over.
UPDATE webhook_endpoints
   SET previous_secret = secret, previous_secret_expires_at = CAST(:now AS timestamptz) + interval '24 hours', secret = :secret,
       updated_at = now()
 WHERE id = :id
RETURNING id;

-- name: claim_lane
-- One worker per endpoint at a time: a slow or failing endpoint holds its own lane and nobody else's.
-- Its token proves the lane is still this worker's: a worker whose lease ran out (a request slower
-- than the lease, say a slow DNS answer) can neither renew it nor release another worker's.
UPDATE webhook_endpoints SET lease_until = now() + make_interval(secs => :lease_s), lease_token = gen_random_uuid()
 WHERE id = :id AND enabled AND (lease_until IS NULL OR lease_until < now())
RETURNING id, url, secret, previous_secret, previous_secret_expires_at, lease_token;

-- name: renew_lane
UPDATE webhook_endpoints SET lease_until = now() + make_interval(secs => :lease_s)
 WHERE id = :id AND enabled AND lease_token = :token
RETURNING id;

-- name: release_lane
UPDATE webhook_endpoints SET lease_until = NULL, lease_token = NULL WHERE id = :id AND lease_token = :token;

-- name: forget_failures
-- A delivery gave up without the endpoint failing long enough to be disabled: the next failure starts
-- a new count, rather than one stale failure days ago making the next one look like 3 days of them.
UPDATE webhook_endpoints SET failing_since = NULL WHERE id = :id;

-- name: answered
-- An endpoint's health after an answer: failing since its first failure after a success.
UPDATE webhook_endpoints
   SET failing_since = CASE WHEN CAST(:ok AS boolean) THEN NULL ELSE COALESCE(failing_since, CAST(:now AS timestamptz)) END
 WHERE id = :id
RETURNING failing_since, enabled;

-- name: disable
UPDATE webhook_endpoints SET enabled = false, disabled_reason = :reason, lease_until = NULL, updated_at = now()
 WHERE id = :id AND enabled
RETURNING id;
