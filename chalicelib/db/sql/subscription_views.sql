-- name: list
-- Also one subscription (:id), for GET and events, or several (:ids, a JSON array: a billing round's
-- events): one shape, one statement. amount and currency are the plan's default price; with the plan's
-- amounts and the account's currency, subscription_views.view shows the price the account pays.
SELECT s.id, 'subscription' AS object, s.account_id, p.code AS plan, s.status,
       CASE p.interval WHEN 'day' THEN 'daily' WHEN 'week' THEN 'weekly'
                       WHEN 'month' THEN 'monthly' ELSE 'yearly' END AS billing_cycle,
       p.amount, s.quantity, p.currency, s.billing_anchor, s.current_period_start, s.current_period_end,
       s.cancel_at_period_end, s.canceled_at, s.ended_at, s.trial_start, s.trial_end, s.pause_behavior,
       s.paused_at, s.resumes_at, s.pending_change, s.pending_prorations, s.created_at,
       p.amounts, a.currency AS account_currency
  FROM subscriptions s
  JOIN plans p ON p.id = s.plan_id
  JOIN accounts a ON a.id = s.account_id
 WHERE (CAST(:id AS uuid) IS NULL OR s.id = CAST(:id AS uuid))
   AND (CAST(:ids AS jsonb) IS NULL
        OR s.id = ANY(ARRAY(SELECT CAST(value AS uuid) FROM jsonb_array_elements_text(CAST(:ids AS jsonb)))))
   AND (CAST(:account_id AS uuid) IS NULL OR s.account_id = CAST(:account_id AS uuid))
   AND (CAST(:status AS text) IS NULL OR s.status = CAST(:status AS text))
   AND (CAST(:after AS uuid) IS NULL
        OR (s.created_at, s.id) < (SELECT created_at, id FROM subscriptions WHERE id = CAST(:after AS uuid)))
 ORDER BY s.created_at DESC, s.id DESC
 LIMIT :limit;

-- name: exists
SELECT 1 FROM subscriptions WHERE id = :id;
