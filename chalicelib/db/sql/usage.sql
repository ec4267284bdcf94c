-- name: known_accounts
SELECT id FROM accounts WHERE id = ANY(CAST(:ids AS uuid[]));

-- name: insert_batch
-- Set-based; a resent event_id is skipped, and is absent from RETURNING.
INSERT INTO usage_events (event_id, account_id, metric, quantity, occurred_at, properties)
SELECT e.event_id, e.account_id, e.metric, e.quantity, e.occurred_at, COALESCE(e.properties, '{}')
  FROM jsonb_to_recordset(CAST(:events AS jsonb))
       AS e(event_id text, account_id uuid, metric text, quantity bigint, occurred_at timestamptz, properties jsonb)
ON CONFLICT (tenant_id, event_id) DO NOTHING
RETURNING event_id;
