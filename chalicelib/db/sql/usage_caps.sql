-- Hard caps on metered usage (chalicelib/billing/usage_caps.py).

-- name: lock
-- Each capped (account, metric) of a batch, until commit, in one order: two batches wait for each
-- other rather than both reading the same totals, and never deadlock. A statement of its own: the
-- totals read next are taken after the batch before this one committed.
SELECT pg_advisory_xact_lock(k)
  FROM (SELECT DISTINCT hashtextextended('usage_cap:' || x.account_id || ':' || x.metric, 0) AS k
          FROM jsonb_to_recordset(CAST(:pairs AS jsonb)) AS x(account_id text, metric text)
         ORDER BY 1) keys;

-- name: stored
-- Which of these event ids are stored already (resends: duplicates, not more usage).
SELECT event_id FROM usage_events WHERE event_id = ANY(CAST(:ids AS text[]));
