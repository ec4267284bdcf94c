-- name: create
-- A trial is the first period (trial_start to trial_end); the paid periods are anchored at its end.
INSERT INTO subscriptions (account_id, plan_id, billing_anchor, current_period_start, current_period_end, quantity,
                           status, trial_start, trial_end)
VALUES (:account_id, :plan_id, :anchor, :start, :end, :quantity, :status,
        CASE WHEN CAST(:trial_end AS timestamptz) IS NOT NULL THEN CAST(:start AS timestamptz) END,
        CAST(:trial_end AS timestamptz))
RETURNING id;

-- name: live_for_account
SELECT id FROM subscriptions WHERE account_id = :account_id AND status <> 'canceled' LIMIT 1;

-- name: account_of
SELECT account_id FROM subscriptions WHERE id = :id;

-- name: lock
SELECT id, account_id, status, cancel_at_period_end, current_period_end, trial_end, pending_change
  FROM subscriptions WHERE id = :id FOR UPDATE;

