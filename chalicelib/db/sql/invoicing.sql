-- name: subscription_for_invoice
SELECT s.id AS subscription_id, s.account_id, s.plan_id, p.code AS plan_code, p.name AS plan_name,
       p.amount, p.currency, p.usage_prices, a.currency AS account_currency
  FROM subscriptions s
  JOIN plans p ON p.id = s.plan_id
  JOIN accounts a ON a.id = s.account_id
 WHERE s.id = :subscription_id;

-- name: insert_invoice
-- One invoice per subscription and period: a retry finds the first one.
INSERT INTO invoices (account_id, subscription_id, number, status, currency, subtotal, total, amount_due,
                      period_start, period_end, due_at, finalized_at)
VALUES (:account_id, CAST(:subscription_id AS uuid),
        'INV-' || to_char(CAST(:period_start AS timestamptz) AT TIME ZONE 'UTC', 'YYYYMMDD') || '-'
               || upper(substr(replace(CAST(CAST(:subscription_id AS uuid) AS text), '-', ''), 1, 10)),
        'open', :currency, :total, :total, :total, :period_start, :period_end, :period_start, now())
ON CONFLICT (tenant_id, subscription_id, period_start) DO NOTHING
RETURNING id;

-- name: insert_line
INSERT INTO invoice_lines (invoice_id, kind, description, metric, quantity, unit_amount, amount, currency,
                           period_start, period_end, position)
VALUES (:invoice_id, :kind, :description, :metric, :quantity, :unit_amount, :amount, :currency,
        :period_start, :period_end, :position);

-- name: subscription_status
SELECT status FROM subscriptions WHERE id = :subscription_id;
