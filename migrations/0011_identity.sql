-- Identity (#15): tenants' machine clients, and what a token may say about its tenant.

-- A machine client is a Cognito app client with the client-credentials grant, made by the API
-- for one tenant. Cognito knows the client; this row is the binding to the tenant, and it is
-- what the app checks on every machine request: a deleted client's tokens stop working here,
-- whatever their expiry says. Deleted rows stay (deleted_at) for the audit trail.
CREATE TABLE api_clients (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    client_id   text NOT NULL UNIQUE CHECK (client_id ~ '^[A-Za-z0-9_+-]{1,128}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    scopes      text[] NOT NULL CHECK (cardinality(scopes) BETWEEN 1 AND 8),
    created_by  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    UNIQUE (tenant_id, id)
);
CREATE INDEX api_clients_live ON api_clients (tenant_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;
ALTER TABLE api_clients ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_clients FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_clients USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
GRANT SELECT, INSERT, UPDATE ON api_clients TO billing_app;

CREATE POLICY background_read ON api_clients FOR SELECT TO billing_system USING (true);
CREATE POLICY background_read ON tenants FOR SELECT TO billing_system USING (true);
GRANT SELECT ON api_clients, tenants, platform_plans TO billing_system;

-- Who a token is about, before any tenant scope exists: Cognito's pre-token-generation trigger
-- (people: the tenant from custom:tenant_id; machines: the tenant their client is bound to) and
-- the app verifying a machine's access token. One indexed lookup; no rows for an unknown tenant
-- or an unbound or deleted client.
CREATE FUNCTION token_subject(p_tenant uuid, p_client text)
    RETURNS TABLE (tenant_id uuid, status text, plan_tier text, features jsonb)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$
        SELECT t.id, t.status, t.plan_tier, COALESCE(p.features, '[]'::jsonb)
          FROM tenants t
          LEFT JOIN platform_plans p ON p.tier = t.plan_tier
         WHERE t.id = CASE WHEN p_client IS NULL THEN p_tenant
                           ELSE (SELECT c.tenant_id FROM api_clients c
                                  WHERE c.client_id = p_client AND c.deleted_at IS NULL) END
    $$;
ALTER FUNCTION token_subject(uuid, text) OWNER TO billing_system;
REVOKE ALL ON FUNCTION token_subject(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION token_subject(uuid, text) TO billing_app;

-- The platform operator's tenant (the bootstrap makes it once, in onboarding.bootstrap_operator).
CREATE FUNCTION platform_operator_tenant() RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$
        SELECT id FROM tenants WHERE COALESCE((settings ->> 'platform_operator')::boolean, false)
         ORDER BY created_at, id LIMIT 1
    $$;
ALTER FUNCTION platform_operator_tenant() OWNER TO billing_system;
REVOKE ALL ON FUNCTION platform_operator_tenant() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform_operator_tenant() TO billing_app;
