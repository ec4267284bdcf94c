-- An account's customer and default payment method at its tenant's gateway
-- (chalicelib/billing/payment_methods.py).

-- name: customer_of
-- The account's customer at Stripe account :gateway_account (none: not made there yet).
SELECT gateway_customer_id FROM accounts WHERE id = :id AND gateway_account_id = :gateway_account;

-- name: keep_customer
-- Kept once per Stripe account: a concurrent setup made the same customer (the same Stripe key)
-- or keeps the first. A customer of another Stripe account (the tenant connected a new one) is
-- replaced, and its card with it.
UPDATE accounts
   SET payment_method = CASE WHEN gateway_account_id IS DISTINCT FROM :gateway_account THEN NULL
                             ELSE payment_method END,
       gateway_customer_id = CASE WHEN gateway_account_id IS DISTINCT FROM :gateway_account THEN :customer
                                  ELSE gateway_customer_id END,
       gateway_account_id = :gateway_account
 WHERE id = :id
RETURNING gateway_customer_id;

-- name: set_default
-- :at is the Stripe event's time: an older event arriving late does not replace a newer card.
UPDATE accounts
   SET payment_method = CAST(:method AS jsonb) || jsonb_build_object('set_at', CAST(:at AS bigint))
 WHERE gateway_customer_id = :customer
   AND (payment_method IS NULL OR CAST(payment_method ->> 'set_at' AS bigint) <= CAST(:at AS bigint))
RETURNING id;
