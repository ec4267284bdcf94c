-- The one writer of bills (chalicelib/billing/invoicing.py): every statement takes a
-- JSON array of rows, so a batch of bills costs one statement per table, and a single
-- account is a batch of one.

-- name: write_invoices
-- One invoice per subscription, reason and period: a retry finds the first one (the account is
-- locked, so nothing else writes it meanwhile) and writes nothing (absent from RETURNING). An
-- invoice is born numbered, from the tenant's series (take_numbers: gapless, only for the rows
-- written); a draft is neither due nor numbered. An invoice whose credits exceed its charges
-- (a negative total) is paid on issue and its credit joins the account's credit balance; an
-- invoice with a positive total uses that balance first (credit_applied; the balance is the
-- account_credit function's).
WITH v AS (SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
                  AS v(account_id uuid, subscription_id uuid, billing_reason text, currency text,
                       total bigint, period_start timestamptz, period_end timestamptz, boundary timestamptz,
                       draft boolean, auto_finalize_at timestamptz, usage_terms jsonb)),
     fresh AS (SELECT v.*, row_number() OVER (PARTITION BY v.draft ORDER BY v.account_id) AS ord
                 FROM v
                WHERE NOT EXISTS (SELECT 1 FROM invoices i
                                   WHERE i.subscription_id = v.subscription_id AND i.billing_reason = v.billing_reason
                                     AND i.period_start = v.period_start)),
     block AS (SELECT series, first_value
                 FROM take_numbers('', CAST((SELECT count(*) FROM fresh WHERE NOT fresh.draft) AS integer))),
     credit AS (SELECT f.account_id,
                       CASE WHEN f.draft OR f.total <= 0 THEN 0
                            ELSE LEAST(f.total, account_credit(f.account_id)) END AS applied
                  FROM fresh f)
INSERT INTO invoices (account_id, subscription_id, billing_reason, number, status, currency, subtotal, total,
                      credit_applied, amount_due, amount_paid, period_start, period_end, due_at, finalized_at,
                      paid_at, auto_finalize_at, usage_terms)
SELECT f.account_id, f.subscription_id, f.billing_reason,
       CASE WHEN NOT f.draft THEN b.series || '-' || number_padded(b.first_value + f.ord - 1) END,
       CASE WHEN f.draft THEN 'draft' WHEN f.total - c.applied <= 0 THEN 'paid' ELSE 'open' END,
       f.currency, f.total, f.total, c.applied,
       CASE WHEN f.draft THEN GREATEST(f.total, 0) ELSE GREATEST(f.total - c.applied, 0) END, 0,
       f.period_start, f.period_end, f.boundary,
       CASE WHEN NOT f.draft THEN now() END, CASE WHEN NOT f.draft AND f.total - c.applied <= 0 THEN now() END,
       f.auto_finalize_at, f.usage_terms
  FROM fresh f JOIN credit c ON c.account_id = f.account_id CROSS JOIN block b
RETURNING id, account_id, amount_due;

-- name: write_lines
-- The lines, in order; an invoice item a line bills is attached to its invoice (no longer pending).
WITH lines AS (
    INSERT INTO invoice_lines (invoice_id, kind, description, metric, quantity, unit_amount, amount, currency,
                               period_start, period_end, position, invoice_item_id)
    SELECT v.invoice_id, v.kind, v.description, v.metric, v.quantity, v.unit_amount, v.amount, v.currency,
           v.period_start, v.period_end, v.position, v.invoice_item_id
      FROM jsonb_to_recordset(CAST(:rows AS jsonb))
           AS v(invoice_id uuid, kind text, description text, metric text, quantity bigint, unit_amount bigint,
                amount bigint, currency text, period_start timestamptz, period_end timestamptz, position integer,
                invoice_item_id uuid)
    RETURNING invoice_id, invoice_item_id)
UPDATE invoice_items it SET invoice_id = lines.invoice_id
  FROM lines
 WHERE it.id = lines.invoice_item_id AND it.invoice_id IS NULL;

-- name: grace_hours
SELECT invoice_grace_hours FROM tenants WHERE id = app_current_tenant();

-- name: pending_items
-- The accounts' invoice items not yet on an invoice, oldest first, locked until they are, with
-- each account's status (whether what they add is collected now).
SELECT it.id, it.account_id, it.description, it.quantity, it.unit_amount, it.amount, a.status AS account_status
  FROM invoice_items it
  JOIN accounts a ON a.id = it.account_id
 WHERE it.account_id IN (SELECT CAST(value AS uuid) FROM jsonb_array_elements_text(CAST(:ids AS jsonb)))
   AND it.invoice_id IS NULL
 ORDER BY it.created_at, it.id
   FOR UPDATE OF it;

-- name: draft_lines
SELECT kind, description, metric, quantity, unit_amount, amount, period_start, period_end, invoice_item_id
  FROM invoice_lines WHERE invoice_id = :invoice_id ORDER BY position, id;

-- name: clear_lines
-- A draft's lines, about to be written again as it is finalized.
DELETE FROM invoice_lines WHERE invoice_id = :invoice_id;

-- name: restate
-- A subscription as it goes on after a bill (its terms, period, status, scheduled change and
-- waiting prorations) and when its account is next billed. A subscription going (back) to
-- active whose account is in dunning (PENDING) is past_due, as dunning would have set it;
-- a new trial end re-arms the trial_will_end reminder.
WITH v AS (SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
                  AS v(account_id uuid, subscription_id uuid, plan_id uuid, quantity integer, status text,
                       billing_anchor timestamptz, period_start timestamptz, period_end timestamptz,
                       paused_s bigint, paid bigint, trial_end timestamptz, cancel_at_period_end boolean,
                       paused_at timestamptz,
                       pause_behavior text, resumes_at timestamptz, pending_change jsonb,
                       pending_prorations jsonb, next_billing_at timestamptz)),
     subs AS (UPDATE subscriptions s
                 SET plan_id = v.plan_id, quantity = v.quantity,
                     status = CASE WHEN v.status = 'active' AND (SELECT a.status FROM accounts a
                                                                  WHERE a.id = v.account_id) = 'PENDING'
                                   THEN 'past_due' ELSE v.status END,
                     billing_anchor = v.billing_anchor, current_period_start = v.period_start,
                     current_period_end = v.period_end, current_period_paused_s = v.paused_s,
                     current_period_paid = v.paid, trial_end = v.trial_end,
                     trial_will_end_sent = s.trial_will_end_sent AND v.trial_end IS NOT DISTINCT FROM s.trial_end, cancel_at_period_end = v.cancel_at_period_end,
                     paused_at = v.paused_at, pause_behavior = v.pause_behavior, resumes_at = v.resumes_at,
                     pending_change = v.pending_change, pending_prorations = v.pending_prorations,
                     updated_at = now()
                FROM v WHERE s.id = v.subscription_id)
UPDATE accounts a SET next_billing_at = v.next_billing_at, plan_id = v.plan_id FROM v WHERE a.id = v.account_id;

-- name: end_subscriptions
-- The subscription ends at the bill's boundary and its account is billed no more.
WITH v AS (SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
                  AS v(account_id uuid, subscription_id uuid, ended_at timestamptz)),
     subs AS (UPDATE subscriptions s
                 SET status = 'canceled', canceled_at = COALESCE(s.canceled_at, v.ended_at), ended_at = v.ended_at,
                     cancel_at_period_end = false
                FROM v WHERE s.id = v.subscription_id)
UPDATE accounts a SET next_billing_at = NULL FROM v WHERE a.id = v.account_id;

-- name: usage_totals
-- Each window's metered usage per metric: sum, count and max of the quantities.
SELECT u.account_id, u.metric, CAST(sum(u.quantity) AS bigint) AS sum, count(*) AS count, max(u.quantity) AS max
  FROM jsonb_to_recordset(CAST(:windows AS jsonb)) AS w(account_id uuid, from_at timestamptz, to_at timestamptz)
  JOIN usage_events u ON u.account_id = w.account_id AND u.occurred_at >= w.from_at AND u.occurred_at < w.to_at
 GROUP BY u.account_id, u.metric;

-- name: subscription_state
-- A subscription with its plan price, as periods.Subscription reads it, and its account's status.
SELECT s.id, s.account_id, s.plan_id, p.code AS plan_code, p.name AS plan_name, p.interval, p.interval_count,
       p.amount, p.currency, p.usage_prices, p.trial_usage, s.billing_anchor, s.current_period_start,
       s.current_period_end, s.cancel_at_period_end, s.quantity, s.status, s.trial_end, s.paused_at,
       s.pause_behavior, s.resumes_at, s.current_period_paused_s, s.current_period_paid, s.pending_change,
       s.pending_prorations,
       EXISTS (SELECT 1 FROM invoices i WHERE i.subscription_id = s.id AND i.billing_reason = 'subscription_create')
         AS first_invoiced
  FROM subscriptions s
  JOIN plans p ON p.id = s.plan_id
 WHERE s.id = :subscription_id;

-- name: write_one_off
-- A one-off invoice (billing_reason manual): a draft for an instant, no subscription.
INSERT INTO invoices (account_id, billing_reason, status, currency, subtotal, total, amount_due, period_start,
                      period_end, description)
VALUES (:account_id, 'manual', 'draft', :currency, :total, :total, GREATEST(CAST(:total AS bigint), 0), :at, :at,
        :description)
RETURNING id;
