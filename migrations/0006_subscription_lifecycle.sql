-- The subscription lifecycle: plan and quantity changes with proration, trials, pause and resume.
--
-- * subscriptions.quantity: the plan price is billed times the quantity (seats).
-- * trialing: a trial bills nothing until trial_end, where the first paid period
--   starts (billing_anchor = trial_end). trial_will_end_sent: the reminder 3 days
--   before went out (once).
-- * paused: not billed while paused (accounts.next_billing_at is NULL, or the
--   scheduled resumes_at); pause_behavior says what resuming does with the paused time.
--   Resuming moves the period's end on by the time paused; current_period_paused_s
--   keeps that time, so a proration divides by the time the period was paid for.
-- * current_period_paid: the flat fee the rest of the current period was paid at (a change
--   without proration leaves it; NULL: the plan price times the quantity), so unused
--   time is credited at what was paid for it.
-- * pending_change: a change scheduled for the end of the current period
--   (plan price, quantity), applied by the renewal at that boundary.
-- * pending_prorations: proration lines (credit for unused time, charge for the
--   remaining time) waiting for the subscription's next invoice, whatever its reason.
-- * invoices: a change can be invoiced now (billing_reason subscription_update);
--   an invoice whose credits exceed its charges has a negative total, is paid on
--   issue and posts a ledger credit; credit_applied is the account's credit
--   balance an invoice used (amount_due = total - credit_applied).
-- * invoice_lines: proration lines, signed (a credit is negative).
-- * plans: a default trial length and whether usage during a trial is billed.

ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_status_check;
ALTER TABLE subscriptions ADD CONSTRAINT subscriptions_status_check
    CHECK (status IN ('trialing', 'active', 'past_due', 'paused', 'canceled', 'unpaid'));
ALTER TABLE subscriptions
    ADD COLUMN quantity integer NOT NULL DEFAULT 1 CHECK (quantity BETWEEN 1 AND 1000000),
    ADD COLUMN trial_start timestamptz,
    ADD COLUMN trial_end timestamptz,
    ADD COLUMN trial_will_end_sent boolean NOT NULL DEFAULT false,
    ADD COLUMN pause_behavior text CHECK (pause_behavior IN ('void', 'keep_as_draft')),
    ADD COLUMN paused_at timestamptz,
    ADD COLUMN resumes_at timestamptz,
    ADD COLUMN current_period_paused_s bigint NOT NULL DEFAULT 0 CHECK (current_period_paused_s >= 0),
    ADD COLUMN current_period_paid bigint CHECK (current_period_paid >= 0),
    ADD COLUMN pending_change jsonb CHECK (pending_change IS NULL OR jsonb_typeof(pending_change) = 'object'),
    ADD COLUMN pending_prorations jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(pending_prorations) = 'array'),
    ADD CONSTRAINT subscriptions_paused_has_pause CHECK (status <> 'paused' OR (paused_at IS NOT NULL AND pause_behavior IS NOT NULL)),
    ADD CONSTRAINT subscriptions_trial_ends_after_start CHECK (trial_end IS NULL OR trial_end > trial_start);
CREATE INDEX subscriptions_trial_ending ON subscriptions (trial_end)
    WHERE status = 'trialing' AND NOT trial_will_end_sent;

ALTER TABLE plans
    ADD COLUMN trial_days integer NOT NULL DEFAULT 0 CHECK (trial_days BETWEEN 0 AND 730),
    ADD COLUMN trial_usage text NOT NULL DEFAULT 'free' CHECK (trial_usage IN ('free', 'billed'));

ALTER TABLE invoices DROP CONSTRAINT invoices_billing_reason_check;
ALTER TABLE invoices ADD CONSTRAINT invoices_billing_reason_check
    CHECK (billing_reason IN ('subscription_create', 'subscription_cycle', 'subscription_update',
                              'subscription_cancel', 'manual'));
ALTER TABLE invoices DROP CONSTRAINT invoices_subtotal_check;
ALTER TABLE invoices DROP CONSTRAINT invoices_total_check;
DO $$
DECLARE
    name text;
BEGIN
    -- 0001 declared it on the column, so PostgreSQL named it: find it by what it checks.
    FOR name IN SELECT conname FROM pg_constraint
                 WHERE conrelid = 'invoices'::regclass AND contype = 'c'
                   AND pg_get_constraintdef(oid) LIKE '%amount_paid <= total%' LOOP
        EXECUTE format('ALTER TABLE invoices DROP CONSTRAINT %I', name);
    END LOOP;
END
$$;
ALTER TABLE invoices
    ADD COLUMN credit_applied bigint NOT NULL DEFAULT 0 CHECK (credit_applied >= 0),
    ADD CONSTRAINT invoices_amount_paid_check CHECK (amount_paid >= 0 AND amount_paid <= GREATEST(total, 0)),
    ADD CONSTRAINT invoices_due_within_total CHECK (amount_due + credit_applied <= GREATEST(total, 0));

ALTER TABLE invoice_lines DROP CONSTRAINT invoice_lines_kind_check;
ALTER TABLE invoice_lines DROP CONSTRAINT invoice_lines_amount_check;
ALTER TABLE invoice_lines DROP CONSTRAINT invoice_lines_unit_amount_check;
ALTER TABLE invoice_lines
    ADD CONSTRAINT invoice_lines_kind_check CHECK (kind IN ('subscription', 'usage', 'proration', 'adjustment')),
    ADD CONSTRAINT invoice_lines_signed_only_prorations
        CHECK (kind = 'proration' OR (amount >= 0 AND unit_amount >= 0));

-- An account's credit balance, the one rule: what the ledger owes the account beyond its
-- open and uncollectible invoices (their amount due less the balance), never below zero.
-- New invoices use it first, and so does a new payment attempt at an open invoice. Under
-- the caller's rights, so row-level security applies.
CREATE FUNCTION account_credit(account uuid) RETURNS bigint
    LANGUAGE sql STABLE
    AS $$
        SELECT GREATEST(0,
                 (SELECT COALESCE(sum(i.amount_due), 0) FROM invoices i
                   WHERE i.account_id = account AND i.status IN ('open', 'uncollectible'))
               - (SELECT COALESCE(sum(l.amount), 0) FROM ledger_entries l WHERE l.account_id = account))::bigint
    $$;

-- The daily run reminds tenants of trials ending soon (subscription.trial_will_end),
-- finding them across tenants through one more id-only door.
CREATE POLICY background_read ON subscriptions FOR SELECT TO billing_system USING (true);
GRANT SELECT ON subscriptions TO billing_system;
CREATE FUNCTION trials_ending(as_of timestamptz, until timestamptz, max_rows integer)
    RETURNS TABLE (tenant_id uuid, subscription_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$
        SELECT s.tenant_id, s.id
          FROM subscriptions s
         WHERE s.status = 'trialing' AND NOT s.trial_will_end_sent AND s.trial_end > as_of AND s.trial_end <= until
         ORDER BY s.tenant_id, s.id
         LIMIT max_rows
    $$;
ALTER FUNCTION trials_ending(timestamptz, timestamptz, integer) OWNER TO billing_system;
REVOKE ALL ON FUNCTION trials_ending(timestamptz, timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION trials_ending(timestamptz, timestamptz, integer) TO billing_app;
