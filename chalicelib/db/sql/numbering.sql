-- Gapless numbers per tenant and series (chalicelib/billing/numbering.py), through the one
-- rule, take_numbers() (migration 0007): the series' row stays locked until the transaction
-- ends, so concurrent finalizations queue there and a rollback gives the numbers back.

-- name: number_invoices
-- The drafts in :ids (a JSON array, in finalization order) get the next numbers of the
-- tenant's invoice series, {prefix}-{000001}.
WITH ids AS (SELECT CAST(t.id AS uuid) AS id, t.ord
               FROM jsonb_array_elements_text(CAST(:ids AS jsonb)) WITH ORDINALITY AS t(id, ord)),
     block AS (SELECT series, first_value FROM take_numbers('', :n))
UPDATE invoices i SET number = block.series || '-' || number_padded(block.first_value + ids.ord - 1)
  FROM ids, block
 WHERE i.id = ids.id AND i.number IS NULL
RETURNING i.id, i.number;

-- name: next_credit_note_number
SELECT series || '-' || number_padded(first_value) FROM take_numbers('-CN', 1);
