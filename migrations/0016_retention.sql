-- Retention (#17): what the platform keeps, how long, and the doors its scheduled purge uses.
--
-- chalicelib/retention.py runs the purge from the outbox_sweep schedule, in bounded batches (one
-- short transaction each, rows picked by ctid with a LIMIT), so no run holds a long lock and a
-- rerun deletes nothing twice. Purging crosses tenants, so it gets the treatment the outbox sweep
-- and the rebill selection get: SECURITY DEFINER functions owned by billing_system, search_path
-- pinned, executable by billing_app only, each returning counts and nothing else. billing_system's
-- DELETE policies hold each table's floor, so not even a wrong argument can purge young rows:
--
-- * idempotency_keys: once expired (24 hours after the key was claimed).
-- * processed_events: 14 days after the claim, the longest message retention of any SQS queue in
--   infra (the dead-letter queues' 1,209,600 s; a message keeps its first enqueue time when it is
--   dead-lettered, so no delivery of it can come later). The purge waits a day more.
-- * outbox: published events 30 days old (GET /v1/notifications shows 30 days), once no webhook
--   delivery names them (webhook_deliveries.event_id references outbox without a cascade).
-- * webhook_deliveries: delivered or failed ones 30 days old, their attempts with them (ON DELETE
--   CASCADE); a pending one never (a resend makes an old delivery pending again).
-- * usage_events: an archive path, not partitions of the hot table. Its UNIQUE (tenant_id, event_id)
--   is the ingest's dedupe, and a partitioned table's unique key must hold the partition key: an
--   event id would then be unique per month only. So the hot table stays as it is, and usage that no
--   unbilled period or draft still prices (see retention_archive_usage) moves to
--   usage_events_archive once received and occurred more than 35 days ago. The archive is
--   partitioned by the month it was archived in, so its expiry (24 months by default: card networks
--   take disputes up to 540 days after a charge) drops a whole month at once, with no DELETE and no
--   vacuum. Invoice lines, credit notes and disputes never read raw usage; the archive keeps it for
--   people (a customer asking what was billed) and is readable by the app role per tenant.
--
-- And the invoice triggers build each invoice's API object once per statement, not once per event
-- (an invoice born numbered and paid has three events: it was built three times).

-- The invoice events of one statement: each invoice's payload built once, then one row per event.
CREATE OR REPLACE FUNCTION invoice_events() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO outbox (tenant_id, event_type, payload)
        WITH built AS MATERIALIZED (
            SELECT n.tenant_id, n.number, n.status, invoice_event(n) AS payload FROM new_rows n)
        SELECT b.tenant_id, e.event_type, b.payload
          FROM built b
         CROSS JOIN LATERAL (VALUES ('invoice.created', true),
                                    ('invoice.finalized', b.number IS NOT NULL),
                                    ('invoice.paid', b.number IS NOT NULL AND b.status = 'paid')) AS e(event_type, fires)
         WHERE e.fires;
    ELSE
        INSERT INTO outbox (tenant_id, event_type, payload)
        WITH built AS MATERIALIZED (
            SELECT n.tenant_id, n.number, n.status, o.number AS old_number, o.status AS old_status,
                   invoice_event(n) AS payload
              FROM new_rows n
              JOIN old_rows o ON o.id = n.id AND (o.status, o.number) IS DISTINCT FROM (n.status, n.number))
        SELECT b.tenant_id, e.event_type, b.payload
          FROM built b
         CROSS JOIN LATERAL (
               VALUES ('invoice.finalized', b.old_number IS NULL AND b.number IS NOT NULL),
                      ('invoice.paid', b.status = 'paid' AND b.number IS NOT NULL
                                       AND (b.old_status <> 'paid' OR b.old_number IS NULL)),
                      ('invoice.voided', b.status = 'void' AND b.old_status <> 'void'),
                      ('invoice.marked_uncollectible', b.status = 'uncollectible' AND b.old_status <> 'uncollectible')
               ) AS e(event_type, fires)
         WHERE e.fires;
    END IF;
    RETURN NULL;
END
$$;

-- Each purge walks an index in age order.
CREATE INDEX processed_events_claimed ON processed_events (claimed_at);
CREATE INDEX outbox_created ON outbox (created_at);
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);
-- The outbox purge asks whether a delivery names an event, and so does the foreign key on each delete.
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);
-- (received_at, id): the usage purge's keyset; appended at the right edge like the primary key.
CREATE INDEX usage_events_received ON usage_events (received_at, id);

-- billing_system reads what it purges and deletes only what is past each table's floor.
GRANT SELECT, DELETE ON idempotency_keys, processed_events, usage_events TO billing_system;
GRANT DELETE ON outbox, webhook_deliveries TO billing_system;
CREATE POLICY background_read ON idempotency_keys FOR SELECT TO billing_system USING (true);
CREATE POLICY background_read ON processed_events FOR SELECT TO billing_system USING (true);
CREATE POLICY background_read ON usage_events FOR SELECT TO billing_system USING (true);
CREATE POLICY retention_purge ON idempotency_keys FOR DELETE TO billing_system USING (expires_at < now());
CREATE POLICY retention_purge ON processed_events FOR DELETE TO billing_system
    USING (claimed_at < now() - interval '14 days');
CREATE POLICY retention_purge ON outbox FOR DELETE TO billing_system
    USING (published_at IS NOT NULL AND created_at < now() - interval '30 days');
CREATE POLICY retention_purge ON webhook_deliveries FOR DELETE TO billing_system
    USING (status <> 'pending' AND created_at < now() - interval '30 days');
CREATE POLICY retention_purge ON usage_events FOR DELETE TO billing_system
    USING (received_at < now() - interval '7 days' AND occurred_at < now() - interval '7 days');

CREATE FUNCTION retention_purge_idempotency_keys(max_rows integer) RETURNS integer
    LANGUAGE sql SECURITY DEFINER SET search_path = public SET plan_cache_mode = force_custom_plan
    AS $$
        WITH gone AS (
            DELETE FROM idempotency_keys k
             WHERE k.ctid = ANY(ARRAY(SELECT x.ctid FROM idempotency_keys x WHERE x.expires_at < now()
                                        ORDER BY x.expires_at LIMIT max_rows))
               AND k.expires_at < now()
            RETURNING 1)
        SELECT count(*)::integer FROM gone
    $$;

CREATE FUNCTION retention_purge_processed_events(keep_s integer, max_rows integer) RETURNS integer
    LANGUAGE sql SECURITY DEFINER SET search_path = public SET plan_cache_mode = force_custom_plan
    AS $$
        WITH gone AS (
            DELETE FROM processed_events p
             WHERE p.ctid = ANY(ARRAY(SELECT x.ctid FROM processed_events x
                                       WHERE x.claimed_at < now() - make_interval(secs => keep_s)
                                       ORDER BY x.claimed_at LIMIT max_rows))
               AND p.claimed_at < now() - make_interval(secs => keep_s)
            RETURNING 1)
        SELECT count(*)::integer FROM gone
    $$;

-- Delivered and failed deliveries (their attempts cascade), before the events they name.
CREATE FUNCTION retention_purge_webhook_deliveries(keep_s integer, max_rows integer) RETURNS integer
    LANGUAGE sql SECURITY DEFINER SET search_path = public SET plan_cache_mode = force_custom_plan
    AS $$
        WITH gone AS (
            DELETE FROM webhook_deliveries d
             WHERE d.ctid = ANY(ARRAY(
                       SELECT x.ctid FROM webhook_deliveries x
                        WHERE x.created_at < now() - make_interval(secs => keep_s) AND x.status <> 'pending'
                          AND COALESCE(x.delivered_at, x.failed_at) < now() - make_interval(secs => keep_s)
                        ORDER BY x.created_at LIMIT max_rows))
               AND d.status <> 'pending'
            RETURNING 1)
        SELECT count(*)::integer FROM gone
    $$;

-- Published events no delivery names any more.
CREATE FUNCTION retention_purge_outbox(keep_s integer, max_rows integer) RETURNS integer
    LANGUAGE sql SECURITY DEFINER SET search_path = public SET plan_cache_mode = force_custom_plan
    AS $$
        WITH gone AS (
            DELETE FROM outbox o
             WHERE o.ctid = ANY(ARRAY(
                       SELECT x.ctid FROM outbox x
                        WHERE x.created_at < now() - make_interval(secs => keep_s) AND x.published_at IS NOT NULL
                          -- OFFSET 0 keeps this a probe per row of the index walk that LIMIT stops early:
                          -- as an anti-join it hashed every delivery and every old event on each batch.
                          AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = x.id OFFSET 0)
                        ORDER BY x.created_at LIMIT max_rows))
               AND o.published_at IS NOT NULL
            RETURNING 1)
        SELECT count(*)::integer FROM gone
    $$;

-- The usage archive: the columns of usage_events and when each row was archived, one partition per
-- month of archived_at, each made by the first purge of its month and dropped whole when it expires.
-- Owned by billing_system, which makes and drops the partitions. Row-level security is forced, as on
-- every tenant table: the app role reads its tenant's rows through the parent (the partitions grant it
-- nothing), and billing_system, the owner, writes and reads through a policy of its own.
CREATE TABLE usage_events_archive (
    id           uuid NOT NULL,
    tenant_id    uuid NOT NULL,
    event_id     text NOT NULL,
    account_id   uuid NOT NULL,
    metric       text NOT NULL,
    quantity     bigint NOT NULL,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    properties   jsonb NOT NULL,
    archived_at  timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (archived_at);
CREATE INDEX usage_events_archive_aggregation ON usage_events_archive (tenant_id, account_id, metric, occurred_at);
CREATE INDEX usage_events_archive_event ON usage_events_archive (tenant_id, event_id);
ALTER TABLE usage_events_archive OWNER TO billing_system;
ALTER TABLE usage_events_archive ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_events_archive FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_events_archive USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
CREATE POLICY archive_write ON usage_events_archive TO billing_system USING (true) WITH CHECK (true);
REVOKE ALL ON usage_events_archive FROM PUBLIC;
GRANT SELECT ON usage_events_archive TO billing_app;

-- Where the usage purge stands: the (received_at, id) it scanned last in this pass over the table.
CREATE TABLE retention_cursors (
    job         text PRIMARY KEY,
    after_at    timestamptz,
    after_id    uuid,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE retention_cursors OWNER TO billing_system;
REVOKE ALL ON retention_cursors FROM PUBLIC;

-- This month's archive partition (UTC months), made when missing. Called by the definer below only.
CREATE FUNCTION usage_archive_partition(at timestamptz) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public
    AS $$
DECLARE
    month timestamptz := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    name text := 'usage_events_archive_' || to_char(at AT TIME ZONE 'UTC', 'YYYY_MM');
BEGIN
    IF to_regclass(name) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF usage_events_archive FOR VALUES FROM (%L) TO (%L)',
                       name, month, month + interval '1 month');
        -- Reached through the parent, whose policies apply; forced here too, like every tenant table.
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', name);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', name);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = app_current_tenant())'
                       ' WITH CHECK (tenant_id = app_current_tenant())', name);
        EXECUTE format('CREATE POLICY archive_write ON %I TO billing_system USING (true) WITH CHECK (true)', name);
    END IF;
    RETURN name;
END
$$;
ALTER FUNCTION usage_archive_partition(timestamptz) OWNER TO billing_system;
REVOKE ALL ON FUNCTION usage_archive_partition(timestamptz) FROM PUBLIC;

-- One step of the pass over usage_events in (received_at, id) order: the next max_rows events received
-- before the cutoff are scanned, and those no period still needs move to the archive. An event is still
-- needed when it occurred after the cutoff, in the current period (or later) of a live subscription of
-- its account (the renewal bills it; an overdue account's period has not moved on), or in the window
-- of a draft of its account (a held draft is priced again at finalization; LEAST skips a NULL). The
-- cursor's row lock makes concurrent runs take turns; a short page ends the pass and the next starts
-- over, so usage that was needed is looked at again once its period is billed. A resend of an event
-- already archived (received again after its first copy left) is dropped, not archived twice.
CREATE FUNCTION retention_archive_usage(hot_s integer, max_rows integer)
    RETURNS TABLE (moved integer, scanned integer)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public
    -- A plan for these values each time: a generic plan (PL/pgSQL's after five calls) scans the table.
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    cutoff timestamptz := now() - make_interval(secs => hot_s);
    cur retention_cursors;
    last_at timestamptz;
    last_id uuid;
BEGIN
    INSERT INTO retention_cursors (job) VALUES ('usage_events') ON CONFLICT (job) DO NOTHING;
    SELECT * INTO cur FROM retention_cursors c WHERE c.job = 'usage_events' FOR UPDATE;
    PERFORM usage_archive_partition(now());
    -- One statement, one snapshot: what is judged unneeded is what is moved.
    WITH scan AS MATERIALIZED (
        SELECT u.ctid AS tid, u.id, u.received_at,
               u.occurred_at >= cutoff
               OR EXISTS (SELECT 1 FROM subscriptions s
                           WHERE s.tenant_id = u.tenant_id AND s.account_id = u.account_id
                             AND s.status IN ('trialing', 'active', 'past_due', 'paused')
                             AND s.current_period_start <= u.occurred_at)
               OR EXISTS (SELECT 1 FROM invoices i
                           WHERE i.tenant_id = u.tenant_id AND i.account_id = u.account_id AND i.status = 'draft'
                             AND LEAST(i.period_start, CAST(i.usage_terms ->> 'from' AS timestamptz))
                                 <= u.occurred_at) AS needed
          FROM usage_events u
         WHERE u.received_at < cutoff
           -- a row comparison the index can start from (an OR with the first pass's NULL could not)
           AND (u.received_at, u.id) > (COALESCE(cur.after_at, '-infinity'),
                                        COALESCE(cur.after_id, '00000000-0000-0000-0000-000000000000'))
         ORDER BY u.received_at, u.id
         LIMIT max_rows),
    gone AS (
        DELETE FROM usage_events u
         WHERE u.ctid = ANY(ARRAY(SELECT s.tid FROM scan s WHERE NOT s.needed))
        RETURNING u.*),
    kept AS (
        INSERT INTO usage_events_archive (id, tenant_id, event_id, account_id, metric, quantity, occurred_at,
                                          received_at, properties)
        SELECT g.id, g.tenant_id, g.event_id, g.account_id, g.metric, g.quantity, g.occurred_at, g.received_at,
               g.properties
          FROM gone g
         -- A probe of each month's (tenant_id, event_id) index per row (OFFSET 0: never a hash of the archive).
         WHERE NOT EXISTS (SELECT 1 FROM usage_events_archive a
                            WHERE a.tenant_id = g.tenant_id AND a.event_id = g.event_id OFFSET 0)
        RETURNING 1)
    SELECT (SELECT count(*)::integer FROM gone), count(*)::integer,
           (array_agg(s.received_at ORDER BY s.received_at DESC, s.id DESC))[1],
           (array_agg(s.id ORDER BY s.received_at DESC, s.id DESC))[1]
      INTO moved, scanned, last_at, last_id
      FROM scan s;
    UPDATE retention_cursors c
       SET after_at = CASE WHEN scanned = max_rows THEN last_at END,
           after_id = CASE WHEN scanned = max_rows THEN last_id END, updated_at = now()
     WHERE c.job = 'usage_events';
    RETURN NEXT;
END
$$;

-- Archive months whose every row was archived more than keep_months months ago, dropped whole.
CREATE FUNCTION retention_drop_usage_archive(keep_months integer) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public
    AS $$
DECLARE
    horizon timestamptz := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                           - make_interval(months => keep_months);
    part text;
    dropped integer := 0;
BEGIN
    IF keep_months < 12 THEN
        RAISE EXCEPTION 'usage archive is kept 12 months at least, not %', keep_months USING ERRCODE = '22023';
    END IF;
    FOR part IN
        SELECT c.relname FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid
         WHERE h.inhparent = 'usage_events_archive'::regclass
           AND CAST(to_date(right(c.relname, 7), 'YYYY_MM') AS timestamp) AT TIME ZONE 'UTC' + interval '1 month'
               <= horizon
    LOOP
        EXECUTE format('DROP TABLE %I', part);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;

DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['retention_purge_idempotency_keys(integer)',
                             'retention_purge_processed_events(integer, integer)',
                             'retention_purge_webhook_deliveries(integer, integer)',
                             'retention_purge_outbox(integer, integer)',
                             'retention_archive_usage(integer, integer)',
                             'retention_drop_usage_archive(integer)']
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO billing_system', f);
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO billing_app', f);
    END LOOP;
END
$$;
