-- name: lock_accounts
-- FOR KEY SHARE waits for a billing transaction holding an account (a renewal, a cancel, a
-- draft being finalized) and holds it off until this batch commits. A statement of its own:
-- the next one (known_accounts) then reads with a snapshot taken after that billing
-- committed, so an event is judged against the window as it is after it, never stored just
-- behind it, unbilled. (One statement that locked and read would keep its older snapshot for
-- everything but the locked rows.)
-- The ids come as one JSON text (pg8000 encodes an array parameter value by value, in Python).
/* prepared */ SELECT id FROM accounts
 WHERE id = ANY(ARRAY(SELECT CAST(jsonb_array_elements_text(CAST(:ids AS jsonb)) AS uuid)))
 ORDER BY id FOR KEY SHARE;

-- name: known_accounts
-- Each account with the window its usage may still be billed in: from the start of
-- the live subscription's current period (anything earlier is invoiced) until it
-- ends (a cancel at period end), when it started (its trial's start, or creation; a
-- new anchor does not move it), and since when it is paused; or, with no live
-- subscription, when the last one ended. The windows that drafts held for the tenant's
-- grace period still price take late usage too (held_windows: [from, to, usage prices]; a final
-- invoice of a cancel now prices what was accepted before the cancel, but takes nothing
-- stamped after it: to is at most the invoice's period end). The live period's end and its
-- plan's usage prices, and each held window's, are what hard caps are judged by (usage_caps).
/* prepared */ SELECT a.id, a.status, live.current_period_start AS open_since,
       LEAST(live.created_at, live.billing_anchor, live.trial_start) AS started_at,
       CASE WHEN live.cancel_at_period_end THEN live.current_period_end END AS open_until,
       CASE WHEN live.status = 'paused' THEN live.paused_at END AS paused_since,
       live.current_period_end AS period_end,
       (SELECT p.usage_prices FROM plans p WHERE p.id = live.plan_id) AS usage_prices,
       (SELECT max(COALESCE(s.ended_at, s.canceled_at, s.updated_at)) FROM subscriptions s
         WHERE s.account_id = a.id AND s.status IN ('canceled', 'unpaid')) AS ended_at,
       (SELECT jsonb_agg(jsonb_build_array(i.usage_terms ->> 'from',
                                           LEAST(CAST(i.usage_terms ->> 'to' AS timestamptz), i.period_end),
                                           i.usage_terms -> 'prices'))
          FROM invoices i
         WHERE i.account_id = a.id AND i.status = 'draft' AND i.usage_terms IS NOT NULL) AS held_windows
  FROM accounts a
  LEFT JOIN LATERAL (SELECT s.current_period_start, s.current_period_end, s.billing_anchor, s.cancel_at_period_end,
                            s.created_at, s.trial_start, s.status, s.paused_at, s.plan_id
                       FROM subscriptions s
                      WHERE s.account_id = a.id AND s.status IN ('trialing', 'active', 'past_due', 'paused')
                      ORDER BY s.created_at DESC LIMIT 1) live ON true
 WHERE a.id = ANY(ARRAY(SELECT CAST(jsonb_array_elements_text(CAST(:ids AS jsonb)) AS uuid)))
 ORDER BY a.id;

-- name: insert_batch
-- Set-based; a resent event_id is skipped, and is absent from the ids returned (one JSON array: a row
-- per event would be a hundred rows for the driver to read).
/* prepared */ WITH inserted AS (
    INSERT INTO usage_events (event_id, account_id, metric, quantity, occurred_at, properties)
    SELECT e.event_id, e.account_id, e.metric, e.quantity, e."timestamp", COALESCE(e.properties, '{}')
      FROM jsonb_to_recordset(CAST(:events AS jsonb))
           AS e(event_id text, account_id uuid, metric text, quantity bigint, "timestamp" timestamptz, properties jsonb)
    ON CONFLICT (tenant_id, event_id) DO NOTHING
    RETURNING event_id
)
SELECT COALESCE(jsonb_agg(event_id), '[]') FROM inserted;
