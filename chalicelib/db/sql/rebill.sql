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
