-- Initial schema: tenants and their billing data, isolated by row-level security.
--
-- Money is bigint minor units beside a char(3) ISO currency code, everywhere.
-- Every tenant table carries tenant_id (defaulting to the transaction's tenant),
-- has RLS enabled and FORCE'd, and one policy keyed on app.tenant_id. The app
-- runs as billing_app, which owns nothing and cannot bypass RLS; with no tenant
-- set, app_current_tenant() is NULL and every tenant table reads as empty.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'billing_app') THEN
        CREATE ROLE billing_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END
$$;
-- A non-superuser owner (Aurora's master user) must be a member to SET ROLE.
GRANT billing_app TO CURRENT_USER;
GRANT USAGE ON SCHEMA public TO billing_app;

CREATE FUNCTION app_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.tenant_id', true), '')::uuid $$;

CREATE FUNCTION reject_mutation() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING HINT = 'record a new, reversing entry instead';
END
$$;

CREATE FUNCTION touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TABLE tenants (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email       text NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
    plan_tier   text NOT NULL DEFAULT 'standard',
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    settings    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- A tenant's price list. One code may have one price per interval ("pro" monthly
-- and yearly); usage_prices lists the metered components, e.g.
-- [{"metric": "api_calls", "aggregation": "sum", "unit_amount": 2}].
CREATE TABLE plans (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    code            text NOT NULL CHECK (code ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    interval        text NOT NULL CHECK (interval IN ('day', 'week', 'month', 'year')),
    interval_count  integer NOT NULL DEFAULT 1 CHECK (interval_count BETWEEN 1 AND 36),
    amount          bigint NOT NULL CHECK (amount >= 0),
    currency        char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    features        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(features) = 'object'),
    limits          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(limits) = 'object'),
    usage_prices    jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(usage_prices) = 'array'),
    active          boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, code, interval, interval_count),
    UNIQUE (tenant_id, id)
);

-- A tenant's billable customer. next_billing_at is when the daily rebill next
-- charges it; failure_count drives dunning.
CREATE TABLE accounts (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id        uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    email            text NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    currency         char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    plan_id          uuid,
    status           text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'PENDING', 'INACTIVE')),
    billing_anchor   timestamptz,
    next_billing_at  timestamptz,
    failure_count    integer NOT NULL DEFAULT 0 CHECK (failure_count >= 0),
    metadata         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, plan_id) REFERENCES plans (tenant_id, id)
);
CREATE INDEX accounts_tenant_created ON accounts (tenant_id, created_at, id);
-- The rebill's selection: due accounts across tenants, in billing order.
CREATE INDEX accounts_due ON accounts (next_billing_at, id) WHERE status IN ('ACTIVE', 'PENDING');

CREATE TABLE subscriptions (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id             uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    account_id            uuid NOT NULL,
    plan_id               uuid NOT NULL,
    status                text NOT NULL DEFAULT 'active'
                          CHECK (status IN ('active', 'past_due', 'canceled', 'unpaid')),
    billing_anchor        timestamptz NOT NULL,
    current_period_start  timestamptz NOT NULL,
    current_period_end    timestamptz NOT NULL CHECK (current_period_end > current_period_start),
    cancel_at_period_end  boolean NOT NULL DEFAULT false,
    canceled_at           timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id),
    FOREIGN KEY (tenant_id, plan_id) REFERENCES plans (tenant_id, id)
);
CREATE INDEX subscriptions_account ON subscriptions (tenant_id, account_id, created_at, id);

CREATE TABLE invoices (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id        uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    account_id       uuid NOT NULL,
    subscription_id  uuid,
    number           text,
    status           text NOT NULL DEFAULT 'draft'
                     CHECK (status IN ('draft', 'open', 'paid', 'void', 'uncollectible')),
    currency         char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    subtotal         bigint NOT NULL DEFAULT 0 CHECK (subtotal >= 0),
    total            bigint NOT NULL DEFAULT 0 CHECK (total >= 0),
    amount_due       bigint NOT NULL DEFAULT 0 CHECK (amount_due >= 0),
    amount_paid      bigint NOT NULL DEFAULT 0 CHECK (amount_paid >= 0 AND amount_paid <= total),
    period_start     timestamptz NOT NULL,
    period_end       timestamptz NOT NULL CHECK (period_end > period_start),
    due_at           timestamptz,
    finalized_at     timestamptz,
    paid_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    UNIQUE (tenant_id, number),
    -- One invoice per subscription and period, whatever is retried.
    UNIQUE (tenant_id, subscription_id, period_start),
    FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id),
    FOREIGN KEY (tenant_id, subscription_id) REFERENCES subscriptions (tenant_id, id)
);
CREATE INDEX invoices_tenant_created ON invoices (tenant_id, created_at, id);
CREATE INDEX invoices_account ON invoices (tenant_id, account_id, created_at, id);

CREATE TABLE invoice_lines (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    invoice_id    uuid NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('subscription', 'usage', 'adjustment')),
    description   text NOT NULL,
    metric        text,
    quantity      bigint NOT NULL DEFAULT 1 CHECK (quantity >= 0),
    unit_amount   bigint NOT NULL CHECK (unit_amount >= 0),
    amount        bigint NOT NULL CHECK (amount >= 0),
    currency      char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    period_start  timestamptz NOT NULL,
    period_end    timestamptz NOT NULL,
    position      integer NOT NULL DEFAULT 0,
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices (tenant_id, id)
);
CREATE INDEX invoice_lines_invoice ON invoice_lines (tenant_id, invoice_id, position);

-- Metered usage. event_id is the client's: a resend of the same event is a no-op.
CREATE TABLE usage_events (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    event_id     text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 255),
    account_id   uuid NOT NULL,
    metric       text NOT NULL CHECK (length(metric) BETWEEN 1 AND 100),
    quantity     bigint NOT NULL CHECK (quantity >= 0),
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    properties   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(properties) = 'object'),
    UNIQUE (tenant_id, event_id),
    FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX usage_events_aggregation ON usage_events (tenant_id, account_id, metric, occurred_at);

-- The money record. Signed amounts: a charge is positive (the account owes
-- more), a payment or credit negative; the balance is the sum. Append-only.
CREATE TABLE ledger_entries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id        uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    account_id       uuid NOT NULL,
    entry_type       text NOT NULL
                     CHECK (entry_type IN ('charge', 'payment', 'payment_failed', 'credit', 'refund', 'adjustment')),
    amount           bigint NOT NULL,
    currency         char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    invoice_id       uuid,
    period_start     timestamptz,
    idempotency_key  text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    description      text NOT NULL DEFAULT '',
    metadata         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    seq              bigint GENERATED ALWAYS AS IDENTITY,
    UNIQUE (tenant_id, idempotency_key),
    CHECK (entry_type <> 'charge' OR amount >= 0),
    CHECK (entry_type <> 'payment' OR amount <= 0),
    CHECK (entry_type <> 'payment_failed' OR amount = 0),
    FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices (tenant_id, id)
);
CREATE INDEX ledger_entries_account ON ledger_entries (tenant_id, account_id, seq);
-- At most one charge per account and billing period, enforced where it matters.
CREATE UNIQUE INDEX ledger_entries_one_charge_per_period
    ON ledger_entries (tenant_id, account_id, period_start) WHERE entry_type = 'charge';

-- Consumer idempotency: a message is claimed (in_progress) in the same
-- transaction as the consumer's write and marked done with it.
CREATE TABLE processed_events (
    tenant_id     uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    consumer      text NOT NULL,
    message_id    text NOT NULL,
    status        text NOT NULL DEFAULT 'in_progress' CHECK (status IN ('in_progress', 'done')),
    claimed_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    PRIMARY KEY (tenant_id, consumer, message_id)
);

-- HTTP Idempotency-Key records, per tenant (Stripe semantics).
CREATE TABLE idempotency_keys (
    tenant_id        uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    key              text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_method   text NOT NULL,
    request_path     text NOT NULL,
    request_hash     text NOT NULL,
    status           text NOT NULL DEFAULT 'in_progress' CHECK (status IN ('in_progress', 'complete')),
    response_status  integer,
    response_body    jsonb,
    locked_at        timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL DEFAULT now() + interval '24 hours',
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

CREATE TABLE audit_logs (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    actor        text NOT NULL,
    action       text NOT NULL,
    entity_type  text NOT NULL,
    entity_id    text,
    data         jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    seq          bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX audit_logs_entity ON audit_logs (tenant_id, entity_type, entity_id, seq);

CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION reject_mutation();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION reject_mutation();
CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION reject_mutation();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION reject_mutation();

CREATE TRIGGER tenants_updated_at BEFORE UPDATE ON tenants FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER accounts_updated_at BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER subscriptions_updated_at BEFORE UPDATE ON subscriptions FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER invoices_updated_at BEFORE UPDATE ON invoices FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Row-level security: one policy per tenant table, FORCE'd so even the owner obeys it.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (id = app_current_tenant()) WITH CHECK (id = app_current_tenant());

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['plans', 'accounts', 'subscriptions', 'invoices', 'invoice_lines',
                             'usage_events', 'ledger_entries', 'processed_events',
                             'idempotency_keys', 'audit_logs']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = app_current_tenant())'
                       ' WITH CHECK (tenant_id = app_current_tenant())', t);
    END LOOP;
END
$$;

-- The app role reads and writes; append-only tables take inserts only.
GRANT SELECT, INSERT, UPDATE ON tenants, plans, accounts, subscriptions, invoices, invoice_lines TO billing_app;
GRANT DELETE ON invoice_lines TO billing_app;
GRANT SELECT, INSERT ON usage_events, ledger_entries, audit_logs TO billing_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON processed_events, idempotency_keys TO billing_app;
GRANT SELECT ON schema_migrations TO billing_app;
