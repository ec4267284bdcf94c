-- name: list
SELECT id, 'invoice' AS object, account_id, subscription_id, billing_reason, number, status, description, currency,
       subtotal, total, credit_applied, pre_payment_credit_notes_amount, post_payment_credit_notes_amount, amount_due,
       amount_paid, period_start, period_end, due_at, auto_finalize_at, finalized_at, paid_at, voided_at,
       marked_uncollectible_at, created_at, total_discount, tax, total_discount_amounts, total_tax_amounts
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
SELECT id, 'invoice' AS object, account_id, subscription_id, billing_reason, number, status, description, currency,
       subtotal, total, credit_applied, pre_payment_credit_notes_amount, post_payment_credit_notes_amount, amount_due,
       amount_paid, period_start, period_end, due_at, auto_finalize_at, finalized_at, paid_at, voided_at,
       marked_uncollectible_at, created_at, total_discount, tax, total_discount_amounts, total_tax_amounts
  FROM invoices
 WHERE id = :id;

-- name: lock
SELECT id, account_id, subscription_id, billing_reason, number, status, description, currency, total, credit_applied,
       pre_payment_credit_notes_amount, post_payment_credit_notes_amount, amount_due, amount_paid, period_start,
       period_end, due_at, auto_finalize_at, usage_terms, adjustments
  FROM invoices WHERE id = :id FOR UPDATE;

-- name: finalize
-- A draft becomes due at its revised total: open (collection uses the account's credit
-- balance first when it opens the attempt), or paid when nothing is owed. Numbered last. (Its subtotal,
-- discounts and taxes were written with its revised lines: invoicing.revise_draft.)
UPDATE invoices
   SET status = CASE WHEN CAST(:total AS bigint) <= 0 THEN 'paid' ELSE 'open' END,
       total = :total, amount_due = GREATEST(CAST(:total AS bigint), 0),
       finalized_at = now(), due_at = now(),
       paid_at = CASE WHEN CAST(:total AS bigint) <= 0 THEN now() END, updated_at = now()
 WHERE id = :id AND status = 'draft'
RETURNING id, account_id, subscription_id, billing_reason, period_start, currency, amount_due;

-- name: void
UPDATE invoices SET status = 'void', amount_due = 0, voided_at = now(), updated_at = now()
 WHERE id = :id AND status IN ('draft', 'open', 'uncollectible');

-- name: release_items
-- A voided draft's invoice items are pending again (the account's next invoice takes them).
UPDATE invoice_items SET invoice_id = NULL WHERE invoice_id = :id;

-- name: mark_uncollectible
UPDATE invoices SET status = 'uncollectible', marked_uncollectible_at = now(), updated_at = now()
 WHERE id = :id AND status = 'open';

-- name: drafts_due
SELECT tenant_id, invoice_id FROM drafts_due(:as_of, :max_rows);

-- name: lines
SELECT id, 'line_item' AS object, kind, description, metric, quantity, unit_amount, amount, currency,
       period_start, period_end, invoice_item_id, discount_amounts, tax_amounts, discount_id, tax_rate_id
  FROM invoice_lines
 WHERE invoice_id = :invoice_id
 ORDER BY position, id;
