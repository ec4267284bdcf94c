-- An account's customer and default payment method at its tenant's gateway
-- (chalicelib/billing/payment_methods.py).

-- name: customer_of
SELECT gateway_customer_id FROM accounts WHERE id = :id;

-- name: keep_customer
-- Kept once: a concurrent setup made the same customer (the same Stripe key) or keeps the first.
UPDATE accounts SET gateway_customer_id = COALESCE(gateway_customer_id, :customer)
 WHERE id = :id
RETURNING gateway_customer_id;

-- name: set_default
-- :at is the Stripe event's time: an older event arriving late does not replace a newer card.
UPDATE accounts
   SET payment_method = CAST(:method AS jsonb) || jsonb_build_object('set_at', CAST(:at AS bigint))
 WHERE gateway_customer_id = :customer
   AND (payment_method IS NULL OR CAST(payment_method ->> 'set_at' AS bigint) <= CAST(:at AS bigint))
RETURNING id;
