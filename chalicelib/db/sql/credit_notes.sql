-- Credit notes (chalicelib/billing/credit_notes.py): append-only corrections of finalized invoices.

-- name: create
INSERT INTO credit_notes (invoice_id, account_id, number, currency, amount, pre_payment_amount, credit_amount,
                          refund_amount, reason, memo, lines)
VALUES (:invoice_id, :account_id, :number, :currency, :amount, :pre, :credit, :refund, :reason, :memo,
        CAST(:lines AS jsonb))
RETURNING id, number, amount;

-- name: apply_to_invoice
-- The credit note lowers what is due first (an invoice left with nothing due is paid); the
-- rest is recorded as credited after payment.
UPDATE invoices
   SET amount_due = amount_due - :pre,
       pre_payment_credit_notes_amount = pre_payment_credit_notes_amount + :pre,
       post_payment_credit_notes_amount = post_payment_credit_notes_amount + :post,
       status = CASE WHEN status IN ('open', 'uncollectible') AND amount_due - :pre = 0 THEN 'paid' ELSE status END,
       paid_at = CASE WHEN status IN ('open', 'uncollectible') AND amount_due - :pre = 0 THEN now() ELSE paid_at END,
       updated_at = now()
 WHERE id = :id;

-- name: creditable_lines
-- Each positive line with what is left to credit on it (its amount less what credit notes took).
SELECT l.id, l.amount - COALESCE((SELECT sum(CAST(c.value ->> 'amount' AS bigint))
                                   FROM credit_notes cn, jsonb_array_elements(cn.lines) c
                                  WHERE cn.invoice_id = l.invoice_id
                                    AND c.value ->> 'invoice_line_item' = CAST(l.id AS text)), 0) AS creditable
  FROM invoice_lines l
 WHERE l.invoice_id = :invoice_id AND l.amount > 0;

-- name: get
SELECT cn.id, 'credit_note' AS object, cn.invoice_id, cn.account_id, cn.number, cn.currency, cn.amount,
       cn.pre_payment_amount, cn.credit_amount, cn.refund_amount, cn.reason, cn.memo, cn.lines, cn.created_at,
       r.id AS refund_id, r.status AS refund_status
  FROM credit_notes cn
  LEFT JOIN refunds r ON r.credit_note_id = cn.id
 WHERE cn.id = :id;

-- name: exists
SELECT 1 FROM credit_notes WHERE id = :id;

-- name: list
SELECT cn.id, 'credit_note' AS object, cn.invoice_id, cn.account_id, cn.number, cn.currency, cn.amount,
       cn.pre_payment_amount, cn.credit_amount, cn.refund_amount, cn.reason, cn.memo, cn.lines, cn.created_at,
       r.id AS refund_id, r.status AS refund_status
  FROM credit_notes cn
  LEFT JOIN refunds r ON r.credit_note_id = cn.id
 WHERE (CAST(:invoice_id AS uuid) IS NULL OR cn.invoice_id = CAST(:invoice_id AS uuid))
   AND (CAST(:after AS uuid) IS NULL
        OR (cn.created_at, cn.id) < (SELECT created_at, id FROM credit_notes WHERE id = CAST(:after AS uuid)))
 ORDER BY cn.created_at DESC, cn.id DESC
 LIMIT :limit;

-- name: of_invoice
SELECT number, amount, reason, memo, created_at, refund_amount, credit_amount
  FROM credit_notes WHERE invoice_id = :invoice_id ORDER BY created_at, number;
