-- The tenant scope (chalicelib/db/scope.py).

-- name: tenant_status
-- Under RLS this sees the current tenant's row only.
/* prepared */ SELECT status FROM tenants;
