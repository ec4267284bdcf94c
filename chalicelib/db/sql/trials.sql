-- Trial reminders (chalicelib/billing/trials.py).

-- name: ending
SELECT tenant_id, subscription_id FROM trials_ending(:until, :max_rows);

-- name: mark_reminded
-- Once per trial: a second run (or a concurrent one) finds them marked.
UPDATE subscriptions SET trial_will_end_sent = true
 WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'trialing' AND NOT trial_will_end_sent
RETURNING id, account_id, trial_end;
