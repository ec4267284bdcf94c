-- The rebill's write path (#17): less work per row a renewal writes, and the state a billing
-- round is computed from read in one call.
--
-- * Redundant foreign keys. A table whose rows carry a composite (tenant_id, x) key to a parent
--   that itself references tenants needs no tenant_id -> tenants key of its own: the parent row
--   exists with that tenant_id, and its tenant exists (a tenant with accounts cannot be deleted).
--   Each such key cost a lookup of the tenant for every row written. Kept where tenant_id is the
--   only key (plans, outbox, audit_logs, ...) and on accounts, whose plan_id may be NULL.
-- * api_ts (0009) is STABLE, as what it calls (to_char, date_part) is: declared IMMUTABLE it could
--   not be inlined, and invoice_object, which builds every invoice event's object, called it eleven
--   times per event as a function of its own (more than half of an event's cost). Its output is
--   the same, byte for byte.
-- * Time-ordered ids (UUID version 7: 48 bits of milliseconds, 74 random) for the rows appended
--   per renewal and payment: invoices, their lines, ledger entries, payment attempts, outbox
--   events, audit rows. A random id lands on a random leaf of its primary key, so as a table
--   outgrows memory every insert reads a page and, after each checkpoint, logs all of it; a
--   time-ordered one lands on the rightmost leaf. PostgreSQL 18's uuidv7() where there is one,
--   else the same layout built from gen_random_uuid() and the clock. Existing ids stay.
-- * Two partial indexes duplicated a sibling over the same few rows, and every renewal wrote both:
--   outbox_unpublished (created_at) beside outbox_tenant_unpublished (tenant_id, created_at), both
--   WHERE published_at IS NULL, and payment_attempts_pending (created_at) beside
--   payment_attempts_account_pending (tenant_id, account_id), both WHERE outcome = 'pending'. Rows
--   leave them within seconds (published, settled), so the cross-tenant scans that used the first of
--   each (outbox_tenants_with_backlog, rebill_unsettled_accounts) read the whole of the second, as
--   small, instead. A renewal writes three outbox rows and a pending attempt: four index entries less.
-- * billing_round_state: the billing engine's state load (chalicelib/billing/engine.py) in one
--   call that runs as three statements, each with a snapshot of its own: lock the accounts (id
--   order), lock their pending invoice items, then read. A usage batch holds an account with
--   FOR KEY SHARE until it commits (usage.sql's lock_accounts), so the read, which starts once the
--   locks are granted, sees every event accepted before the round; one statement that locked and
--   read would keep its older snapshot for all but the locked rows.

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['subscriptions', 'invoices', 'invoice_lines', 'usage_events', 'ledger_entries',
                             'payment_attempts', 'invoice_items', 'credit_notes', 'refunds']
    LOOP
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', t, t || '_tenant_id_fkey');
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION api_ts(t timestamptz) RETURNS text
    LANGUAGE sql STABLE
    AS $$
        SELECT CASE WHEN date_part('microseconds', t)::bigint % 1000000 = 0
                    THEN to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                    ELSE to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') END
    $$;

DROP INDEX outbox_unpublished;
DROP INDEX payment_attempts_pending;

DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 180000 THEN
        CREATE FUNCTION uuid_time_ordered() RETURNS uuid
            LANGUAGE sql VOLATILE PARALLEL SAFE
            AS 'SELECT uuidv7()';
    ELSE
        CREATE FUNCTION uuid_time_ordered() RETURNS uuid
            LANGUAGE sql VOLATILE PARALLEL SAFE
            AS $f$
                SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                              PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                              FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
            $f$;
    END IF;
END
$$;
ALTER TABLE invoices ALTER COLUMN id SET DEFAULT uuid_time_ordered();
ALTER TABLE invoice_lines ALTER COLUMN id SET DEFAULT uuid_time_ordered();
ALTER TABLE ledger_entries ALTER COLUMN id SET DEFAULT uuid_time_ordered();
ALTER TABLE payment_attempts ALTER COLUMN id SET DEFAULT uuid_time_ordered();
ALTER TABLE outbox ALTER COLUMN id SET DEFAULT uuid_time_ordered();
ALTER TABLE audit_logs ALTER COLUMN id SET DEFAULT uuid_time_ordered();

-- The accounts of a billing round, locked in id order, each as one JSON object (json, not jsonb: built
-- as text, decoded in one call, not column by column): its status and next_billing_at, its live subscription and plan price (named
-- as periods.Subscription reads them), whether a payment of it is still pending, the metered usage
-- of the period its renewal closes (from the period's start to next_billing_at: periods.usage_window;
-- per metric, sum, count and max), its invoice items no invoice has taken yet (oldest first, locked),
-- and the tenant's grace hours. Every row is found by its key (= ANY(ids), a lateral lookup per
-- account), whatever the planner thinks of the round's size.
CREATE FUNCTION billing_round_state(ids uuid[]) RETURNS TABLE (account_key text, state json)
    LANGUAGE sql VOLATILE
    AS $$
        SELECT 1 FROM accounts WHERE id = ANY(ids) ORDER BY id FOR UPDATE;
        SELECT 1 FROM invoice_items WHERE account_id = ANY(ids) AND invoice_id IS NULL ORDER BY created_at, id FOR UPDATE;
        SELECT CAST(a.id AS text), json_build_object(
                   'account_status', a.status, 'next_billing_at', a.next_billing_at,
                   'id', s.id, 'account_id', s.account_id, 'plan_id', s.plan_id, 'plan_code', p.code,
                   'plan_name', p.name, 'interval', p.interval, 'interval_count', p.interval_count,
                   'amount', p.amount, 'currency', p.currency, 'usage_prices', p.usage_prices,
                   'trial_usage', p.trial_usage, 'billing_anchor', s.billing_anchor,
                   'current_period_start', s.current_period_start, 'current_period_end', s.current_period_end,
                   'cancel_at_period_end', s.cancel_at_period_end, 'quantity', s.quantity, 'status', s.status,
                   'trial_end', s.trial_end, 'paused_at', s.paused_at, 'pause_behavior', s.pause_behavior,
                   'resumes_at', s.resumes_at, 'current_period_paused_s', s.current_period_paused_s,
                   'current_period_paid', s.current_period_paid, 'pending_change', s.pending_change,
                   'pending_prorations', s.pending_prorations,
                   'unsettled', EXISTS (SELECT 1 FROM payment_attempts pa
                                         WHERE pa.account_id = a.id AND pa.outcome = 'pending'),
                   'usage', CASE WHEN jsonb_array_length(p.usage_prices) > 0 THEN
                       COALESCE((SELECT json_object_agg(u.metric, json_build_object('sum', u.sum, 'count', u.count,
                                                                                    'max', u.max))
                                   FROM (SELECT e.metric, CAST(sum(e.quantity) AS bigint) AS sum, count(*) AS count,
                                                max(e.quantity) AS max
                                           FROM usage_events e
                                          WHERE e.account_id = a.id AND e.occurred_at >= s.current_period_start
                                            AND e.occurred_at < a.next_billing_at
                                          GROUP BY e.metric) u), json_build_object()) END,
                   'items', (SELECT json_agg(json_build_object('id', it.id, 'description', it.description,
                                                               'quantity', it.quantity, 'unit_amount', it.unit_amount,
                                                               'amount', it.amount) ORDER BY it.created_at, it.id)
                               FROM invoice_items it WHERE it.account_id = a.id AND it.invoice_id IS NULL),
                   'grace_hours', (SELECT t.invoice_grace_hours FROM tenants t WHERE t.id = app_current_tenant()))
          FROM accounts a
          LEFT JOIN LATERAL (SELECT * FROM subscriptions l
                              WHERE l.account_id = a.id AND l.status IN ('trialing', 'active', 'past_due', 'paused')) s
                 ON true
          LEFT JOIN plans p ON p.id = s.plan_id
         WHERE a.id = ANY(ids)
         ORDER BY a.id
    $$;
