-- Invoices a business can stand behind: numbers, a draft window, one-off items, credit notes,
-- refunds, voids.
--
-- * tenants.invoice_prefix: invoice numbers are {prefix}-{000001}, sequential and gapless per
--   tenant and prefix in the order invoices are finalized; credit notes {prefix}-CN-{000001}.
--   number_sequences holds the last number of each series: finalizing takes the next numbers
--   with an UPDATE of that row, so concurrent finalizations queue on it and a rollback
--   returns them (no gap). Invoices numbered before this migration keep their numbers.
-- * tenants.invoice_grace_hours: a renewal (or final) invoice stays a draft this long after its
--   boundary (auto_finalize_at); late usage and pending invoice items land on it, then it is
--   finalized. 0 (the default) finalizes at once, as before.
-- * tenants.hosted_link_key: signs the tenant's hosted invoice links (HMAC-SHA256; 244 random bits
--   from two gen_random_uuid()s, as pgcrypto is not everywhere); never returned by the API. usage_terms keeps what a draft's
--   usage lines were priced from (prices and window) so finalizing can price late usage.
-- * invoice_items: one-off charges on an account; pending (invoice_id NULL) until the
--   account's next invoice takes them.
-- * credit_notes: corrections of a finalized invoice, never edits: pre_payment_amount lowers
--   what is due, credit_amount goes to the customer's balance, refund_amount goes back
--   through the gateway (a refund). Append-only.
-- * refunds: money returned through the gateway, one per credit note, settled like a payment.
-- * invoices: amount_due = total - credit_applied - amount_paid - pre_payment credit notes,
--   enforced here for every invoice but a void one; a one-off invoice covers an instant
--   (period_end = period_start).
-- * ledger: 'void' reverses an invoice's charge; a refund is positive (money paid back out),
--   a credit negative; credit_note_id says which credit note caused an entry.

ALTER TABLE tenants
    ADD COLUMN hosted_link_key text NOT NULL DEFAULT (replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')),
    ADD COLUMN invoice_prefix text CHECK (invoice_prefix ~ '^[A-Z0-9]{3,12}$'),
    ADD COLUMN invoice_grace_hours integer NOT NULL DEFAULT 0 CHECK (invoice_grace_hours BETWEEN 0 AND 720);
UPDATE tenants SET invoice_prefix = upper(substr(replace(id::text, '-', ''), 1, 8));
ALTER TABLE tenants ALTER COLUMN invoice_prefix SET NOT NULL;
CREATE FUNCTION tenant_default_prefix() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.invoice_prefix := COALESCE(NEW.invoice_prefix, upper(substr(replace(NEW.id::text, '-', ''), 1, 8)));
    RETURN NEW;
END
$$;
CREATE TRIGGER tenants_default_prefix BEFORE INSERT ON tenants FOR EACH ROW EXECUTE FUNCTION tenant_default_prefix();

CREATE TABLE number_sequences (
    tenant_id   uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    series      text NOT NULL CHECK (length(series) BETWEEN 1 AND 40),
    last_value  bigint NOT NULL CHECK (last_value >= 0),
    PRIMARY KEY (tenant_id, series)
);
-- The one rule for numbers: take_numbers(suffix, n) takes the next n of the current tenant's
-- series {prefix}{suffix} ('' for invoices, '-CN' for credit notes), returning the series and
-- the first number taken; the series' row stays locked until the transaction ends. Under the
-- caller's rights, so row-level security applies. number_padded: 000001 .. 999999, then
-- 1000000, never truncated (a truncated number would repeat one).
CREATE FUNCTION take_numbers(suffix text, n integer) RETURNS TABLE (series text, first_value bigint)
    LANGUAGE sql VOLATILE
    AS $$
        INSERT INTO number_sequences AS s (series, last_value)
        SELECT t.invoice_prefix || suffix, n FROM tenants t WHERE t.id = app_current_tenant()
        ON CONFLICT (tenant_id, series) DO UPDATE SET last_value = s.last_value + EXCLUDED.last_value
        RETURNING s.series, s.last_value - n + 1
    $$;
CREATE FUNCTION number_padded(n bigint) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT lpad(n::text, GREATEST(6, length(n::text)), '0') $$;

ALTER TABLE invoices
    ADD COLUMN auto_finalize_at timestamptz,
    ADD COLUMN usage_terms jsonb CHECK (usage_terms IS NULL OR jsonb_typeof(usage_terms) = 'object'),
    ADD COLUMN description text CHECK (description IS NULL OR length(description) <= 500),
    ADD COLUMN pre_payment_credit_notes_amount bigint NOT NULL DEFAULT 0 CHECK (pre_payment_credit_notes_amount >= 0),
    ADD COLUMN post_payment_credit_notes_amount bigint NOT NULL DEFAULT 0
        CHECK (post_payment_credit_notes_amount >= 0),
    ADD COLUMN voided_at timestamptz,
    ADD COLUMN marked_uncollectible_at timestamptz,
    ADD CONSTRAINT invoices_amounts_add_up
        CHECK (status = 'void'
               OR amount_due = GREATEST(total, 0) - credit_applied - amount_paid - pre_payment_credit_notes_amount),
    ADD CONSTRAINT invoices_credited_within_total
        CHECK (pre_payment_credit_notes_amount + post_payment_credit_notes_amount <= GREATEST(total, 0));
CREATE INDEX invoices_drafts_due ON invoices (auto_finalize_at) WHERE status = 'draft' AND auto_finalize_at IS NOT NULL;
-- Usage ingestion asks, per account in a batch, whether a held draft still prices late usage.
CREATE INDEX invoices_held_drafts ON invoices (tenant_id, account_id) WHERE status = 'draft' AND usage_terms IS NOT NULL;
DO $$
DECLARE
    name text;
BEGIN
    FOR name IN SELECT conname FROM pg_constraint
                 WHERE conrelid = 'invoices'::regclass AND contype = 'c'
                   AND pg_get_constraintdef(oid) LIKE '%period_end > period_start%' LOOP
        EXECUTE format('ALTER TABLE invoices DROP CONSTRAINT %I', name);
    END LOOP;
END
$$;
ALTER TABLE invoices ADD CONSTRAINT invoices_period_ordered CHECK (period_end >= period_start);

CREATE TABLE invoice_items (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    account_id   uuid NOT NULL,
    invoice_id   uuid,
    currency     char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    description  text NOT NULL CHECK (length(description) BETWEEN 1 AND 500),
    quantity     bigint NOT NULL CHECK (quantity BETWEEN 1 AND 1000000),
    unit_amount  bigint NOT NULL CHECK (unit_amount >= 0),
    amount       bigint NOT NULL CHECK (amount = quantity * unit_amount),
    metadata     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices (tenant_id, id)
);
CREATE INDEX invoice_items_pending ON invoice_items (tenant_id, account_id, created_at) WHERE invoice_id IS NULL;
CREATE INDEX invoice_items_tenant_created ON invoice_items (tenant_id, created_at, id);

ALTER TABLE invoice_lines DROP CONSTRAINT invoice_lines_kind_check;
ALTER TABLE invoice_lines
    ADD COLUMN invoice_item_id uuid,
    ADD CONSTRAINT invoice_lines_kind_check
        CHECK (kind IN ('subscription', 'usage', 'proration', 'invoice_item', 'adjustment'));

CREATE TABLE credit_notes (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id           uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    invoice_id          uuid NOT NULL,
    account_id          uuid NOT NULL,
    number              text NOT NULL,
    currency            char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount              bigint NOT NULL CHECK (amount > 0),
    pre_payment_amount  bigint NOT NULL CHECK (pre_payment_amount >= 0),
    credit_amount       bigint NOT NULL CHECK (credit_amount >= 0),
    refund_amount       bigint NOT NULL CHECK (refund_amount >= 0),
    reason              text NOT NULL
                        CHECK (reason IN ('duplicate', 'fraudulent', 'order_change', 'product_unsatisfactory')),
    memo                text CHECK (memo IS NULL OR length(memo) <= 500),
    lines               jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(lines) = 'array'),
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (pre_payment_amount + credit_amount + refund_amount = amount),
    UNIQUE (tenant_id, id),
    UNIQUE (tenant_id, number),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices (tenant_id, id),
    FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX credit_notes_invoice ON credit_notes (tenant_id, invoice_id, created_at);
CREATE INDEX credit_notes_tenant_created ON credit_notes (tenant_id, created_at, id);
CREATE TRIGGER credit_notes_append_only BEFORE UPDATE OR DELETE ON credit_notes
    FOR EACH ROW EXECUTE FUNCTION reject_mutation();

CREATE TABLE refunds (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id           uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    account_id          uuid NOT NULL,
    invoice_id          uuid NOT NULL,
    credit_note_id      uuid NOT NULL,
    payment_attempt_id  uuid NOT NULL REFERENCES payment_attempts (id),
    amount              bigint NOT NULL CHECK (amount > 0),
    currency            char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    idempotency_key     text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    status              text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    gateway_reference   text,
    failure_code        text,
    claimed_until       timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    resolved_at         timestamptz,
    UNIQUE (tenant_id, idempotency_key),
    UNIQUE (tenant_id, credit_note_id),
    FOREIGN KEY (tenant_id, credit_note_id) REFERENCES credit_notes (tenant_id, id),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices (tenant_id, id),
    FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX refunds_pending ON refunds (tenant_id, account_id) WHERE status = 'pending';

ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_entry_type_check;
ALTER TABLE ledger_entries
    ADD COLUMN credit_note_id uuid,
    ADD CONSTRAINT ledger_entries_entry_type_check
        CHECK (entry_type IN ('charge', 'payment', 'payment_failed', 'credit', 'refund', 'void', 'adjustment')),
    ADD CONSTRAINT ledger_entries_credit_negative CHECK (entry_type <> 'credit' OR amount <= 0),
    ADD CONSTRAINT ledger_entries_refund_positive CHECK (entry_type <> 'refund' OR amount >= 0),
    ADD CONSTRAINT ledger_entries_void_negative CHECK (entry_type <> 'void' OR amount <= 0),
    ADD CONSTRAINT ledger_entries_credit_note FOREIGN KEY (tenant_id, credit_note_id)
        REFERENCES credit_notes (tenant_id, id);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['number_sequences', 'invoice_items', 'credit_notes', 'refunds']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = app_current_tenant())'
                       ' WITH CHECK (tenant_id = app_current_tenant())', t);
    END LOOP;
END
$$;
GRANT SELECT, INSERT, UPDATE ON number_sequences, invoice_items, refunds TO billing_app;
GRANT DELETE ON invoice_items TO billing_app;
GRANT SELECT, INSERT ON credit_notes TO billing_app;

-- Drafts whose grace period is over, across tenants, for the finalizer: one more id-only door.
CREATE POLICY background_read ON invoices FOR SELECT TO billing_system USING (true);
GRANT SELECT ON invoices TO billing_system;
CREATE FUNCTION drafts_due(as_of timestamptz, max_rows integer)
    RETURNS TABLE (tenant_id uuid, invoice_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$
        SELECT i.tenant_id, i.id
          FROM invoices i
         WHERE i.status = 'draft' AND i.auto_finalize_at <= as_of
         ORDER BY i.auto_finalize_at, i.id
         LIMIT max_rows
    $$;
ALTER FUNCTION drafts_due(timestamptz, integer) OWNER TO billing_system;
REVOKE ALL ON FUNCTION drafts_due(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION drafts_due(timestamptz, integer) TO billing_app;

-- Invoice events come from the invoices' own changes, set-based, in the transaction that made
-- them, so no path that writes an invoice (a billing round, a finalization, a payment, dunning,
-- a credit note, a void) can forget one: invoice.created when it is written;
-- invoice.finalized when it is numbered (every finalization numbers it, so the event carries
-- its number: a billing round's invoices are born numbered, a draft is numbered when it is
-- finalized); invoice.paid when a numbered invoice is paid (or is numbered paid);
-- invoice.voided; invoice.marked_uncollectible.
CREATE FUNCTION invoice_events() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO outbox (tenant_id, event_type, payload)
        SELECT n.tenant_id, e.event_type, invoice_event(n)
          FROM new_rows n
         CROSS JOIN LATERAL (VALUES ('invoice.created', true),
                                    ('invoice.finalized', n.number IS NOT NULL),
                                    ('invoice.paid', n.number IS NOT NULL AND n.status = 'paid')) AS e(event_type, fires)
         WHERE e.fires;
    ELSE
        INSERT INTO outbox (tenant_id, event_type, payload)
        SELECT n.tenant_id, e.event_type, invoice_event(n)
          FROM new_rows n
          JOIN old_rows o ON o.id = n.id AND (o.status, o.number) IS DISTINCT FROM (n.status, n.number)
         CROSS JOIN LATERAL (
               VALUES ('invoice.finalized', o.number IS NULL AND n.number IS NOT NULL),
                      ('invoice.paid', n.status = 'paid' AND n.number IS NOT NULL
                                       AND (o.status <> 'paid' OR o.number IS NULL)),
                      ('invoice.voided', n.status = 'void' AND o.status <> 'void'),
                      ('invoice.marked_uncollectible', n.status = 'uncollectible' AND o.status <> 'uncollectible')
               ) AS e(event_type, fires)
         WHERE e.fires;
    END IF;
    RETURN NULL;
END
$$;
CREATE FUNCTION invoice_event(i invoices) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
        SELECT jsonb_build_object('invoiceId', i.id, 'accountId', i.account_id, 'subscriptionId', i.subscription_id,
                                  'number', i.number, 'status', i.status, 'currency', i.currency, 'total', i.total,
                                  'amountDue', i.amount_due, 'timestamp', now())
    $$;
CREATE TRIGGER invoices_created_events AFTER INSERT ON invoices
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION invoice_events();
CREATE TRIGGER invoices_status_events AFTER UPDATE ON invoices
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION invoice_events();

-- Refunds a timeout or a crash left pending, for the scheduled finalizer to settle again.
CREATE POLICY background_read ON refunds FOR SELECT TO billing_system USING (true);
GRANT SELECT ON refunds TO billing_system;
CREATE FUNCTION refunds_pending(max_rows integer)
    RETURNS TABLE (tenant_id uuid, refund_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$
        SELECT r.tenant_id, r.id
          FROM refunds r
         WHERE r.status = 'pending' AND r.created_at <= now() - interval '5 minutes'
           AND (r.claimed_until IS NULL OR r.claimed_until < now())
         ORDER BY r.created_at, r.id
         LIMIT max_rows
    $$;
ALTER FUNCTION refunds_pending(integer) OWNER TO billing_system;
REVOKE ALL ON FUNCTION refunds_pending(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION refunds_pending(integer) TO billing_app;
