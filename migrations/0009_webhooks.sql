-- Telling tenants what happened: the event log they can read, and signed webhooks to their endpoints.
--
-- * Every domain event is an outbox row (0002) whose payload carries ``object``: what the
--   change's object looked like, as the API returns it, when the transaction that made the change
--   wrote it. Invoice events come from triggers (0007), so their object is built here by
--   invoice_object(), the same fields as GET /v1/invoices/{id} without its lines (a test holds
--   the two to the same shape). GET /v1/notifications lists a tenant's last 30 days of them.
-- * webhook_endpoints: where a tenant wants its events (a URL, the types, a signing secret and
--   the previous one for 24 h after a rotation). ``lease_until`` is the endpoint's delivery lane:
--   one worker at a time delivers to an endpoint, so a slow or failing one holds only its own lane.
-- * webhook_deliveries: one per (endpoint, event), made once however often the event is fanned
--   out; pending until a 2xx (delivered) or until the retry schedule gives up (failed).
-- * webhook_attempts: every request made for a delivery, with its answer.

CREATE INDEX outbox_tenant_created ON outbox (tenant_id, created_at DESC, id DESC);

-- A timestamp as the API writes one (chalicelib.encoding): UTC, ending in Z, microseconds when there are any.
CREATE FUNCTION api_ts(t timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
        SELECT CASE WHEN date_part('microseconds', t)::bigint % 1000000 = 0
                    THEN to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                    ELSE to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') END
    $$;

CREATE FUNCTION invoice_object(i invoices) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
        SELECT jsonb_build_object(
            'id', i.id, 'object', 'invoice', 'account_id', i.account_id, 'subscription_id', i.subscription_id,
            'billing_reason', i.billing_reason, 'number', i.number, 'status', i.status,
            'description', i.description, 'currency', i.currency, 'subtotal', i.subtotal, 'total', i.total,
            'credit_applied', i.credit_applied, 'pre_payment_credit_notes_amount', i.pre_payment_credit_notes_amount,
            'post_payment_credit_notes_amount', i.post_payment_credit_notes_amount, 'amount_due', i.amount_due,
            'amount_paid', i.amount_paid, 'period_start', api_ts(i.period_start), 'period_end', api_ts(i.period_end),
            'due_at', api_ts(i.due_at), 'auto_finalize_at', api_ts(i.auto_finalize_at),
            'finalized_at', api_ts(i.finalized_at), 'paid_at', api_ts(i.paid_at), 'voided_at', api_ts(i.voided_at),
            'marked_uncollectible_at', api_ts(i.marked_uncollectible_at), 'created_at', api_ts(i.created_at))
    $$;

CREATE OR REPLACE FUNCTION invoice_event(i invoices) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
        SELECT jsonb_build_object('invoiceId', i.id, 'accountId', i.account_id, 'subscriptionId', i.subscription_id,
                                  'number', i.number, 'status', i.status, 'currency', i.currency, 'total', i.total,
                                  'amountDue', i.amount_due, 'timestamp', now(), 'object', invoice_object(i))
    $$;

CREATE TABLE webhook_endpoints (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id                   uuid NOT NULL DEFAULT app_current_tenant() REFERENCES tenants (id),
    url                         text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    event_types                 text[] NOT NULL CHECK (cardinality(event_types) BETWEEN 1 AND 100),
    description                 text CHECK (length(description) <= 500),
    enabled                     boolean NOT NULL DEFAULT true,
    secret                      text NOT NULL,
    previous_secret             text,
    previous_secret_expires_at  timestamptz,
    failing_since               timestamptz,
    disabled_reason             text,
    lease_until                 timestamptz,
    lease_token                 uuid,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);

CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id        uuid NOT NULL DEFAULT app_current_tenant(),
    endpoint_id      uuid NOT NULL,
    event_id         uuid NOT NULL REFERENCES outbox (id),
    event_type       text NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    -- The retry schedule's clock: from creation, and again from a manual resend.
    schedule_from    timestamptz NOT NULL DEFAULT now(),
    schedule_failures integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    last_status      integer,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    failed_at        timestamptz,
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES webhook_endpoints (tenant_id, id) ON DELETE CASCADE,
    UNIQUE (endpoint_id, event_id),
    UNIQUE (tenant_id, id),
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, endpoint_id) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_of_endpoint ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);

CREATE TABLE webhook_attempts (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id         uuid NOT NULL DEFAULT app_current_tenant(),
    delivery_id       uuid NOT NULL,
    attempted_at      timestamptz NOT NULL,
    status_code       integer,
    latency_ms        integer NOT NULL CHECK (latency_ms >= 0),
    response_excerpt  text CHECK (length(response_excerpt) <= 1024),
    error             text CHECK (length(error) <= 500),
    FOREIGN KEY (tenant_id, delivery_id) REFERENCES webhook_deliveries (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_attempts_of_delivery ON webhook_attempts (delivery_id, attempted_at);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['webhook_endpoints', 'webhook_deliveries', 'webhook_attempts']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = app_current_tenant())'
                       ' WITH CHECK (tenant_id = app_current_tenant())', t);
    END LOOP;
END
$$;
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_endpoints, webhook_deliveries, webhook_attempts TO billing_app;

-- The endpoints with deliveries due and no worker on their lane, across tenants, for the
-- scheduled retrier (ids only, as every background door).
CREATE POLICY background_read ON webhook_deliveries FOR SELECT TO billing_system USING (true);
CREATE POLICY background_read ON webhook_endpoints FOR SELECT TO billing_system USING (true);
GRANT SELECT ON webhook_deliveries, webhook_endpoints TO billing_system;
CREATE FUNCTION webhook_lanes_due(as_of timestamptz, max_rows integer)
    RETURNS TABLE (tenant_id uuid, endpoint_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$
        SELECT e.tenant_id, e.id
          FROM webhook_endpoints e
          JOIN LATERAL (SELECT min(d.next_attempt_at) AS due FROM webhook_deliveries d
                         WHERE d.endpoint_id = e.id AND d.status = 'pending') d ON true
         WHERE e.enabled AND (e.lease_until IS NULL OR e.lease_until < as_of) AND d.due <= as_of
         ORDER BY d.due
         LIMIT max_rows
    $$;
ALTER FUNCTION webhook_lanes_due(timestamptz, integer) OWNER TO billing_system;
REVOKE ALL ON FUNCTION webhook_lanes_due(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION webhook_lanes_due(timestamptz, integer) TO billing_app;
