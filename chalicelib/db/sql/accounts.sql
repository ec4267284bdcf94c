-- name: create
INSERT INTO accounts (email, name, currency, plan_id, metadata, default_tax_rates)
VALUES (:email, :name, :currency, CAST(:plan_id AS uuid), CAST(:metadata AS jsonb), CAST(:default_tax_rates AS uuid[]))
RETURNING id;

-- name: count_upto
-- The tenant's accounts, counted up to :cap (its plan's limit): at most that many rows are read,
-- however many accounts the tenant has.
SELECT count(*) FROM (SELECT 1 FROM accounts LIMIT :cap) a;

-- name: get
SELECT a.id, 'account' AS object, a.email, a.name, a.currency, p.code AS plan, a.status,
       a.next_billing_at, a.billing_anchor, a.failure_count, a.metadata, a.created_at,
       COALESCE((SELECT sum(l.amount) FROM ledger_entries l WHERE l.account_id = a.id), 0)::bigint AS balance,
       account_credit(a.id) AS credit_balance, a.gateway_customer_id,
       a.payment_method - 'set_at' AS default_payment_method, a.default_tax_rates
  FROM accounts a
  LEFT JOIN plans p ON p.id = a.plan_id
 WHERE a.id = :id;

-- name: get_for_update
SELECT id, tenant_id, currency, status, next_billing_at, payment_retry_at, failure_count FROM accounts
 WHERE id = :id FOR UPDATE;

-- name: list
SELECT a.id, 'account' AS object, a.email, a.name, a.currency, p.code AS plan, a.status,
       a.next_billing_at, a.billing_anchor, a.failure_count, a.metadata, a.created_at
  FROM accounts a
  LEFT JOIN plans p ON p.id = a.plan_id
 WHERE (CAST(:after AS uuid) IS NULL
        OR (a.created_at, a.id) < (SELECT created_at, id FROM accounts WHERE id = CAST(:after AS uuid)))
 ORDER BY a.created_at DESC, a.id DESC
 LIMIT :limit;

-- name: exists
SELECT 1 FROM accounts WHERE id = :id;

-- name: start_billing
UPDATE accounts
   SET plan_id = :plan_id,
       billing_anchor = COALESCE(billing_anchor, :anchor),
       next_billing_at = :next_billing_at
 WHERE id = :id;

-- name: set_default_tax_rates
UPDATE accounts SET default_tax_rates = CAST(:rates AS uuid[]) WHERE id = :id;
