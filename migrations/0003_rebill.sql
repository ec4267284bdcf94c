-- The daily rebill: due-account selection across tenants, dunning state, payments.
--
-- Selection is the second job that must see every tenant, so it gets the same
-- treatment as the outbox sweep: a SECURITY DEFINER function owned by
-- billing_system returning (tenant, account, billing time) and nothing more,
-- keyset-paged on an index so it can walk millions of due accounts.

ALTER TABLE accounts ADD COLUMN payment_retry_at timestamptz;
CREATE INDEX accounts_payment_retry ON accounts (payment_retry_at, id) WHERE status = 'PENDING';

-- The payment attempt a gateway call belongs to: its key is what the gateway
-- deduplicates on, so a retried call can never charge twice.
CREATE TABLE payment_attempts (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id        uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    account_id       uuid NOT NULL,
    invoice_id       uuid NOT NULL,
    attempt          integer NOT NULL CHECK (attempt >= 0),
    idempotency_key  text NOT NULL,
    amount           bigint NOT NULL CHECK (amount >= 0),
    currency         char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    outcome          text NOT NULL CHECK (outcome IN ('succeeded', 'declined')),
    gateway_reference text,
    decline_code     text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, idempotency_key),
    UNIQUE (tenant_id, invoice_id, attempt),
    FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices (tenant_id, id)
);
ALTER TABLE payment_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE payment_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON payment_attempts
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());
CREATE TRIGGER payment_attempts_append_only BEFORE UPDATE OR DELETE ON payment_attempts
    FOR EACH ROW EXECUTE FUNCTION reject_mutation();
GRANT SELECT, INSERT ON payment_attempts TO billing_app;

CREATE POLICY background_read ON accounts FOR SELECT TO billing_system USING (true);
GRANT SELECT ON accounts TO billing_system;

-- Accounts to bill (next_billing_at reached) or to retry (payment_retry_at
-- reached), in (at, id) order after the given key. 'kind' says which.
CREATE FUNCTION rebill_due_accounts(as_of timestamptz, after_at timestamptz, after_id uuid, max_rows integer)
    RETURNS TABLE (tenant_id uuid, account_id uuid, due_at timestamptz, kind text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$
        (SELECT a.tenant_id, a.id, a.next_billing_at, 'renewal'
           FROM accounts a
          WHERE a.status IN ('ACTIVE', 'PENDING')
            AND a.next_billing_at <= as_of
            AND (after_at IS NULL OR (a.next_billing_at, a.id) > (after_at, after_id))
          ORDER BY a.next_billing_at, a.id
          LIMIT max_rows)
    $$;
ALTER FUNCTION rebill_due_accounts(timestamptz, timestamptz, uuid, integer) OWNER TO billing_system;
REVOKE ALL ON FUNCTION rebill_due_accounts(timestamptz, timestamptz, uuid, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rebill_due_accounts(timestamptz, timestamptz, uuid, integer) TO billing_app;

CREATE FUNCTION rebill_retry_accounts(as_of timestamptz, after_at timestamptz, after_id uuid, max_rows integer)
    RETURNS TABLE (tenant_id uuid, account_id uuid, due_at timestamptz, kind text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$
        SELECT a.tenant_id, a.id, a.payment_retry_at, 'retry'
          FROM accounts a
         WHERE a.status = 'PENDING'
           AND a.payment_retry_at <= as_of
           AND (after_at IS NULL OR (a.payment_retry_at, a.id) > (after_at, after_id))
         ORDER BY a.payment_retry_at, a.id
         LIMIT max_rows
    $$;
ALTER FUNCTION rebill_retry_accounts(timestamptz, timestamptz, uuid, integer) OWNER TO billing_system;
REVOKE ALL ON FUNCTION rebill_retry_accounts(timestamptz, timestamptz, uuid, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rebill_retry_accounts(timestamptz, timestamptz, uuid, integer) TO billing_app;
