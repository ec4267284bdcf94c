-- name: subscription_recipient
-- The plan's default price and its amounts: notifications.recipient_of shows the one in the account's currency.
SELECT a.email, a.name, p.name AS plan_name, p.amount, p.currency, p.amounts, s.quantity,
       a.currency AS account_currency, s.current_period_end, s.trial_end, t.name AS sender_name
  FROM subscriptions s
  JOIN tenants t ON t.id = s.tenant_id
  JOIN accounts a ON a.id = s.account_id
  JOIN plans p ON p.id = s.plan_id
 WHERE s.id = :subscription_id;

-- name: invoice_recipient
SELECT a.email, a.name, i.id AS invoice_id, i.number, i.total, i.amount_due, i.currency, i.status,
       i.subtotal, i.total_discount, i.tax, i.total_tax_amounts, t.name AS sender_name
  FROM invoices i
  JOIN tenants t ON t.id = i.tenant_id
  JOIN accounts a ON a.id = i.account_id
 WHERE i.id = :invoice_id;

-- name: account_recipient
SELECT a.email, a.name, a.status, t.name AS sender_name
  FROM accounts a
  JOIN tenants t ON t.id = a.tenant_id
 WHERE a.id = :account_id;

-- name: tenant_admins
-- The tenant's contact address (its admins' until users are kept here).
SELECT email, name, name AS sender_name FROM tenants WHERE id = app_current_tenant();
