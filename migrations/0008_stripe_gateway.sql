-- Real money through Stripe: customers and payment methods on accounts, payments that wait for
-- the customer, and disputes in the ledger.
--
-- * accounts.gateway_customer_id is the account's Customer at the tenant's Stripe account
--   gateway_account_id (made once per Stripe account, by POST /v1/accounts/{id}/payment_methods/setup:
--   a tenant that connects another Stripe account gets new customers); payment_method is the
--   default card Stripe confirmed (id, brand, last4, exp_month, exp_year, and the Stripe
--   event time that set it, so an older event arriving late cannot replace a newer card).
-- * payment_attempts.payer is who the attempt charges (customer, card, Stripe account), fixed the
--   first time it goes to the gateway: a retry under the same key always presents the same request,
--   whatever card the customer saved meanwhile (Stripe refuses a key reused with other parameters).
-- * A payment attempt may wait for the customer (``requires_action``: the bank asks for
--   authentication, off-session). It is no longer pending (nothing is in flight at the
--   gateway), but it is not final either: the customer may still complete it (it becomes
--   ``succeeded``), or the next dunning retry withdraws it at the gateway first
--   (``canceled``), so an invoice never has two live PaymentIntents.
-- * A dispute withdraws a payment: ledger ``dispute`` (+amount, the customer owes it again);
--   a dispute won gives it back (``dispute_won``, -amount). The invoice stays paid, as at Stripe.

ALTER TABLE accounts
    ADD COLUMN gateway_customer_id text CHECK (length(gateway_customer_id) BETWEEN 1 AND 255),
    ADD COLUMN gateway_account_id text CHECK (length(gateway_account_id) BETWEEN 1 AND 255),
    ADD COLUMN payment_method jsonb;
CREATE UNIQUE INDEX accounts_gateway_customer ON accounts (tenant_id, gateway_customer_id)
    WHERE gateway_customer_id IS NOT NULL;

ALTER TABLE payment_attempts ADD COLUMN payer jsonb;
GRANT UPDATE (payer) ON payment_attempts TO billing_app;
ALTER TABLE payment_attempts DROP CONSTRAINT payment_attempts_outcome_check;
ALTER TABLE payment_attempts ADD CONSTRAINT payment_attempts_outcome_check
    CHECK (outcome IN ('pending', 'succeeded', 'declined', 'requires_action', 'canceled'));
CREATE UNIQUE INDEX payment_attempts_gateway_reference ON payment_attempts (tenant_id, gateway_reference)
    WHERE gateway_reference IS NOT NULL;
CREATE INDEX payment_attempts_waiting ON payment_attempts (tenant_id, invoice_id) WHERE outcome = 'requires_action';

-- A pending attempt is resolved once; an attempt waiting for the customer is resolved once
-- more (succeeded, declined or canceled). Nothing else changes, and nothing is deleted.
CREATE OR REPLACE FUNCTION payment_attempt_resolve_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'DELETE'
       OR NOT (OLD.outcome = 'pending'
               OR (OLD.outcome = 'requires_action' AND NEW.outcome IN ('succeeded', 'declined', 'canceled')))
       OR (OLD.payer IS NOT NULL AND NEW.payer IS DISTINCT FROM OLD.payer)
       OR (NEW.id, NEW.tenant_id, NEW.account_id, NEW.invoice_id, NEW.attempt, NEW.idempotency_key, NEW.amount,
           NEW.currency) IS DISTINCT FROM
          (OLD.id, OLD.tenant_id, OLD.account_id, OLD.invoice_id, OLD.attempt, OLD.idempotency_key, OLD.amount,
           OLD.currency) THEN
        RAISE EXCEPTION 'payment_attempts: only a pending or waiting attempt may be resolved (% refused)', TG_OP;
    END IF;
    RETURN NEW;
END
$$;

ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_entry_type_check;
ALTER TABLE ledger_entries
    ADD CONSTRAINT ledger_entries_entry_type_check
        CHECK (entry_type IN ('charge', 'payment', 'payment_failed', 'credit', 'refund', 'void', 'dispute',
                              'dispute_won', 'adjustment')),
    ADD CONSTRAINT ledger_entries_dispute_positive CHECK (entry_type <> 'dispute' OR amount >= 0),
    ADD CONSTRAINT ledger_entries_dispute_won_negative CHECK (entry_type <> 'dispute_won' OR amount <= 0);

-- A refund Stripe holds as its own ``pending`` (it keeps its id here) is settled by Stripe's
-- webhook, never sent again: sending it again after Stripe forgot the key would refund twice.
CREATE OR REPLACE FUNCTION refunds_pending(max_rows integer)
    RETURNS TABLE (tenant_id uuid, refund_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$
        SELECT r.tenant_id, r.id
          FROM refunds r
         WHERE r.status = 'pending' AND r.gateway_reference IS NULL
           AND r.created_at <= now() - interval '5 minutes'
           AND (r.claimed_until IS NULL OR r.claimed_until < now())
         ORDER BY r.created_at, r.id
         LIMIT max_rows
    $$;
