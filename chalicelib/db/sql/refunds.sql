-- Refunds (chalicelib/billing/refunds.py): pending, claimed by one settler, resolved once.

-- name: refundable
-- What the gateway collected for the invoice (its amount paid) less refunds not failed.
SELECT CAST(:amount_paid AS bigint) - COALESCE(sum(amount), 0)
  FROM refunds WHERE invoice_id = :invoice_id AND status <> 'failed';

-- name: open
-- The refund goes against the invoice's successful payment.
WITH paid AS (SELECT id, account_id, gateway_reference FROM payment_attempts
               WHERE invoice_id = :invoice_id AND outcome = 'succeeded'
               ORDER BY created_at DESC LIMIT 1)
INSERT INTO refunds (account_id, invoice_id, credit_note_id, payment_attempt_id, amount, currency, idempotency_key)
SELECT paid.account_id, :invoice_id, :credit_note_id, paid.id, :amount, :currency, :key FROM paid
RETURNING id, account_id, credit_note_id, idempotency_key, amount, currency,
          (SELECT gateway_reference FROM paid) AS charge_reference;

-- name: get
SELECT r.id, r.account_id, r.credit_note_id, r.idempotency_key, r.amount, r.currency,
       p.gateway_reference AS charge_reference, CAST(extract(epoch FROM now() - r.created_at) AS integer) AS age_s
  FROM refunds r JOIN payment_attempts p ON p.id = r.payment_attempt_id
 WHERE r.id = :id;

-- name: pending_of_credit_note
SELECT r.id, r.account_id, r.credit_note_id, r.idempotency_key, r.amount, r.currency,
       p.gateway_reference AS charge_reference, CAST(extract(epoch FROM now() - r.created_at) AS integer) AS age_s
  FROM refunds r JOIN payment_attempts p ON p.id = r.payment_attempt_id
 WHERE r.credit_note_id = :credit_note_id AND r.status = 'pending';

-- name: claim
UPDATE refunds SET claimed_until = now() + make_interval(secs => :lease_s)
 WHERE id = :id AND status = 'pending' AND (claimed_until IS NULL OR claimed_until < now())
RETURNING id;

-- name: release
UPDATE refunds SET claimed_until = NULL WHERE id = :id AND status = 'pending';

-- name: resolve
-- Once, from pending; and a refund that succeeded may still fail later (an expired or closed card:
-- Stripe sends refund.failed), which is heard once too.
UPDATE refunds SET status = :status, gateway_reference = COALESCE(:reference, gateway_reference),
       failure_code = :code, resolved_at = now(), claimed_until = NULL
 WHERE id = :id AND (status = 'pending' OR (status = 'succeeded' AND :status = 'failed'))
RETURNING id, 'refund' AS object, account_id, invoice_id, credit_note_id, amount, currency, status,
          gateway_reference, failure_code, created_at, resolved_at;

-- name: keep_reference
-- Stripe took the refund and will settle it later (its own ``pending``): its id is kept, and the
-- refund waits for Stripe's webhook instead of being sent again.
UPDATE refunds SET gateway_reference = :reference, claimed_until = NULL WHERE id = :id AND status = 'pending';

-- name: stale
SELECT tenant_id, refund_id FROM refunds_pending(:max_rows);
