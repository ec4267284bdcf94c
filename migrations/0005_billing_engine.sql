-- One billing engine: final invoices, why an invoice was issued, and one settler per payment attempt.
--
-- * invoices.billing_reason says which billing instant issued an invoice
--   (Stripe's field of the same name): the first period of a subscription, a
--   renewal, or the final invoice when it ends (its last period's metered
--   usage). A final invoice covers the same period as that period's renewal
--   invoice, so uniqueness is per subscription, reason and period start.
-- * subscriptions.ended_at: when service ended (the cancel instant, or the end
--   of the last period for a cancel at period end), set by the final billing.
-- * payment_attempts.claimed_until: a settler claims a pending attempt before
--   it calls the gateway, so exactly one call per attempt is in flight at a
--   time; a crashed settler's claim lapses. A pending attempt may now change its
--   claim, and is still only ever resolved, never altered or removed.

ALTER TABLE invoices ADD COLUMN billing_reason text NOT NULL DEFAULT 'subscription_cycle'
    CHECK (billing_reason IN ('subscription_create', 'subscription_cycle', 'subscription_cancel', 'manual'));
UPDATE invoices i SET billing_reason = 'subscription_create'
  FROM subscriptions s
 WHERE s.id = i.subscription_id AND i.period_start = s.billing_anchor;
ALTER TABLE invoices DROP CONSTRAINT invoices_tenant_id_subscription_id_period_start_key;
ALTER TABLE invoices ADD CONSTRAINT invoices_one_per_subscription_reason_period
    UNIQUE (tenant_id, subscription_id, billing_reason, period_start);

ALTER TABLE subscriptions ADD COLUMN ended_at timestamptz;

ALTER TABLE payment_attempts ADD COLUMN claimed_until timestamptz;
CREATE OR REPLACE FUNCTION payment_attempt_resolve_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'DELETE' OR OLD.outcome <> 'pending'
       OR (NEW.id, NEW.tenant_id, NEW.account_id, NEW.invoice_id, NEW.attempt, NEW.idempotency_key, NEW.amount,
           NEW.currency) IS DISTINCT FROM
          (OLD.id, OLD.tenant_id, OLD.account_id, OLD.invoice_id, OLD.attempt, OLD.idempotency_key, OLD.amount,
           OLD.currency) THEN
        RAISE EXCEPTION 'payment_attempts: only a pending attempt may be claimed or resolved (% refused)', TG_OP;
    END IF;
    RETURN NEW;
END
$$;
GRANT UPDATE (claimed_until) ON payment_attempts TO billing_app;
