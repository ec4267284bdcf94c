-- Trial reminders (chalicelib/billing/trials.py).

-- name: ending
SELECT tenant_id, subscription_id FROM trials_ending(:as_of, :until, :max_rows);

-- name: lock_accounts
-- The accounts first, in id order: the order every billing path locks them in.
SELECT a.id FROM accounts a
 WHERE a.id IN (SELECT s.account_id FROM subscriptions s WHERE s.id = ANY(CAST(:ids AS uuid[])))
 ORDER BY a.id
   FOR UPDATE OF a;

-- name: mark_reminded
-- Once per trial: a second run (or a concurrent one) finds them marked.
UPDATE subscriptions SET trial_will_end_sent = true
 WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'trialing' AND NOT trial_will_end_sent
RETURNING id, account_id, trial_end;
