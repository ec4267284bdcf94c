-- One-off charges on an account (chalicelib/billing/invoice_items.py); invoicing.sql attaches them.

-- name: create
INSERT INTO invoice_items (account_id, currency, description, quantity, unit_amount, amount, metadata)
VALUES (:account_id, :currency, :description, :quantity, :unit_amount, CAST(:quantity AS bigint) * :unit_amount,
        CAST(:metadata AS jsonb))
RETURNING id, 'invoice_item' AS object, account_id, invoice_id, currency, description, quantity, unit_amount, amount,
          metadata, created_at;

-- name: get
SELECT id, 'invoice_item' AS object, account_id, invoice_id, currency, description, quantity, unit_amount, amount,
       metadata, created_at
  FROM invoice_items WHERE id = :id;

-- name: exists
SELECT 1 FROM invoice_items WHERE id = :id;

-- name: delete_pending
DELETE FROM invoice_items WHERE id = :id AND invoice_id IS NULL RETURNING id;

-- name: list
SELECT id, 'invoice_item' AS object, account_id, invoice_id, currency, description, quantity, unit_amount, amount,
       metadata, created_at
  FROM invoice_items
 WHERE (CAST(:account_id AS uuid) IS NULL OR account_id = CAST(:account_id AS uuid))
   AND (CAST(:pending AS boolean) IS NULL OR (invoice_id IS NULL) = CAST(:pending AS boolean))
   AND (CAST(:after AS uuid) IS NULL
        OR (created_at, id) < (SELECT created_at, id FROM invoice_items WHERE id = CAST(:after AS uuid)))
 ORDER BY created_at DESC, id DESC
 LIMIT :limit;

-- name: pending_total
SELECT COALESCE(sum(amount), 0) FROM invoice_items WHERE account_id = :account_id AND invoice_id IS NULL;
