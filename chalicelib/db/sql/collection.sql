-- Collecting invoices (chalicelib/billing/collection.py): payment attempts, their claims, dunning.

-- name: open_intents
-- Attempts at open invoices (keys built in periods.payment_key): open_for_invoice's next attempt.
-- With :claim, claimed by the transaction that opens them (:lease_s seconds), so no other settler
-- takes them before their creator has called the gateway (an invoice's first attempt is opened,
-- so claimed, by invoicing.sql's write).
INSERT INTO payment_attempts (account_id, invoice_id, attempt, idempotency_key, amount, currency, outcome,
                              claimed_until)
SELECT v.account_id, v.invoice_id, v.attempt, v.idempotency_key, v.amount, v.currency, 'pending',
       CASE WHEN CAST(:claim AS boolean) THEN now() + make_interval(secs => :lease_s) END
  FROM jsonb_to_recordset(CAST(:rows AS jsonb))
       AS v(account_id uuid, invoice_id uuid, attempt integer, idempotency_key text, amount bigint, currency text)
RETURNING id, account_id, invoice_id, idempotency_key, amount, currency;

-- name: pending_for_invoice
SELECT id, account_id, invoice_id, idempotency_key, amount, currency
  FROM payment_attempts WHERE invoice_id = :invoice_id AND outcome = 'pending';

-- name: pending_for_account
SELECT id, account_id, invoice_id, idempotency_key, amount, currency
  FROM payment_attempts WHERE account_id = :account_id AND outcome = 'pending'
 ORDER BY created_at;

-- name: waiting_for_invoice
-- The attempt at an invoice that waits for the customer to authenticate (at most one).
SELECT id, account_id, invoice_id, idempotency_key, amount, currency, gateway_reference
  FROM payment_attempts WHERE invoice_id = :invoice_id AND outcome = 'requires_action';

-- name: attempt_at_gateway
-- The attempt a gateway's charge belongs to: by the attempt id it carried, else by its reference.
SELECT id, account_id, invoice_id, idempotency_key, amount, currency, gateway_reference, outcome
  FROM payment_attempts
 WHERE id = CAST(:id AS uuid) OR (CAST(:id AS uuid) IS NULL AND gateway_reference = :reference)
 LIMIT 1;

-- name: payers
-- Who each attempt charges at the gateway, fixed the first time it is sent (a retry under the
-- same key presents the same request): the account's customer, default card and their Stripe
-- account; with whether this is that first time.
WITH before AS (SELECT id, payer IS NULL AS first_send FROM payment_attempts
                 WHERE id = ANY(CAST(:ids AS uuid[])) AND outcome = 'pending' ORDER BY id FOR UPDATE)
UPDATE payment_attempts p
   SET payer = COALESCE(p.payer, jsonb_build_object('customer', a.gateway_customer_id,
                                                    'payment_method', a.payment_method ->> 'id',
                                                    'gateway_account', a.gateway_account_id))
  FROM accounts a, before b
 WHERE p.id = b.id AND a.id = p.account_id
RETURNING p.id, p.payer, b.first_send, CAST(extract(epoch FROM now() - p.created_at) AS integer) AS sent_before_s;

-- name: attempt_outcome
SELECT outcome FROM payment_attempts WHERE id = :id;

-- name: attempts_for_invoice
SELECT count(*) FROM payment_attempts WHERE invoice_id = :invoice_id;

-- name: claim_attempts
-- One settler per attempt: a pending attempt nobody holds (or whose holder's lease
-- lapsed) is taken for :lease_s seconds of the database's clock; the rest are someone else's.
UPDATE payment_attempts SET claimed_until = now() + make_interval(secs => :lease_s)
 WHERE id = ANY(CAST(:ids AS uuid[])) AND outcome = 'pending'
   AND (claimed_until IS NULL OR claimed_until < now())
RETURNING id;

-- name: release_attempt
UPDATE payment_attempts SET claimed_until = NULL WHERE id = :id AND outcome = 'pending';

-- name: lock_pending
-- The attempts still pending (with :waiting, also those waiting for the customer), locked, each
-- with whether its account is in dunning (a payment may return it to ACTIVE).
SELECT pa.id, (a.status <> 'ACTIVE' OR a.failure_count > 0) AS in_dunning
  FROM payment_attempts pa
  JOIN accounts a ON a.id = pa.account_id
 WHERE pa.id = ANY(CAST(:ids AS uuid[]))
   AND (pa.outcome = 'pending' OR (CAST(:waiting AS boolean) AND pa.outcome = 'requires_action'))
 ORDER BY pa.id
   FOR UPDATE OF pa;

-- name: resolve_attempt
UPDATE payment_attempts
   SET outcome = :outcome, gateway_reference = :reference, decline_code = :decline_code, resolved_at = now(),
       claimed_until = NULL
 WHERE id = :id;

-- name: pay
-- Successes onto the attempts still pending (with :waiting, also those waiting for the customer), in
-- one statement. The accounts are locked first, all of them in id order (as every writer of an
-- account's money locks), each with whether it is in dunning (a payment may return it to ACTIVE);
-- then each attempt still pending is resolved (an update re-checks the row's latest version, so one
-- resolved meanwhile, by a webhook or a settler that took over a lapsed claim, is left alone), its
-- invoice paid and its payment posted to the ledger (a key already posted is skipped). A payment pays
-- what is still due of its invoice: the whole of it, unless the customer completed a payment that
-- waited for them after a credit note lowered the invoice (the rest is the account's credit, in the
-- ledger) or after it was voided (all of it is). An uncollectible invoice paid late is paid.
-- The attempts paid, with their accounts.
/* prepared */ WITH v AS (SELECT * FROM json_to_recordset(CAST(:rows AS json))
                  AS v(attempt_id uuid, reference text, paid bigint, account_id uuid, entry_type text, amount bigint,
                       currency text, invoice_id uuid, idempotency_key text, description text, metadata jsonb)),
     held AS MATERIALIZED (SELECT a.id, (a.status <> 'ACTIVE' OR a.failure_count > 0) AS in_dunning
                             FROM accounts a
                            WHERE a.id = ANY(ARRAY(SELECT v.account_id FROM v))
                            ORDER BY a.id
                              FOR UPDATE),
     resolved AS (UPDATE payment_attempts p
                     SET outcome = 'succeeded', gateway_reference = v.reference, resolved_at = now(),
                         claimed_until = NULL
                    FROM v
                   WHERE p.id = ANY(ARRAY(SELECT v.attempt_id FROM v)) AND p.id = v.attempt_id
                     AND (p.outcome = 'pending' OR (CAST(:waiting AS boolean) AND p.outcome = 'requires_action'))
                     AND (SELECT count(*) FROM held) > 0
                  RETURNING p.id),
     paid AS (UPDATE invoices i
                 SET amount_paid = i.amount_paid + LEAST(v.paid, i.amount_due),
                     amount_due = i.amount_due - LEAST(v.paid, i.amount_due),
                     status = CASE WHEN i.amount_due <= v.paid THEN 'paid' ELSE i.status END,
                     paid_at = CASE WHEN i.amount_due <= v.paid THEN now() ELSE i.paid_at END
                FROM v JOIN resolved r ON r.id = v.attempt_id
               WHERE i.id = ANY(ARRAY(SELECT v.invoice_id FROM v)) AND i.id = v.invoice_id
                 AND i.status IN ('open', 'uncollectible')),
     posted AS (INSERT INTO ledger_entries (account_id, entry_type, amount, currency, invoice_id, idempotency_key,
                                            description, metadata)
                SELECT v.account_id, v.entry_type, v.amount, v.currency, v.invoice_id, v.idempotency_key,
                       v.description, v.metadata
                  FROM v JOIN resolved r ON r.id = v.attempt_id
                ON CONFLICT (tenant_id, idempotency_key) DO NOTHING)
SELECT CAST(r.id AS text) AS id, CAST(v.account_id AS text) AS account_id, h.in_dunning
  FROM resolved r JOIN v ON v.attempt_id = r.id JOIN held h ON h.id = v.account_id;

-- name: mark_paid
UPDATE invoices SET status = 'paid', amount_paid = amount_paid + amount_due, amount_due = 0, paid_at = now() WHERE id = :id;

-- name: use_credit
-- The account's credit balance pays what it can of an open invoice before a new attempt
-- is opened for the rest (a credit posted while the invoice was open, in dunning).
UPDATE invoices i
   SET credit_applied = i.credit_applied + LEAST(i.amount_due, account_credit(i.account_id)),
       amount_due = i.amount_due - LEAST(i.amount_due, account_credit(i.account_id))
 WHERE i.id = :id
RETURNING i.amount_due;

-- name: mark_uncollectible
UPDATE invoices SET status = 'uncollectible', marked_uncollectible_at = now(), updated_at = now()
 WHERE account_id = :account_id AND status = 'open';

-- name: oldest_open_invoice
SELECT id, amount_due, currency, subscription_id, billing_reason, period_start FROM invoices
 WHERE account_id = :account_id AND status = 'open' AND amount_due > 0
 ORDER BY period_start, id
 LIMIT 1;

-- name: set_dunning
UPDATE accounts
   SET status = :status, failure_count = :failure_count, payment_retry_at = :retry_at,
       next_billing_at = CASE WHEN :status = 'INACTIVE' THEN NULL ELSE next_billing_at END
 WHERE id = :id;

-- name: set_subscription_status
-- Dunning moves a billing subscription between active and past_due; an account that goes
-- INACTIVE leaves its subscription unpaid whatever it was doing (trialing, paused too).
UPDATE subscriptions SET status = :status
 WHERE account_id = :account_id
   AND (status IN ('active', 'past_due') OR (:status = 'unpaid' AND status IN ('trialing', 'paused')));

-- name: lease_retry
UPDATE accounts SET payment_retry_at = :lease_until WHERE id = :id;

-- name: invoice_object
-- The invoice as an event carries it (invoice_object, migration 0009: GET /v1/invoices/{id} without lines).
SELECT invoice_object(i) FROM invoices i WHERE i.id = :id;
