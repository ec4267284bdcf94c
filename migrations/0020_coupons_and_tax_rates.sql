-- Coupons, discounts and tax rates (#18): what chalicelib/billing/adjustments.py applies to every
-- invoice's lines, read through migration 0017's billing_adjustments hook (replaced here).
--
-- * tax_rates: a tenant's rates. percentage is exact (numeric(7,4): at most 4 decimals, 0-100),
--   inclusive (the price contains the tax) or exclusive (added on top); percentage and inclusive
--   never change once made (as at Stripe), display_name, description and active do. An inactive
--   rate is no longer applied to new invoices.
-- * accounts.default_tax_rates and plans.tax_rates: rate ids (checked by the app when set). A
--   subscription's lines take their plan price's rates if it has any, else the account's
--   defaults; invoice items take the account's.
-- * coupons: percent_off (exact, at most 4 decimals) or amount_off in one currency; duration once,
--   repeating (duration_in_periods billing periods) or forever; max_redemptions, redeem_by,
--   applies_to_plans (plan codes; NULL: every plan); times_redeemed counts discounts made from it.
-- * discounts: a coupon applied to an account (subscription_id NULL) or to one subscription; at
--   most one live discount per account and per subscription (a new one replaces it). A removed
--   discount has removed_at.
-- * discount_uses: what consumed a discount, one row per (discount, invoice): a repeating discount
--   is consumed by each invoice that opens a billing period, a once discount by the invoice it
--   discounted. Written by the invoice's own statement (invoicing.sql's write) for the invoices it
--   inserts, so a retry, which inserts no invoice, consumes nothing; the key backs that up.
-- * invoices: subtotal (the charge lines), total_discount, tax (inclusive and exclusive),
--   total_discount_amounts and total_tax_amounts (per discount, per rate), and adjustments (the
--   discounts and rates the invoice was computed with: a held draft is finalized on them).
--   total = subtotal - total_discount + exclusive tax = the sum of every line.
-- * invoice_lines: kind discount (one per discount applied, negative, discount_id) and tax (one per
--   exclusive rate, tax_rate_id; signed: a credit's tax is negative); every line's
--   discount_amounts and tax_amounts.

CREATE TABLE tax_rates (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    display_name  text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 100),
    description   text CHECK (length(description) <= 500),
    percentage    numeric(7, 4) NOT NULL CHECK (percentage >= 0 AND percentage <= 100),
    inclusive     boolean NOT NULL,
    jurisdiction  text CHECK (length(jurisdiction) <= 200),
    country       text CHECK (country ~ '^[A-Z]{2}$'),
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);
CREATE INDEX tax_rates_tenant_created ON tax_rates (tenant_id, created_at, id);

CREATE TABLE coupons (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id            uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    name                 text CHECK (length(name) BETWEEN 1 AND 200),
    percent_off          numeric(7, 4) CHECK (percent_off > 0 AND percent_off <= 100),
    amount_off           bigint CHECK (amount_off > 0),
    currency             char(3) CHECK (currency ~ '^[A-Z]{3}$'),
    duration             text NOT NULL CHECK (duration IN ('once', 'repeating', 'forever')),
    duration_in_periods  integer CHECK (duration_in_periods BETWEEN 1 AND 1200),
    max_redemptions      integer CHECK (max_redemptions >= 1),
    redeem_by            timestamptz,
    applies_to_plans     text[],
    times_redeemed       integer NOT NULL DEFAULT 0 CHECK (times_redeemed >= 0),
    active               boolean NOT NULL DEFAULT true,
    created_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    CHECK ((percent_off IS NULL) <> (amount_off IS NULL)),
    CHECK ((amount_off IS NULL) = (currency IS NULL)),
    CHECK ((duration = 'repeating') = (duration_in_periods IS NOT NULL)),
    CHECK (max_redemptions IS NULL OR times_redeemed <= max_redemptions)
);
CREATE INDEX coupons_tenant_created ON coupons (tenant_id, created_at, id);

CREATE TABLE discounts (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id        uuid NOT NULL DEFAULT app_current_tenant(),
    coupon_id        uuid NOT NULL,
    account_id       uuid NOT NULL,
    subscription_id  uuid,
    start            timestamptz NOT NULL DEFAULT now(),
    removed_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, coupon_id) REFERENCES coupons (tenant_id, id),
    FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id),
    FOREIGN KEY (tenant_id, subscription_id) REFERENCES subscriptions (tenant_id, id)
);
CREATE UNIQUE INDEX discounts_one_live_per_account ON discounts (tenant_id, account_id)
    WHERE subscription_id IS NULL AND removed_at IS NULL;
CREATE UNIQUE INDEX discounts_one_live_per_subscription ON discounts (tenant_id, subscription_id)
    WHERE subscription_id IS NOT NULL AND removed_at IS NULL;
CREATE INDEX discounts_account_live ON discounts (tenant_id, account_id) WHERE removed_at IS NULL;

CREATE TABLE discount_uses (
    tenant_id    uuid NOT NULL DEFAULT app_current_tenant(),
    discount_id  uuid NOT NULL,
    invoice_id   uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, discount_id, invoice_id),
    FOREIGN KEY (tenant_id, discount_id) REFERENCES discounts (tenant_id, id),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices (tenant_id, id)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tax_rates', 'coupons', 'discounts', 'discount_uses']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = app_current_tenant())'
                       ' WITH CHECK (tenant_id = app_current_tenant())', t);
    END LOOP;
END
$$;
GRANT SELECT, INSERT, UPDATE ON tax_rates, coupons, discounts TO billing_app;
GRANT SELECT, INSERT ON discount_uses TO billing_app;

ALTER TABLE accounts ADD COLUMN default_tax_rates uuid[] NOT NULL DEFAULT '{}'
    CHECK (cardinality(default_tax_rates) <= 5);
ALTER TABLE plans ADD COLUMN tax_rates uuid[] NOT NULL DEFAULT '{}' CHECK (cardinality(tax_rates) <= 5);

ALTER TABLE invoices
    ADD COLUMN total_discount bigint NOT NULL DEFAULT 0 CHECK (total_discount >= 0),
    ADD COLUMN tax bigint NOT NULL DEFAULT 0,
    ADD COLUMN total_discount_amounts jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(total_discount_amounts) = 'array'),
    ADD COLUMN total_tax_amounts jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(total_tax_amounts) = 'array'),
    ADD COLUMN adjustments jsonb CHECK (adjustments IS NULL OR jsonb_typeof(adjustments) = 'object');

ALTER TABLE invoice_lines DROP CONSTRAINT invoice_lines_kind_check;
ALTER TABLE invoice_lines DROP CONSTRAINT invoice_lines_signed_only_prorations;
ALTER TABLE invoice_lines
    ADD COLUMN discount_amounts jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(discount_amounts) = 'array'),
    ADD COLUMN tax_amounts jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(tax_amounts) = 'array'),
    ADD COLUMN discount_id uuid,
    ADD COLUMN tax_rate_id uuid,
    ADD CONSTRAINT invoice_lines_kind_check
        CHECK (kind IN ('subscription', 'usage', 'proration', 'invoice_item', 'adjustment', 'discount', 'tax')),
    ADD CONSTRAINT invoice_lines_signed_only_prorations
        CHECK (kind IN ('proration', 'discount', 'tax') OR (amount >= 0 AND unit_amount >= 0)),
    ADD CONSTRAINT invoice_lines_discounts_reduce CHECK (kind <> 'discount' OR (amount <= 0 AND discount_id IS NOT NULL)),
    ADD CONSTRAINT invoice_lines_tax_has_rate CHECK (kind <> 'tax' OR tax_rate_id IS NOT NULL);

-- A rate as adjustments.py reads it (percentage as an exact decimal string).
CREATE FUNCTION tax_rate_terms(r tax_rates) RETURNS json
    LANGUAGE sql STABLE
    AS $$
        SELECT json_build_object('id', r.id, 'display_name', r.display_name,
                                 'percentage', CAST(trim_scale(r.percentage) AS text), 'inclusive', r.inclusive)
    $$;

-- The active rates of a list of ids, in the list's order.
CREATE FUNCTION tax_rates_of(ids uuid[]) RETURNS json
    LANGUAGE sql STABLE
    AS $$
        SELECT COALESCE(json_agg(tax_rate_terms(r) ORDER BY o.n), json_build_array())
          FROM unnest(ids) WITH ORDINALITY AS o(id, n)
          JOIN tax_rates r ON r.id = o.id AND r.active
    $$;

-- The billing periods (repeating) or invoices (once) that consumed a discount.
CREATE FUNCTION discount_used(discount uuid) RETURNS integer
    LANGUAGE sql STABLE
    AS $$ SELECT CAST(count(*) AS integer) FROM discount_uses u WHERE u.discount_id = discount $$;

-- The discounts and tax rates that apply to the account's next invoice (migration 0017's hook):
--   {"tax_rates": {"account": [rate], "plans": {plan id: [rate]}},
--    "discounts": [{id, scope, coupon, name, percent_off, amount_off, currency, duration, periods_left, plans}]}
-- plans: the subscription's plan and the plan a scheduled change moves it to (a renewal bills the new
-- one); discounts: the subscription's live discount first, then the account's, each only while it has
-- periods (repeating) or its one invoice (once) left.
CREATE OR REPLACE FUNCTION billing_adjustments(account uuid, subscription uuid, plan uuid) RETURNS json
    LANGUAGE sql STABLE
    AS $$
        SELECT json_build_object(
            'tax_rates', json_build_object(
                'account', (SELECT tax_rates_of(a.default_tax_rates) FROM accounts a WHERE a.id = account),
                'plans', (SELECT COALESCE(json_object_agg(p.id, tax_rates_of(p.tax_rates)), json_build_object())
                            FROM plans p
                           WHERE cardinality(p.tax_rates) > 0
                             AND p.id IN (plan, (SELECT CAST(s.pending_change ->> 'plan_id' AS uuid)
                                                   FROM subscriptions s WHERE s.id = subscription)))),
            'discounts', (SELECT COALESCE(json_agg(json_build_object(
                                     'id', d.id, 'scope', CASE WHEN d.subscription_id IS NULL THEN 'account'
                                                               ELSE 'subscription' END,
                                     'coupon', c.id, 'name', c.name,
                                     'percent_off', CAST(trim_scale(c.percent_off) AS text),
                                     'amount_off', c.amount_off, 'currency', c.currency, 'duration', c.duration,
                                     'periods_left', CASE c.duration WHEN 'repeating' THEN c.duration_in_periods - d.used
                                                                     WHEN 'once' THEN 1 - LEAST(d.used, 1) END,
                                     'plans', c.applies_to_plans)
                                 ORDER BY d.subscription_id IS NULL, d.created_at), json_build_array())
                            FROM (SELECT l.*, discount_used(l.id) AS used FROM discounts l
                                   WHERE l.account_id = account AND l.removed_at IS NULL
                                     AND (l.subscription_id IS NULL OR l.subscription_id = subscription)) d
                            JOIN coupons c ON c.id = d.coupon_id
                           WHERE c.duration = 'forever' OR (c.duration = 'repeating' AND d.used < c.duration_in_periods)
                              OR (c.duration = 'once' AND d.used = 0)))
    $$;

-- An invoice as the API and its events show it: migration 0009's, with its discounts and taxes.
CREATE OR REPLACE FUNCTION invoice_object(i invoices) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
        SELECT jsonb_build_object(
            'id', i.id, 'object', 'invoice', 'account_id', i.account_id, 'subscription_id', i.subscription_id,
            'billing_reason', i.billing_reason, 'number', i.number, 'status', i.status,
            'description', i.description, 'currency', i.currency, 'subtotal', i.subtotal, 'total', i.total,
            'credit_applied', i.credit_applied, 'pre_payment_credit_notes_amount', i.pre_payment_credit_notes_amount,
            'post_payment_credit_notes_amount', i.post_payment_credit_notes_amount, 'amount_due', i.amount_due,
            'amount_paid', i.amount_paid, 'period_start', api_ts(i.period_start), 'period_end', api_ts(i.period_end),
            'due_at', api_ts(i.due_at), 'auto_finalize_at', api_ts(i.auto_finalize_at),
            'finalized_at', api_ts(i.finalized_at), 'paid_at', api_ts(i.paid_at), 'voided_at', api_ts(i.voided_at),
            'marked_uncollectible_at', api_ts(i.marked_uncollectible_at), 'created_at', api_ts(i.created_at))
            || jsonb_build_object('total_discount', i.total_discount, 'tax', i.tax,
                                  'total_discount_amounts', i.total_discount_amounts,
                                  'total_tax_amounts', i.total_tax_amounts)
    $$;
