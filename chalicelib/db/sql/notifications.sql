-- name: subscription_recipient
SELECT a.email, a.name, p.name AS plan_name, p.amount, p.currency, s.current_period_end
  FROM subscriptions s
  JOIN accounts a ON a.id = s.account_id
  JOIN plans p ON p.id = s.plan_id
 WHERE s.id = :subscription_id;
