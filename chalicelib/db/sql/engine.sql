-- The billing engine (chalicelib/billing/engine.py): the state a billing instant is computed from.

-- name: billing_state
-- The round's accounts (a JSON array of ids), locked in id order, each as one JSON object: its
-- status and next_billing_at, its live subscription and plan price (named as periods.Subscription
-- reads them), whether a payment of it is still pending, the metered usage of the period its renewal
-- closes, its pending invoice items (locked) and the tenant's grace hours. billing_round_state
-- (migration 0013) reads them after the locks are granted, in one call. Prepared once per connection
-- (/* prepared */: chalicelib/db/adapters.py).
/* prepared */ SELECT account_key, state
  FROM billing_round_state(ARRAY(SELECT CAST(value AS uuid) FROM jsonb_array_elements_text(CAST(:ids AS jsonb))));

-- name: stop_billing
UPDATE accounts SET next_billing_at = NULL
 WHERE id IN (SELECT CAST(value AS uuid) FROM jsonb_array_elements_text(CAST(:ids AS jsonb)));
