-- The transactional outbox, and a narrow cross-tenant door for background jobs.
--
-- Domain events are written to outbox in the same transaction as the change they
-- describe and published to SNS afterwards; the row's id is the event's id, so a
-- re-publish after a crash is the same event, which consumers deduplicate.
--
-- Background jobs (the outbox sweeper, the rebill selection) must find work
-- across tenants, which the app role can never see. They do it only through
-- SECURITY DEFINER functions owned by billing_system, a NOLOGIN role whose one
-- extra policy per table is read-only; each function returns ids and nothing else.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'billing_system') THEN
        CREATE ROLE billing_system NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END
$$;
GRANT billing_system TO CURRENT_USER;
GRANT USAGE, CREATE ON SCHEMA public TO billing_system;

CREATE TABLE outbox (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    event_type    text NOT NULL CHECK (event_type ~ '^[a-z_]+\.[a-z_]+$'),
    payload       jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text
);
CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;
CREATE INDEX outbox_tenant_unpublished ON outbox (tenant_id, created_at) WHERE published_at IS NULL;

ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON outbox
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());
CREATE POLICY background_read ON outbox FOR SELECT TO billing_system USING (true);
GRANT SELECT, INSERT, UPDATE ON outbox TO billing_app;
GRANT SELECT ON outbox TO billing_system;

CREATE FUNCTION outbox_tenants_with_backlog(older_than_s integer, max_rows integer)
    RETURNS TABLE (tenant_id uuid, backlog bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$
        SELECT p.tenant_id, count(*)
          FROM (SELECT o.tenant_id FROM outbox o
                 WHERE o.published_at IS NULL
                   AND o.created_at < now() - make_interval(secs => older_than_s)
                 ORDER BY o.created_at
                 LIMIT max_rows) p
         GROUP BY p.tenant_id
    $$;
ALTER FUNCTION outbox_tenants_with_backlog(integer, integer) OWNER TO billing_system;
REVOKE ALL ON FUNCTION outbox_tenants_with_backlog(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox_tenants_with_backlog(integer, integer) TO billing_app;
