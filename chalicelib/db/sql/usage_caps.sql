-- Hard caps on metered usage (chalicelib/billing/usage_caps.py).

-- name: counters
-- Each capped (window, metric) of a batch: its running totals (usage_counters), made from the events
-- already stored in the window when it has none yet, locked until commit and returned as they stand
-- (ON CONFLICT DO UPDATE takes the latest committed row, even one committed after this statement
-- began: a batch that waited here for another sees that batch's events). Locked in one order, so two
-- batches never deadlock. Only a new counter sums the window's events; after that the trigger on
-- usage_events keeps it.
/* prepared */ WITH w AS (
    SELECT * FROM jsonb_to_recordset(CAST(:windows AS jsonb))
        AS w(i integer, account_id uuid, metric text, from_at timestamptz, to_at timestamptz)
), new_windows AS MATERIALIZED (
    SELECT * FROM w
     WHERE NOT EXISTS (SELECT 1 FROM usage_counters k
                        WHERE k.account_id = w.account_id AND k.metric = w.metric
                          AND k.from_at = w.from_at AND k.to_at = w.to_at)
), missing AS (
    -- Per new window, through the index on (tenant, account, metric, occurred_at): never the tenant's
    -- whole history, whatever the planner's estimates for a table that was empty at its last ANALYZE.
    SELECT n.i, s.sum, s.count, s.max
      FROM new_windows n
     CROSS JOIN LATERAL (SELECT sum(u.quantity) AS sum, count(*) AS count, max(u.quantity) AS max
                           FROM usage_events u
                          WHERE u.account_id = n.account_id AND u.metric = n.metric
                            AND u.occurred_at >= n.from_at AND u.occurred_at < n.to_at) s
), counted AS (
    INSERT INTO usage_counters AS c (account_id, metric, from_at, to_at, sum, count, max)
    SELECT w.account_id, w.metric, w.from_at, w.to_at, COALESCE(m.sum, 0), COALESCE(m.count, 0), COALESCE(m.max, 0)
      FROM w LEFT JOIN missing m ON m.i = w.i
     ORDER BY w.account_id, w.metric, w.from_at, w.to_at
    ON CONFLICT (tenant_id, account_id, metric, from_at, to_at) DO UPDATE SET sum = c.sum
    RETURNING c.account_id, c.metric, c.from_at, c.to_at, c.sum, c.count, c.max
)
SELECT w.i, counted.sum, counted.count, counted.max
  FROM counted JOIN w USING (account_id, metric, from_at, to_at);

-- name: stored
-- Which of these event ids are stored already (resends: duplicates, not more usage). A statement of its
-- own, after the counters' lock: it sees what the batch it waited for stored.
-- The ids come as one JSON text: pg8000 encodes a text[] parameter value by value, in Python.
-- Not prepared (chalicelib/db/adapters.py): its generic plan, made without the ids, took 10-14 ms a
-- batch of 100 where planning with them and running took 0.6-0.8 ms (#17, measured on the bench's data).
SELECT event_id FROM usage_events
 WHERE event_id = ANY(ARRAY(SELECT jsonb_array_elements_text(CAST(:ids AS jsonb))));
