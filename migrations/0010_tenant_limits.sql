-- Tenant plan limits (#15): what the platform's plan a tenant is on (tenants.plan_tier) allows.
--
-- * platform_plans: the platform's own price list of tiers, owned by the platform, not by any
--   tenant (no tenant_id, no row-level security: every tenant may read every tier, as a public
--   price page). A NULL limit is unlimited. The app role reads it and never writes it: tiers
--   change by migration or by an operator at the database.
-- * tenant_rate_limits: a tenant's place in its usage-ingestion request rate, one row per tenant,
--   moved by one short statement per POST /v1/events (chalicelib/billing/tenant_limits.py): a
--   token bucket kept as one number, the theoretical arrival time of the next request (GCRA) in
--   integer microseconds since the epoch. Shared by every Lambda container, which is why it lives here.

CREATE TABLE platform_plans (
    tier                       text PRIMARY KEY CHECK (tier ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    name                       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    max_accounts               bigint CHECK (max_accounts >= 0),
    max_webhook_endpoints      integer CHECK (max_webhook_endpoints >= 0),
    max_api_clients            integer CHECK (max_api_clients >= 0),
    -- POST /v1/events per second (each up to 100 events), and how many may come at once. Whole
    -- requests per second, at most one per microsecond: the bucket's arithmetic stays in integers.
    usage_requests_per_second  integer CHECK (usage_requests_per_second BETWEEN 1 AND 1000000),
    usage_burst                integer CHECK (usage_burst >= 1),
    -- What the tier includes, as short names (the identity work puts them in tokens' claims).
    features                   jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(features) = 'array'),
    -- Whether a new tenant may be put on it (legacy, below, is only for tenants that predate limits).
    for_sale                   boolean NOT NULL DEFAULT true,
    CHECK ((usage_requests_per_second IS NULL) = (usage_burst IS NULL))
);

-- standard is every tenant's default (tenants.plan_tier): generous enough for a real business and
-- for the tests, which make tenants with the default; 16 webhook endpoints was the fixed limit before.
INSERT INTO platform_plans (tier, name, max_accounts, max_webhook_endpoints, max_api_clients,
                            usage_requests_per_second, usage_burst, features)
VALUES ('standard', 'Standard', 10000, 16, 5, 100, 200, '["api_clients", "hosted_invoices", "webhooks"]'),
       ('growth', 'Growth', 250000, 50, 25, 500, 1000,
        '["api_clients", "hosted_invoices", "priority_support", "webhooks"]'),
       ('enterprise', 'Enterprise', NULL, NULL, NULL, NULL, NULL,
        '["api_clients", "dedicated_support", "hosted_invoices", "priority_support", "webhooks"]');

-- Tenants provisioned before this migration had no limits: they keep none (grandfathered on
-- "legacy", unlimited, with enterprise's features) rather than meeting standard's caps at deploy
-- (a tenant past 10,000 accounts could never make another; one ingesting 300 requests a second
-- would get 429s). An operator moves them to a sold tier when their contract says so.
INSERT INTO platform_plans (tier, name, features, for_sale)
VALUES ('legacy', 'Legacy (unlimited, before plan limits)',
        '["api_clients", "dedicated_support", "hosted_invoices", "priority_support", "webhooks"]', false);
UPDATE tenants SET plan_tier = 'legacy';

-- A tenant's tier names a row (every tenant made or changed from here on names a real tier).
ALTER TABLE tenants ADD CONSTRAINT tenants_plan_tier_fkey FOREIGN KEY (plan_tier) REFERENCES platform_plans (tier);

-- The current tenant's tier (standard when its tier is unknown); a row of NULLs with no tenant set.
CREATE FUNCTION tenant_platform_plan() RETURNS platform_plans
    LANGUAGE sql STABLE
    AS $$
        SELECT p FROM tenants t JOIN platform_plans p ON p.tier IN (t.plan_tier, 'standard')
         WHERE t.id = app_current_tenant()
         ORDER BY p.tier = t.plan_tier DESC
         LIMIT 1
    $$;

CREATE TABLE tenant_rate_limits (
    tenant_id     uuid PRIMARY KEY DEFAULT app_current_tenant() REFERENCES tenants (id),
    usage_tat_us  bigint NOT NULL
);
ALTER TABLE tenant_rate_limits ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_rate_limits FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_rate_limits
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());

GRANT SELECT ON platform_plans TO billing_app;
GRANT SELECT, INSERT, UPDATE ON tenant_rate_limits TO billing_app;
