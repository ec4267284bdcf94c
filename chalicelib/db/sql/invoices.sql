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

-- name: lock
SELECT id, account_id, subscription_id, billing_reason, status, currency, total, period_start
  FROM invoices WHERE id = :id FOR UPDATE;

-- name: finalize
-- A draft becomes due: numbered, finalized, open for its total (collection uses the
-- account's credit balance first when it opens the attempt).
UPDATE invoices SET status = 'open', number = :number, finalized_at = now(), due_at = now(), updated_at = now()
 WHERE id = :id AND status = 'draft'
RETURNING id, account_id, subscription_id, billing_reason, period_start, currency, amount_due;

-- name: void
UPDATE invoices SET status = 'void', amount_due = 0, updated_at = now() WHERE id = :id AND status = 'draft';

-- name: lines
SELECT id, 'line_item' AS object, kind, description, metric, quantity, unit_amount, amount, currency,
       period_start, period_end
  FROM invoice_lines
 WHERE invoice_id = :invoice_id
 ORDER BY position, id;
