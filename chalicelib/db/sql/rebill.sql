-- name: due_page
SELECT tenant_id, account_id, due_at, kind FROM rebill_due_accounts(:as_of, :after_at, :after_id, :max_rows);

-- name: retry_page
SELECT tenant_id, account_id, due_at, kind FROM rebill_retry_accounts(:as_of, :after_at, :after_id, :max_rows);

-- name: lock_account
SELECT id, currency, status, next_billing_at, payment_retry_at, failure_count
  FROM accounts WHERE id = :id FOR UPDATE;

-- name: live_subscription
SELECT s.id, s.plan_id, s.status, s.billing_anchor, s.current_period_start, s.current_period_end,
       s.cancel_at_period_end, p.interval, p.interval_count, p.amount, p.currency, p.usage_prices
  FROM subscriptions s
  JOIN plans p ON p.id = s.plan_id
 WHERE s.account_id = :account_id AND s.status IN ('active', 'past_due')
 ORDER BY s.created_at DESC
 LIMIT 1
 FOR UPDATE OF s;

-- name: usage_totals
SELECT metric, CAST(sum(quantity) AS bigint) AS sum, count(*) AS count, max(quantity) AS max
  FROM usage_events
 WHERE account_id = :account_id AND occurred_at >= :from_at AND occurred_at < :to_at
 GROUP BY metric;

-- name: advance_subscription
UPDATE subscriptions SET current_period_start = :start, current_period_end = :end WHERE id = :id;

-- name: advance_account
UPDATE accounts SET next_billing_at = :next_billing_at WHERE id = :id;

-- name: end_subscription
UPDATE subscriptions SET status = 'canceled', canceled_at = now() WHERE id = :id;

-- name: stop_billing
UPDATE accounts SET next_billing_at = NULL WHERE id = :id;

-- name: mark_paid
UPDATE invoices SET status = 'paid', amount_paid = total, amount_due = 0, paid_at = now() WHERE id = :id;

-- name: mark_uncollectible
UPDATE invoices SET status = 'uncollectible' WHERE account_id = :account_id AND status = 'open';

-- name: set_dunning
UPDATE accounts
   SET status = :status, failure_count = :failure_count, payment_retry_at = :retry_at,
       next_billing_at = CASE WHEN :status = 'INACTIVE' THEN NULL ELSE next_billing_at END
 WHERE id = :id;

-- name: set_subscription_status
UPDATE subscriptions SET status = :status WHERE account_id = :account_id AND status IN ('active', 'past_due');

-- name: live_subscription_readonly
SELECT s.id, s.current_period_start, s.cancel_at_period_end, p.amount, p.currency, p.usage_prices
  FROM subscriptions s
  JOIN plans p ON p.id = s.plan_id
 WHERE s.account_id = :account_id AND s.status IN ('active', 'past_due')
 ORDER BY s.created_at DESC
 LIMIT 1;

-- name: settle_page
SELECT tenant_id, account_id, due_at, kind FROM rebill_unsettled_accounts(:as_of, :after_at, :after_id, :max_rows);

-- name: pending_for_invoice
SELECT id, account_id, invoice_id, idempotency_key, amount, currency
  FROM payment_attempts WHERE invoice_id = :invoice_id AND outcome = 'pending';

-- name: pending_for_account
SELECT id, account_id, invoice_id, idempotency_key, amount, currency
  FROM payment_attempts WHERE account_id = :account_id AND outcome = 'pending'
 ORDER BY created_at;

-- name: open_attempt
-- The key is built from what the invoice is for (subscription and period), not
-- its row id, and the attempt number from this invoice's earlier attempts.
INSERT INTO payment_attempts (account_id, invoice_id, attempt, idempotency_key, amount, currency, outcome)
SELECT CAST(:account_id AS uuid), i.id, n.attempt,
       'pay:' || COALESCE(CAST(i.subscription_id AS text) || ':'
                          || to_char(i.period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
                          'invoice:' || CAST(i.id AS text)) || ':' || n.attempt,
       CAST(:amount AS bigint), CAST(:currency AS text), 'pending'
  FROM invoices i
 CROSS JOIN (SELECT count(*) AS attempt FROM payment_attempts WHERE invoice_id = :invoice_id) n
 WHERE i.id = :invoice_id
RETURNING id, account_id, invoice_id, idempotency_key, amount, currency;

-- name: lock_attempt
SELECT outcome FROM payment_attempts WHERE id = :id FOR UPDATE;

-- name: resolve_attempt
UPDATE payment_attempts
   SET outcome = :outcome, gateway_reference = :reference, decline_code = :decline_code, resolved_at = now()
 WHERE id = :id;

-- name: oldest_open_invoice
SELECT id, amount_due, currency FROM invoices
 WHERE account_id = :account_id AND status = 'open' AND amount_due > 0
 ORDER BY period_start, id
 LIMIT 1;

-- name: next_billing_at
SELECT next_billing_at FROM accounts WHERE id = :id;

-- name: lease_retry
UPDATE accounts SET payment_retry_at = :lease_until WHERE id = :id;

-- name: batch_accounts
-- The group's accounts with their live subscription, locked in id order (no
-- deadlock between concurrent batches).
SELECT a.id, a.status, a.next_billing_at, a.failure_count, a.currency AS account_currency,
       s.id AS subscription_id, s.billing_anchor, s.current_period_start, s.cancel_at_period_end,
       p.id AS plan_id, p.code AS plan_code, p.name AS plan_name, p.interval, p.interval_count, p.amount,
       p.currency, p.usage_prices,
       EXISTS (SELECT 1 FROM payment_attempts pa WHERE pa.account_id = a.id AND pa.outcome = 'pending') AS unsettled
  FROM accounts a
  LEFT JOIN subscriptions s ON s.account_id = a.id AND s.status IN ('active', 'past_due')
  LEFT JOIN plans p ON p.id = s.plan_id
 WHERE a.id = ANY(CAST(:ids AS uuid[]))
 ORDER BY a.id
 FOR UPDATE OF a;

-- name: batch_usage_totals
SELECT u.account_id, u.metric, CAST(sum(u.quantity) AS bigint) AS sum, count(*) AS count, max(u.quantity) AS max
  FROM jsonb_to_recordset(CAST(:windows AS jsonb)) AS w(account_id uuid, from_at timestamptz, to_at timestamptz)
  JOIN usage_events u ON u.account_id = w.account_id AND u.occurred_at >= w.from_at AND u.occurred_at < w.to_at
 GROUP BY u.account_id, u.metric;

-- name: batch_invoices
INSERT INTO invoices (account_id, subscription_id, number, status, currency, subtotal, total, amount_due,
                      period_start, period_end, due_at, finalized_at)
SELECT v.account_id, v.subscription_id,
       'INV-' || to_char(v.period_start AT TIME ZONE 'UTC', 'YYYYMMDD') || '-'
              || upper(substr(replace(CAST(v.subscription_id AS text), '-', ''), 1, 10)),
       'open', v.currency, v.total, v.total, v.total, v.period_start, v.period_end, v.period_start, now()
  FROM jsonb_to_recordset(CAST(:rows AS jsonb))
       AS v(account_id uuid, subscription_id uuid, currency text, total bigint, period_start timestamptz,
            period_end timestamptz)
ON CONFLICT (tenant_id, subscription_id, period_start) DO NOTHING
RETURNING id, account_id;

-- name: batch_lines
INSERT INTO invoice_lines (invoice_id, kind, description, metric, quantity, unit_amount, amount, currency,
                           period_start, period_end, position)
SELECT v.invoice_id, v.kind, v.description, v.metric, v.quantity, v.unit_amount, v.amount, v.currency,
       v.period_start, v.period_end, v.position
  FROM jsonb_to_recordset(CAST(:rows AS jsonb))
       AS v(invoice_id uuid, kind text, description text, metric text, quantity bigint, unit_amount bigint,
            amount bigint, currency text, period_start timestamptz, period_end timestamptz, position integer);

-- name: batch_ledger
INSERT INTO ledger_entries (account_id, entry_type, amount, currency, invoice_id, period_start, idempotency_key,
                            description, metadata)
SELECT v.account_id, v.entry_type, v.amount, v.currency, v.invoice_id, v.period_start, v.idempotency_key,
       v.description, COALESCE(v.metadata, '{}')
  FROM jsonb_to_recordset(CAST(:rows AS jsonb))
       AS v(account_id uuid, entry_type text, amount bigint, currency text, invoice_id uuid,
            period_start timestamptz, idempotency_key text, description text, metadata jsonb)
ON CONFLICT (tenant_id, idempotency_key) DO NOTHING;

-- name: batch_advance
WITH v AS (SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
                  AS v(account_id uuid, subscription_id uuid, period_start timestamptz, period_end timestamptz)),
     subs AS (UPDATE subscriptions s SET current_period_start = v.period_start, current_period_end = v.period_end
                FROM v WHERE s.id = v.subscription_id)
UPDATE accounts a SET next_billing_at = v.period_end FROM v WHERE a.id = v.account_id;

-- name: batch_intents
INSERT INTO payment_attempts (account_id, invoice_id, attempt, idempotency_key, amount, currency, outcome)
SELECT v.account_id, v.invoice_id, 0, v.idempotency_key, v.amount, v.currency, 'pending'
  FROM jsonb_to_recordset(CAST(:rows AS jsonb))
       AS v(account_id uuid, invoice_id uuid, idempotency_key text, amount bigint, currency text)
RETURNING id, account_id, invoice_id, idempotency_key, amount, currency;

-- name: batch_lock_pending
SELECT id FROM payment_attempts WHERE id = ANY(CAST(:ids AS uuid[])) AND outcome = 'pending' ORDER BY id FOR UPDATE;

-- name: batch_resolve_paid
WITH v AS (SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
                  AS v(attempt_id uuid, reference text, invoice_id uuid)),
     resolved AS (UPDATE payment_attempts p SET outcome = 'succeeded', gateway_reference = v.reference,
                         resolved_at = now()
                    FROM v WHERE p.id = v.attempt_id)
UPDATE invoices i SET status = 'paid', amount_paid = total, amount_due = 0, paid_at = now()
  FROM v WHERE i.id = v.invoice_id;
