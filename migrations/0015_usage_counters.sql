-- Running totals of metered usage, for hard caps (#17).
--
-- A plan's usage price may have a hard cap (chalicelib/billing/usage_caps.py): an event that would take
-- its billing window's aggregate past it is refused. Judging a batch used to sum every event of each
-- capped window again, under a lock, for every batch: O(events in the period) per batch. Now each
-- (account, metric, window) holds its sum, count and max in one row, and a batch locks and reads it in
-- one statement.
--
-- A window is the one an event is billed in: the live period [start, end), the time after its end before
-- the renewal [end, 'infinity' as 9999-12-31), or a draft held for the tenant's grace period. A row is
-- made from the events already stored in its window the first time a capped event falls in it, and from
-- then on every insert into usage_events adds to every row whose window holds the new events (the
-- statement trigger below, in the inserting transaction): a row stays exact whoever inserts, and whether
-- or not windows overlap. Two batches of one window queue on its row (the batch locks it before judging,
-- and the trigger's update needs it too), so they cannot both take the last units.
--
-- No tenant_id -> tenants foreign key: the composite one to accounts implies it.

CREATE TABLE usage_counters (
    tenant_id   uuid NOT NULL DEFAULT app_current_tenant(),
    account_id  uuid NOT NULL,
    metric      text NOT NULL,
    from_at     timestamptz NOT NULL,
    to_at       timestamptz NOT NULL,
    sum         bigint NOT NULL DEFAULT 0,
    count       bigint NOT NULL DEFAULT 0,
    max         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, account_id, metric, from_at, to_at),
    FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id),
    CHECK (from_at <= to_at)
);
ALTER TABLE usage_counters ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_counters FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_counters
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());
-- No DELETE: a row is dropped with its account's data, by the owner.
GRANT SELECT, INSERT, UPDATE ON usage_counters TO billing_app;

-- As the inserting role (row-level security holds: a tenant's events reach its own counters only).
CREATE FUNCTION usage_counters_add() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE usage_counters c
       SET sum = c.sum + n.sum, count = c.count + n.count, max = GREATEST(c.max, n.max)
      FROM (SELECT k.tenant_id, k.account_id, k.metric, k.from_at, k.to_at,
                   sum(e.quantity) AS sum, count(*) AS count, max(e.quantity) AS max
              FROM inserted e
              JOIN usage_counters k ON k.tenant_id = e.tenant_id AND k.account_id = e.account_id
                                   AND k.metric = e.metric AND e.occurred_at >= k.from_at AND e.occurred_at < k.to_at
             GROUP BY k.tenant_id, k.account_id, k.metric, k.from_at, k.to_at) n
     WHERE c.tenant_id = n.tenant_id AND c.account_id = n.account_id AND c.metric = n.metric
       AND c.from_at = n.from_at AND c.to_at = n.to_at;
    RETURN NULL;
END
$$;

CREATE TRIGGER usage_events_counted AFTER INSERT ON usage_events
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION usage_counters_add();
