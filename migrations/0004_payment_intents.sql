-- Payment attempts become intents recorded before the gateway is called.
--
-- Calling the gateway inside the billing transaction meant a timeout rolled the
-- invoice back while the money may have moved; the retry then rebuilt the
-- invoice from data that could have changed (late usage, a cancellation) and
-- presented the same key for a different amount, or billed nothing for a real
-- charge. Now the invoice, the charge and a 'pending' attempt commit first; the
-- gateway is called with exactly that attempt's key and amount; the outcome is
-- then written onto the attempt. A pending attempt is only ever resolved, never
-- changed or removed.

ALTER TABLE payment_attempts DROP CONSTRAINT payment_attempts_outcome_check;
ALTER TABLE payment_attempts ADD CONSTRAINT payment_attempts_outcome_check
    CHECK (outcome IN ('pending', 'succeeded', 'declined'));
ALTER TABLE payment_attempts ADD COLUMN resolved_at timestamptz;
CREATE INDEX payment_attempts_pending ON payment_attempts (created_at) WHERE outcome = 'pending';
CREATE INDEX payment_attempts_account_pending ON payment_attempts (tenant_id, account_id) WHERE outcome = 'pending';

DROP TRIGGER payment_attempts_append_only ON payment_attempts;
CREATE FUNCTION payment_attempt_resolve_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'DELETE' OR OLD.outcome <> 'pending' OR NEW.outcome = 'pending'
       OR (NEW.id, NEW.tenant_id, NEW.account_id, NEW.invoice_id, NEW.attempt, NEW.idempotency_key, NEW.amount,
           NEW.currency) IS DISTINCT FROM
          (OLD.id, OLD.tenant_id, OLD.account_id, OLD.invoice_id, OLD.attempt, OLD.idempotency_key, OLD.amount,
           OLD.currency) THEN
        RAISE EXCEPTION 'payment_attempts: only a pending attempt may be resolved (% refused)', TG_OP;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER payment_attempts_resolve_only BEFORE UPDATE OR DELETE ON payment_attempts
    FOR EACH ROW EXECUTE FUNCTION payment_attempt_resolve_only();
GRANT UPDATE (outcome, gateway_reference, decline_code, resolved_at) ON payment_attempts TO billing_app;

-- Accounts with an attempt left pending by a crash or a timeout, for the daily run.
CREATE POLICY background_read ON payment_attempts FOR SELECT TO billing_system USING (true);
GRANT SELECT ON payment_attempts TO billing_system;
CREATE FUNCTION rebill_unsettled_accounts(as_of timestamptz, after_at timestamptz, after_id uuid, max_rows integer)
    RETURNS TABLE (tenant_id uuid, account_id uuid, due_at timestamptz, kind text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$
        SELECT p.tenant_id, p.account_id, min(p.created_at), 'settle'
          FROM payment_attempts p
         WHERE p.outcome = 'pending' AND p.created_at <= as_of - interval '5 minutes'
         GROUP BY p.tenant_id, p.account_id
        HAVING after_at IS NULL OR (min(p.created_at), p.account_id) > (after_at, after_id)
         ORDER BY min(p.created_at), p.account_id
         LIMIT max_rows
    $$;
ALTER FUNCTION rebill_unsettled_accounts(timestamptz, timestamptz, uuid, integer) OWNER TO billing_system;
REVOKE ALL ON FUNCTION rebill_unsettled_accounts(timestamptz, timestamptz, uuid, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rebill_unsettled_accounts(timestamptz, timestamptz, uuid, integer) TO billing_app;

-- The outbox sweep looks at every tenant with a backlog, not only those owning
-- the oldest rows, so one tenant's stuck events cannot starve the others.
CREATE OR REPLACE FUNCTION outbox_tenants_with_backlog(older_than_s integer, max_rows integer)
    RETURNS TABLE (tenant_id uuid, backlog bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$
        SELECT o.tenant_id, count(*)
          FROM outbox o
         WHERE o.published_at IS NULL
           AND o.attempts < 20
           AND o.created_at < now() - make_interval(secs => older_than_s)
         GROUP BY o.tenant_id
         ORDER BY min(o.created_at)
         LIMIT max_rows
    $$;
