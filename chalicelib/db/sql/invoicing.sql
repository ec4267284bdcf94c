-- The one writer of bills (chalicelib/billing/invoicing.py): every statement takes a
-- JSON array of rows, so a batch of bills costs one statement, and a single account is a
-- batch of one.

-- name: write
-- A round's bills in one statement (a single account's bill is a round of one): :invoices (the bills
-- with lines), :lines (each invoice's, by account) and :states (each subscription as its bill leaves
-- it, or ends).
-- * One invoice per subscription, reason and period: a retry finds the first one (the account is
--   locked, so nothing else writes it meanwhile) and writes nothing for it (absent from the result:
--   no lines, no charge, no payment attempt). An invoice is born numbered, from the tenant's series
--   (take_numbers: gapless, only for the rows written); a draft is neither due nor numbered. An
--   invoice whose credits exceed its charges (a negative total) is paid on issue and its credit joins
--   the account's credit balance; an invoice with a positive total uses that balance first
--   (credit_applied; the balance is the account_credit function's).
-- * The lines, in order (a line with no period of its own has the invoice's); an invoice item a line
--   bills is attached to its invoice (no longer pending).
-- * The discounts each invoice consumes (adjustments.apply: a repeating discount's period, a once
--   discount's invoice), for the invoices written only: a retry consumes nothing.
-- * The ledger entry of each invoice but a draft: its total, charge or credit, under the bill's
--   charge key (a key already posted is skipped, as ledger.post_many skips it).
-- * The first payment attempt of each invoice left with something to collect (periods.payment_key's
--   key), pending; with :claim, claimed by this transaction's caller for :lease_s seconds, which
--   settles it right after commit (collection.settle_many); a key the gateway deduplicates on.
-- * Each subscription as its bill leaves it (its terms, period, status, scheduled change, waiting
--   prorations) and when its account is next billed: a subscription going (back) to active whose
--   account is in dunning (PENDING) is past_due, as dunning would have set it; a new trial end re-arms
--   the trial_will_end reminder. One whose last bill this was ends at its boundary, and its account is
--   billed no more.
-- Every row it reads or changes is found by its key (a lateral lookup, = ANY(ARRAY(...))), whatever
-- the planner makes of the JSON's size.
/* prepared */ WITH b AS (SELECT * FROM json_to_recordset(CAST(:invoices AS json))
                  AS b(account_id uuid, subscription_id uuid, billing_reason text, currency text,
                       total bigint, period_start timestamptz, period_end timestamptz, boundary timestamptz,
                       draft boolean, auto_finalize_at timestamptz, usage_terms jsonb, collect boolean,
                       pay_key text, entry_type text, charge_key text, description text, subtotal bigint,
                       total_discount bigint, tax bigint, total_discount_amounts jsonb, total_tax_amounts jsonb,
                       adjustments jsonb, consumes json)),
     fresh AS (SELECT b.*, row_number() OVER (PARTITION BY b.draft ORDER BY b.account_id) AS ord
                 FROM b
                 LEFT JOIN LATERAL (SELECT true AS found FROM invoices i
                                     WHERE i.subscription_id = b.subscription_id AND i.billing_reason = b.billing_reason
                                       AND i.period_start = b.period_start
                                     LIMIT 1) e ON true
                WHERE e.found IS NULL),
     block AS (SELECT series, first_value
                 FROM take_numbers('', CAST((SELECT count(*) FROM fresh WHERE NOT fresh.draft) AS integer))
                WHERE EXISTS (SELECT 1 FROM fresh)),
     credit AS MATERIALIZED (SELECT f.account_id,
                       CASE WHEN f.draft OR f.total <= 0 THEN 0
                            ELSE LEAST(f.total, account_credit(f.account_id)) END AS applied
                  FROM fresh f),
     inv AS (INSERT INTO invoices (account_id, subscription_id, billing_reason, number, status, currency, subtotal,
                                   total, credit_applied, amount_due, amount_paid, period_start, period_end, due_at,
                                   finalized_at, paid_at, auto_finalize_at, usage_terms, total_discount, tax,
                                   total_discount_amounts, total_tax_amounts, adjustments)
             SELECT f.account_id, f.subscription_id, f.billing_reason,
                    CASE WHEN NOT f.draft THEN k.series || '-' || number_padded(k.first_value + f.ord - 1) END,
                    CASE WHEN f.draft THEN 'draft' WHEN f.total - c.applied <= 0 THEN 'paid' ELSE 'open' END,
                    f.currency, f.subtotal, f.total, c.applied,
                    CASE WHEN f.draft THEN GREATEST(f.total, 0) ELSE GREATEST(f.total - c.applied, 0) END, 0,
                    f.period_start, f.period_end, f.boundary,
                    CASE WHEN NOT f.draft THEN now() END,
                    CASE WHEN NOT f.draft AND f.total - c.applied <= 0 THEN now() END,
                    f.auto_finalize_at, f.usage_terms, f.total_discount, f.tax, f.total_discount_amounts,
                    f.total_tax_amounts, f.adjustments
               FROM fresh f JOIN credit c ON c.account_id = f.account_id CROSS JOIN block k
             RETURNING id, account_id, amount_due),
     lines AS (INSERT INTO invoice_lines (invoice_id, kind, description, metric, quantity, unit_amount, amount,
                                          currency, period_start, period_end, position, invoice_item_id,
                                          discount_amounts, tax_amounts, discount_id, tax_rate_id)
               SELECT inv.id, l.kind, l.description, l.metric, l.quantity, l.unit_amount, l.amount, l.currency,
                      COALESCE(l.period_start, f.period_start), COALESCE(l.period_end, f.period_end), l.position,
                      l.invoice_item_id, l.discount_amounts, l.tax_amounts, l.discount_id, l.tax_rate_id
                 FROM json_to_recordset(CAST(:lines AS json))
                      AS l(account_id uuid, kind text, description text, metric text, quantity bigint,
                           unit_amount bigint, amount bigint, currency text, period_start timestamptz,
                           period_end timestamptz, position integer, invoice_item_id uuid, discount_amounts jsonb,
                           tax_amounts jsonb, discount_id uuid, tax_rate_id uuid)
                 JOIN inv ON inv.account_id = l.account_id
                 JOIN fresh f ON f.account_id = l.account_id
               RETURNING invoice_id, invoice_item_id),
     taken AS (UPDATE invoice_items it SET invoice_id = lines.invoice_id
                 FROM lines
                WHERE it.id = lines.invoice_item_id AND it.invoice_id IS NULL),
     used AS (INSERT INTO discount_uses (discount_id, invoice_id)
              SELECT CAST(d.value AS uuid), inv.id
                FROM inv JOIN fresh f ON f.account_id = inv.account_id
                CROSS JOIN LATERAL json_array_elements_text(f.consumes) d
              ON CONFLICT DO NOTHING),
     charged AS (INSERT INTO ledger_entries (account_id, entry_type, amount, currency, invoice_id, period_start,
                                             idempotency_key, description)
                 SELECT f.account_id, f.entry_type, f.total, f.currency, inv.id, f.boundary, f.charge_key,
                        f.description
                   FROM inv JOIN fresh f ON f.account_id = inv.account_id
                  WHERE NOT f.draft
                 ON CONFLICT (tenant_id, idempotency_key) DO NOTHING),
     opened AS (INSERT INTO payment_attempts (account_id, invoice_id, attempt, idempotency_key, amount, currency,
                                              outcome, claimed_until)
                SELECT inv.account_id, inv.id, 0, f.pay_key, inv.amount_due, f.currency, 'pending',
                       CASE WHEN CAST(:claim AS boolean) THEN now() + make_interval(secs => :lease_s) END
                  FROM inv JOIN fresh f ON f.account_id = inv.account_id
                 WHERE f.collect AND NOT f.draft AND inv.amount_due > 0
                RETURNING id, invoice_id, idempotency_key, amount, currency),
     st AS (SELECT * FROM json_to_recordset(CAST(:states AS json))
                   AS st(account_id uuid, subscription_id uuid, ends boolean, ended_at timestamptz, plan_id uuid,
                         quantity integer, status text, billing_anchor timestamptz, period_start timestamptz,
                         period_end timestamptz, paused_s bigint, paid bigint, trial_end timestamptz,
                         cancel_at_period_end boolean, paused_at timestamptz, pause_behavior text,
                         resumes_at timestamptz, pending_change jsonb, pending_prorations jsonb,
                         next_billing_at timestamptz)),
     restated AS (UPDATE subscriptions s
                     SET plan_id = st.plan_id, quantity = st.quantity,
                         status = CASE WHEN st.status = 'active' AND (SELECT a.status FROM accounts a
                                                                       WHERE a.id = st.account_id) = 'PENDING'
                                       THEN 'past_due' ELSE st.status END,
                         billing_anchor = st.billing_anchor, current_period_start = st.period_start,
                         current_period_end = st.period_end, current_period_paused_s = st.paused_s,
                         current_period_paid = st.paid, trial_end = st.trial_end,
                         trial_will_end_sent = s.trial_will_end_sent AND st.trial_end IS NOT DISTINCT FROM s.trial_end,
                         cancel_at_period_end = st.cancel_at_period_end, paused_at = st.paused_at,
                         pause_behavior = st.pause_behavior, resumes_at = st.resumes_at,
                         pending_change = st.pending_change, pending_prorations = st.pending_prorations,
                         updated_at = now()
                    FROM st
                   WHERE s.id = ANY(ARRAY(SELECT subscription_id FROM st)) AND s.id = st.subscription_id
                     AND NOT st.ends),
     ended AS (UPDATE subscriptions s
                  SET status = 'canceled', canceled_at = COALESCE(s.canceled_at, st.ended_at), ended_at = st.ended_at,
                      cancel_at_period_end = false
                 FROM st
                WHERE s.id = ANY(ARRAY(SELECT subscription_id FROM st)) AND s.id = st.subscription_id AND st.ends),
     moved AS (UPDATE accounts a
                  SET next_billing_at = st.next_billing_at, plan_id = CASE WHEN st.ends THEN a.plan_id ELSE st.plan_id END
                 FROM st
                WHERE a.id = ANY(ARRAY(SELECT account_id FROM st)) AND a.id = st.account_id)
SELECT CAST(inv.account_id AS text) AS account_id, CAST(inv.id AS text) AS invoice_id, inv.amount_due,
       CAST(o.id AS text) AS attempt_id, o.idempotency_key, o.amount, CAST(o.currency AS text) AS currency
  FROM inv LEFT JOIN opened o ON o.invoice_id = inv.id;

-- name: write_lines
-- The lines, in order; an invoice item a line bills is attached to its invoice (no longer pending).
WITH lines AS (
    INSERT INTO invoice_lines (invoice_id, kind, description, metric, quantity, unit_amount, amount, currency,
                               period_start, period_end, position, invoice_item_id, discount_amounts, tax_amounts,
                               discount_id, tax_rate_id)
    SELECT v.invoice_id, v.kind, v.description, v.metric, v.quantity, v.unit_amount, v.amount, v.currency,
           v.period_start, v.period_end, v.position, v.invoice_item_id, v.discount_amounts, v.tax_amounts,
           v.discount_id, v.tax_rate_id
      FROM jsonb_to_recordset(CAST(:rows AS jsonb))
           AS v(invoice_id uuid, kind text, description text, metric text, quantity bigint, unit_amount bigint,
                amount bigint, currency text, period_start timestamptz, period_end timestamptz, position integer,
                invoice_item_id uuid, discount_amounts jsonb, tax_amounts jsonb, discount_id uuid, tax_rate_id uuid)
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
-- A draft's charge lines (its discount and tax lines are made again when it is finalized).
SELECT kind, description, metric, quantity, unit_amount, amount, period_start, period_end, invoice_item_id
  FROM invoice_lines WHERE invoice_id = :invoice_id AND kind NOT IN ('discount', 'tax') ORDER BY position, id;

-- name: set_amounts
-- An invoice's sums of its lines (adjustments.summary) as its lines are written again, and the discounts
-- it consumes (a key already there is skipped).
WITH used AS (INSERT INTO discount_uses (discount_id, invoice_id)
              SELECT CAST(d.value AS uuid), CAST(:invoice_id AS uuid)
                FROM jsonb_array_elements_text(CAST(:consumes AS jsonb)) d
              ON CONFLICT DO NOTHING)
UPDATE invoices
   SET subtotal = :subtotal, total_discount = :total_discount, tax = :tax,
       total_discount_amounts = CAST(:total_discount_amounts AS jsonb),
       total_tax_amounts = CAST(:total_tax_amounts AS jsonb), adjustments = CAST(:adjustments AS jsonb),
       updated_at = now()
 WHERE id = :invoice_id;

-- name: account_adjustments
-- The discounts and tax rates of an account's invoice that bills no subscription (billing_adjustments).
SELECT billing_adjustments(CAST(:account_id AS uuid), NULL, NULL);

-- name: clear_lines
-- A draft's lines, about to be written again as it is finalized.
DELETE FROM invoice_lines WHERE invoice_id = :invoice_id;

-- name: usage_totals
-- Each window's metered usage as its usage prices aggregate it (billing_usage, migration 0017: the
-- function a billing round reads usage through).
SELECT w.account_id, billing_usage(w.account_id, w.from_at, w.to_at, w.prices) AS usage
  FROM jsonb_to_recordset(CAST(:windows AS jsonb)) AS w(account_id uuid, from_at timestamptz, to_at timestamptz,
                                                         prices jsonb);

-- name: subscription_state
-- A subscription with its plan price, as periods.Subscription reads it (with its account's currency, the
-- plan's amounts per currency and the adjustments of migration 0017's hooks), and its account's status.
SELECT s.id, s.account_id, s.plan_id, p.code AS plan_code, p.name AS plan_name, p.interval, p.interval_count,
       p.amount, p.currency, p.usage_prices, p.trial_usage, s.billing_anchor, s.current_period_start,
       s.current_period_end, s.cancel_at_period_end, s.quantity, s.status, s.trial_end, s.paused_at,
       s.pause_behavior, s.resumes_at, s.current_period_paused_s, s.current_period_paid, s.pending_change,
       s.pending_prorations, a.currency AS account_currency, p.amounts,
       billing_adjustments(s.account_id, s.id, s.plan_id) AS adjustments,
       EXISTS (SELECT 1 FROM invoices i WHERE i.subscription_id = s.id AND i.billing_reason = 'subscription_create')
         AS first_invoiced
  FROM subscriptions s
  JOIN plans p ON p.id = s.plan_id
  JOIN accounts a ON a.id = s.account_id
 WHERE s.id = :subscription_id;

-- name: write_one_off
-- A one-off invoice (billing_reason manual): a draft for an instant, no subscription.
INSERT INTO invoices (account_id, billing_reason, status, currency, subtotal, total, amount_due, period_start,
                      period_end, description)
VALUES (:account_id, 'manual', 'draft', :currency, :total, :total, GREATEST(CAST(:total AS bigint), 0), :at, :at,
        :description)
RETURNING id;
