-- Gapless numbers per tenant and series (chalicelib/billing/numbering.py). Taking numbers
-- updates the series' row, which stays locked until the transaction ends: concurrent
-- finalizations queue here, and a rollback gives the numbers back.

-- name: number_invoices
-- The invoices in :ids (a JSON array, in finalization order) get the next numbers of the
-- tenant's invoice series, {prefix}-{000001}.
WITH ids AS (SELECT CAST(t.id AS uuid) AS id, t.ord
               FROM jsonb_array_elements_text(CAST(:ids AS jsonb)) WITH ORDINALITY AS t(id, ord)),
     prefix AS (SELECT invoice_prefix FROM tenants WHERE id = app_current_tenant()),
     block AS (INSERT INTO number_sequences (series, last_value)
               SELECT prefix.invoice_prefix, :n FROM prefix
               ON CONFLICT (tenant_id, series) DO UPDATE SET last_value = number_sequences.last_value + EXCLUDED.last_value
               RETURNING series, last_value)
UPDATE invoices i SET number = block.series || '-' || number_padded(block.last_value - :n + ids.ord)
  FROM ids, block
 WHERE i.id = ids.id AND i.number IS NULL
RETURNING i.id, i.number;

-- name: next_credit_note_number
WITH prefix AS (SELECT invoice_prefix FROM tenants WHERE id = app_current_tenant()),
     block AS (INSERT INTO number_sequences (series, last_value)
               SELECT prefix.invoice_prefix || '-CN', 1 FROM prefix
               ON CONFLICT (tenant_id, series) DO UPDATE SET last_value = number_sequences.last_value + 1
               RETURNING series, last_value)
SELECT series || '-' || number_padded(last_value) FROM block;
