-- name: create
INSERT INTO tenants (id, name, email, plan_tier)
VALUES (:id, :name, :email, :plan)
RETURNING id, 'tenant' AS object, name, email, plan_tier AS plan, status, settings, created_at;

-- name: switch
SELECT set_config('app.tenant_id', :tenant_id, true);

-- name: is_operator
SELECT COALESCE((settings ->> 'platform_operator')::boolean, false) FROM tenants;

-- name: invoice_settings
SELECT 'invoice_settings' AS object, invoice_prefix AS prefix, invoice_grace_hours AS grace_hours,
       (SELECT last_value FROM number_sequences n WHERE n.series = t.invoice_prefix) AS last_number
  FROM tenants t WHERE id = app_current_tenant();

-- name: update_invoice_settings
UPDATE tenants SET invoice_prefix = COALESCE(:prefix, invoice_prefix),
                   invoice_grace_hours = COALESCE(CAST(:grace_hours AS integer), invoice_grace_hours)
 WHERE id = app_current_tenant();

-- name: seller
SELECT name, email FROM tenants WHERE id = app_current_tenant();

-- name: hosted_link_key
SELECT hosted_link_key FROM tenants WHERE id = app_current_tenant();

-- name: exists
SELECT EXISTS (SELECT 1 FROM tenants WHERE id = app_current_tenant());

-- name: lock_operator
-- One bootstrap at a time: the platform operator's tenant is made once.
SELECT pg_advisory_xact_lock(hashtextextended('platform_operator', 0));

-- name: operator_tenant
SELECT platform_operator_tenant();

-- name: create_operator
INSERT INTO tenants (id, name, email, settings)
VALUES (:id, :name, :email, '{"platform_operator": true}');
