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

-- name: open_invoices
SELECT id, total, currency FROM invoices
 WHERE account_id = :account_id AND status = 'open' AND total > amount_paid
 ORDER BY period_start, id;

-- name: attempts_for_invoice
SELECT count(*) FROM payment_attempts WHERE invoice_id = :invoice_id;

-- name: record_attempt
INSERT INTO payment_attempts (account_id, invoice_id, attempt, idempotency_key, amount, currency, outcome,
                              gateway_reference, decline_code)
VALUES (:account_id, :invoice_id, :attempt, :key, :amount, :currency, :outcome, :reference, :decline_code);

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

-- name: payment_key_basis
-- Stable across a rolled-back attempt (which re-creates the invoice under a new id).
SELECT COALESCE(CAST(subscription_id AS text) || ':' || to_char(period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
                'invoice:' || CAST(id AS text))
  FROM invoices WHERE id = :invoice_id;
