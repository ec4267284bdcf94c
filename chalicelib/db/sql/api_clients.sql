-- Tenants' machine clients (chalicelib/api_clients.py): the binding of a Cognito app client to a tenant.

-- name: count
-- Under tenant_limits' lock: the plan's limit holds under concurrency.
SELECT count(*) FROM api_clients WHERE deleted_at IS NULL;

-- name: create
INSERT INTO api_clients (client_id, name, scopes, created_by)
VALUES (:client_id, :name, CAST(:scopes AS text[]), :created_by)
RETURNING id;

-- name: list
-- Also one client (:id): one shape, one statement. Deleted clients are gone from the API.
SELECT id, 'api_client' AS object, client_id, name, scopes, created_at
  FROM api_clients
 WHERE deleted_at IS NULL
   AND (CAST(:id AS uuid) IS NULL OR id = CAST(:id AS uuid))
   AND (CAST(:after AS uuid) IS NULL
        OR (created_at, id) < (SELECT created_at, id FROM api_clients WHERE id = CAST(:after AS uuid)))
 ORDER BY created_at DESC, id DESC
 LIMIT :limit;

-- name: exists
SELECT 1 FROM api_clients WHERE id = :id AND deleted_at IS NULL;

-- name: delete
UPDATE api_clients SET deleted_at = now() WHERE id = :id AND deleted_at IS NULL RETURNING client_id;
