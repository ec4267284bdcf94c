-- The one writer of bills (chalicelib/billing/invoicing.py): every statement takes a
-- JSON array of rows, so a batch of bills costs one statement per table, and a single
-- account is a batch of one.

-- name: write_invoices
-- One invoice per subscription, reason and period: a retry finds the first one and
-- writes nothing (absent from RETURNING). A zero total is paid on issue.
INSERT INTO invoices (account_id, subscription_id, billing_reason, number, status, currency, subtotal, total,
                      amount_due, amount_paid, period_start, period_end, due_at, finalized_at, paid_at)
SELECT v.account_id, v.subscription_id, v.billing_reason, v.number,
       CASE WHEN v.total = 0 THEN 'paid' ELSE 'open' END, v.currency, v.total, v.total,
       v.total, 0, v.period_start, v.period_end, v.boundary, now(), CASE WHEN v.total = 0 THEN now() END
  FROM jsonb_to_recordset(CAST(:rows AS jsonb))
       AS v(account_id uuid, subscription_id uuid, billing_reason text, number text, currency text, total bigint,
            period_start timestamptz, period_end timestamptz, boundary timestamptz)
ON CONFLICT (tenant_id, subscription_id, billing_reason, period_start) DO NOTHING
RETURNING id, account_id;

-- name: write_lines
INSERT INTO invoice_lines (invoice_id, kind, description, metric, quantity, unit_amount, amount, currency,
                           period_start, period_end, position)
SELECT v.invoice_id, v.kind, v.description, v.metric, v.quantity, v.unit_amount, v.amount, v.currency,
       v.period_start, v.period_end, v.position
  FROM jsonb_to_recordset(CAST(:rows AS jsonb))
       AS v(invoice_id uuid, kind text, description text, metric text, quantity bigint, unit_amount bigint,
            amount bigint, currency text, period_start timestamptz, period_end timestamptz, position integer);

-- name: advance_periods
WITH v AS (SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
                  AS v(account_id uuid, subscription_id uuid, period_start timestamptz, period_end timestamptz)),
     subs AS (UPDATE subscriptions s SET current_period_start = v.period_start, current_period_end = v.period_end
                FROM v WHERE s.id = v.subscription_id)
UPDATE accounts a SET next_billing_at = v.period_end FROM v WHERE a.id = v.account_id;

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
       p.amount, p.currency, p.usage_prices, s.billing_anchor, s.current_period_start, s.current_period_end,
       s.cancel_at_period_end, s.status
  FROM subscriptions s
  JOIN plans p ON p.id = s.plan_id
 WHERE s.id = :subscription_id;
