-- name: list
SELECT id, 'invoice' AS object, account_id, subscription_id, billing_reason, number, status, currency, subtotal, total,
       credit_applied, amount_due, amount_paid, period_start, period_end, due_at, finalized_at, paid_at, created_at
  FROM invoices
 WHERE (CAST(:account_id AS uuid) IS NULL OR account_id = CAST(:account_id AS uuid))
   AND (CAST(:status AS text) IS NULL OR status = CAST(:status AS text))
   AND (CAST(:period_start_gte AS timestamptz) IS NULL OR period_start >= CAST(:period_start_gte AS timestamptz))
   AND (CAST(:period_start_lt AS timestamptz) IS NULL OR period_start < CAST(:period_start_lt AS timestamptz))
   AND (CAST(:after AS uuid) IS NULL
        OR (created_at, id) < (SELECT created_at, id FROM invoices WHERE id = CAST(:after AS uuid)))
 ORDER BY created_at DESC, id DESC
 LIMIT :limit;

-- name: exists
SELECT 1 FROM invoices WHERE id = :id;

-- name: get
SELECT id, 'invoice' AS object, account_id, subscription_id, billing_reason, number, status, currency, subtotal, total,
       credit_applied, amount_due, amount_paid, period_start, period_end, due_at, finalized_at, paid_at, created_at
  FROM invoices
 WHERE id = :id;

-- name: lines
SELECT id, 'line_item' AS object, kind, description, metric, quantity, unit_amount, amount, currency,
       period_start, period_end
  FROM invoice_lines
 WHERE invoice_id = :invoice_id
 ORDER BY position, id;
