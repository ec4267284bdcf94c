-- Pricing (#18): the three hooks a billing instant's state is read through, so each part of a price
-- list is written once, and every path that bills (a round's billing_round_state, one subscription's
-- invoicing.sql subscription_state, a held draft's usage priced again) reads it the same way:
--
-- * billing_usage(account, from, to, usage_prices): the metered usage of a window as the plan's usage
--   prices aggregate it (chalicelib/billing/usage_charges.py prices it). Here: per metric, sum, count
--   and max of the quantities, as before; the aggregations migration replaces it.
-- * billing_adjustments(account, subscription, plan): the discounts and tax rates that apply to the
--   account's next invoice (chalicelib/billing/adjustments.py applies them). Here: none.
-- * plans.amounts: a plan code's flat amount per currency ({"USD": 4900, "EUR": 4500}); the account's
--   currency picks its price. Empty: the plan's one amount and currency.

ALTER TABLE plans ADD COLUMN amounts jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(amounts) = 'object');

CREATE FUNCTION billing_usage(account uuid, from_at timestamptz, to_at timestamptz, prices jsonb) RETURNS json
    LANGUAGE sql STABLE
    AS $$
        SELECT CASE WHEN jsonb_array_length(prices) > 0 THEN
            COALESCE((SELECT json_object_agg(u.metric, json_build_object('sum', u.sum, 'count', u.count, 'max', u.max))
                        FROM (SELECT e.metric, CAST(sum(e.quantity) AS bigint) AS sum, count(*) AS count,
                                     max(e.quantity) AS max
                                FROM usage_events e
                               WHERE e.account_id = account AND e.occurred_at >= from_at AND e.occurred_at < to_at
                               GROUP BY e.metric) u), json_build_object()) END
    $$;

CREATE FUNCTION billing_adjustments(account uuid, subscription uuid, plan uuid) RETURNS json
    LANGUAGE sql STABLE
    AS $$ SELECT json_build_object() $$;

CREATE OR REPLACE FUNCTION billing_round_state(ids uuid[]) RETURNS TABLE (account_key text, state json)
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
                   'usage', billing_usage(a.id, s.current_period_start, a.next_billing_at, p.usage_prices),
                   'account_currency', a.currency, 'amounts', p.amounts,
                   'adjustments', billing_adjustments(a.id, s.id, s.plan_id),
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
