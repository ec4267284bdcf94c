-- name: create
INSERT INTO tenants (id, name, email, plan_tier)
VALUES (:id, :name, :email, :plan)
RETURNING id, 'tenant' AS object, name, email, plan_tier AS plan, status, settings, created_at;

-- name: switch
SELECT set_config('app.tenant_id', :tenant_id, true);

-- name: is_operator
SELECT COALESCE((settings ->> 'platform_operator')::boolean, false) FROM tenants;
