-- name: create
-- A trial is the first period (trial_start to trial_end); the paid periods are anchored at its end.
INSERT INTO subscriptions (account_id, plan_id, billing_anchor, current_period_start, current_period_end, quantity,
                           status, trial_start, trial_end)
VALUES (:account_id, :plan_id, :anchor, :start, :end, :quantity, :status,
        CASE WHEN CAST(:trial_end AS timestamptz) IS NOT NULL THEN CAST(:start AS timestamptz) END,
        CAST(:trial_end AS timestamptz))
RETURNING id;

-- name: get
SELECT s.id, 'subscription' AS object, s.account_id, p.code AS plan, s.status,
       CASE p.interval WHEN 'day' THEN 'daily' WHEN 'week' THEN 'weekly'
                       WHEN 'month' THEN 'monthly' ELSE 'yearly' END AS billing_cycle,
       p.amount, s.quantity, p.currency, s.billing_anchor, s.current_period_start, s.current_period_end,
       s.cancel_at_period_end, s.canceled_at, s.ended_at, s.trial_start, s.trial_end, s.pause_behavior,
       s.paused_at, s.resumes_at, s.pending_change, s.pending_prorations, s.created_at
  FROM subscriptions s
  JOIN plans p ON p.id = s.plan_id
 WHERE s.id = :id;

-- name: live_for_account
SELECT id FROM subscriptions WHERE account_id = :account_id AND status <> 'canceled' LIMIT 1;

-- name: account_of
SELECT account_id FROM subscriptions WHERE id = :id;

-- name: lock
SELECT id, account_id, status, cancel_at_period_end, current_period_end, trial_end, pending_change
  FROM subscriptions WHERE id = :id FOR UPDATE;

-- name: list
SELECT s.id, 'subscription' AS object, s.account_id, p.code AS plan, s.status,
       CASE p.interval WHEN 'day' THEN 'daily' WHEN 'week' THEN 'weekly'
                       WHEN 'month' THEN 'monthly' ELSE 'yearly' END AS billing_cycle,
       p.amount, s.quantity, p.currency, s.billing_anchor, s.current_period_start, s.current_period_end,
       s.cancel_at_period_end, s.canceled_at, s.ended_at, s.trial_start, s.trial_end, s.pause_behavior,
       s.paused_at, s.resumes_at, s.pending_change, s.pending_prorations, s.created_at
  FROM subscriptions s
  JOIN plans p ON p.id = s.plan_id
 WHERE (CAST(:account_id AS uuid) IS NULL OR s.account_id = CAST(:account_id AS uuid))
   AND (CAST(:status AS text) IS NULL OR s.status = CAST(:status AS text))
   AND (CAST(:after AS uuid) IS NULL
        OR (s.created_at, s.id) < (SELECT created_at, id FROM subscriptions WHERE id = CAST(:after AS uuid)))
 ORDER BY s.created_at DESC, s.id DESC
 LIMIT :limit;

-- name: exists
SELECT 1 FROM subscriptions WHERE id = :id;
