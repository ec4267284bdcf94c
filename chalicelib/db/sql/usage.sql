-- name: known_accounts
-- With the start of the period still open for usage: anything earlier has been invoiced.
SELECT a.id,
       (SELECT max(s.current_period_start) FROM subscriptions s
         WHERE s.account_id = a.id AND s.status IN ('active', 'past_due')) AS open_since
  FROM accounts a
 WHERE a.id = ANY(CAST(:ids AS uuid[]));

-- name: insert_batch
-- Set-based; a resent event_id is skipped, and is absent from RETURNING.
INSERT INTO usage_events (event_id, account_id, metric, quantity, occurred_at, properties)
SELECT e.event_id, e.account_id, e.metric, e.quantity, e.occurred_at, COALESCE(e.properties, '{}')
  FROM jsonb_to_recordset(CAST(:events AS jsonb))
       AS e(event_id text, account_id uuid, metric text, quantity bigint, occurred_at timestamptz, properties jsonb)
ON CONFLICT (tenant_id, event_id) DO NOTHING
RETURNING event_id;
