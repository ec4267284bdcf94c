-- The billing engine (chalicelib/billing/engine.py): the state a billing instant is computed from.

-- name: billing_state
-- The accounts with their live subscription and its plan price, locked in id order
-- (no deadlock between concurrent batches). Subscription columns are named as
-- periods.Subscription reads them.
SELECT a.id AS account_key, a.status AS account_status, a.next_billing_at,
       s.id, s.account_id, s.plan_id, p.code AS plan_code, p.name AS plan_name, p.interval, p.interval_count,
       p.amount, p.currency, p.usage_prices, p.trial_usage, s.billing_anchor, s.current_period_start,
       s.current_period_end, s.cancel_at_period_end, s.quantity, s.status, s.trial_end, s.paused_at,
       s.pause_behavior, s.resumes_at, s.current_period_paused_s, s.current_period_paid, s.pending_change,
       s.pending_prorations,
       EXISTS (SELECT 1 FROM payment_attempts pa WHERE pa.account_id = a.id AND pa.outcome = 'pending') AS unsettled
  FROM accounts a
  LEFT JOIN subscriptions s ON s.account_id = a.id AND s.status IN ('trialing', 'active', 'past_due', 'paused')
  LEFT JOIN plans p ON p.id = s.plan_id
 WHERE a.id = ANY(CAST(:ids AS uuid[]))
 ORDER BY a.id
 FOR UPDATE OF a;

-- name: stop_billing
UPDATE accounts SET next_billing_at = NULL WHERE id = ANY(CAST(:ids AS uuid[]));
