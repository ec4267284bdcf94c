-- name: subscription_recipient
SELECT a.email, a.name, p.name AS plan_name, p.amount, p.currency, s.current_period_end
  FROM subscriptions s
  JOIN accounts a ON a.id = s.account_id
  JOIN plans p ON p.id = s.plan_id
 WHERE s.id = :subscription_id;

-- name: invoice_recipient
SELECT a.email, a.name, i.id AS invoice_id, i.number, i.amount_due, i.currency, i.status
  FROM invoices i
  JOIN accounts a ON a.id = i.account_id
 WHERE i.id = :invoice_id;
