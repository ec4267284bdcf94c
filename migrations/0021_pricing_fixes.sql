-- Pricing fixes (#18), found in review:
--
-- * An event's value from a property: the usage API takes property values as strings (as Stripe's meter
--   events do: "value": "25"), so a string of digits counts as the integer it spells, as a JSON integer
--   >= 0 does; at most 15 digits either way (a larger one is no value). Before, only JSON numbers
--   counted, which no event sent through the API could carry: a price reading a property billed 0.
-- * A percentage price's money (fixed_amount, min_amount, max_amount) in the account's currency: the
--   daily round passes the plan's prices as stored, so the per-event fees, computed here, take the
--   price's currency_options entry for the account's currency over its own fields (the rule of
--   chalicelib/billing/currency_prices.in_currency; prices already resolved carry no options).

CREATE OR REPLACE FUNCTION billing_usage_value(quantity bigint, properties jsonb, field text) RETURNS numeric
    LANGUAGE sql IMMUTABLE
    AS $$
        SELECT CASE WHEN field IS NULL THEN quantity
                    WHEN jsonb_typeof(properties -> field) IN ('number', 'string')
                         AND (properties ->> field) ~ '^[0-9]{1,15}$'
                    THEN CAST(properties ->> field AS numeric) END
    $$;

CREATE OR REPLACE FUNCTION billing_usage_by_price(account uuid, from_at timestamptz, to_at timestamptz, prices jsonb)
    RETURNS json
    LANGUAGE sql STABLE
    AS $$
        WITH p AS (
            SELECT x.i, x.price ->> 'metric' AS metric, x.price ->> 'aggregation' AS agg, x.price ->> 'field' AS field,
                   x.price ->> 'group_by' AS group_by, x.price -> 'filters' AS filters,
                   x.price ->> 'model' = 'percentage' AS pct,
                   CAST(x.price ->> 'rate' AS numeric) AS rate,
                   100 * COALESCE(CAST(x.price ->> 'fixed_amount' AS numeric), 0) AS fixed100,
                   100 * CAST(x.price ->> 'min_amount' AS numeric) AS min100,
                   100 * CAST(x.price ->> 'max_amount' AS numeric) AS max100
              FROM jsonb_array_elements(prices) WITH ORDINALITY AS r(raw, i),
                   LATERAL (SELECT r.i, r.raw || COALESCE(r.raw -> 'currency_options' -> (
                                SELECT CAST(a.currency AS text) FROM accounts a WHERE a.id = account), '{}')
                                AS price) x
        ), ev AS (
            SELECT p.i, e.occurred_at, e.event_id COLLATE "C" AS event_id,
                   CASE WHEN p.group_by IS NOT NULL THEN billing_usage_text(e.properties, p.group_by) END AS g,
                   billing_usage_value(e.quantity, e.properties, p.field) AS v,
                   billing_usage_text(e.properties, p.field) AS t
              FROM p
              JOIN usage_events e ON e.account_id = account AND e.metric = p.metric
                                 AND e.occurred_at >= from_at AND e.occurred_at < to_at
             WHERE billing_usage_matches(e.properties, p.filters)
        ), agg AS (
            SELECT ev.i, ev.g,
                   CASE p.agg
                       WHEN 'count' THEN count(*) FILTER (WHERE p.field IS NULL OR ev.t IS NOT NULL)
                       WHEN 'unique_count' THEN count(DISTINCT ev.t) FILTER (WHERE p.agg = 'unique_count')
                       WHEN 'max' THEN COALESCE(max(ev.v), 0)
                       WHEN 'latest' THEN COALESCE((array_agg(ev.v ORDER BY ev.occurred_at DESC, ev.event_id DESC)
                                                     FILTER (WHERE p.agg = 'latest' AND ev.v IS NOT NULL))[1], 0)
                       ELSE COALESCE(sum(ev.v), 0) END AS quantity,
                   sum(LEAST(GREATEST(ev.v * p.rate + p.fixed100, p.min100), p.max100))
                       FILTER (WHERE p.pct AND ev.v IS NOT NULL) AS fees
              FROM ev JOIN p ON p.i = ev.i
             GROUP BY ev.i, ev.g, p.agg, p.field
        ), readings AS (
            -- A gauge's readings: its level from each event in the window, and the last one before it
            -- (as a reading at from_at, before any event stamped at from_at itself).
            SELECT ev.i, ev.g, ev.occurred_at, ev.event_id, ev.v
              FROM ev JOIN p ON p.i = ev.i
             WHERE p.agg = 'weighted_sum' AND ev.v IS NOT NULL
            UNION ALL
            (SELECT DISTINCT ON (b.i, b.g) b.i, b.g, from_at, '' COLLATE "C", b.v
              FROM (SELECT p.i, e.occurred_at, e.event_id COLLATE "C" AS event_id,
                           CASE WHEN p.group_by IS NOT NULL THEN billing_usage_text(e.properties, p.group_by) END AS g,
                           billing_usage_value(e.quantity, e.properties, p.field) AS v
                      FROM p
                      JOIN usage_events e ON e.account_id = account AND e.metric = p.metric AND e.occurred_at < from_at
                     WHERE p.agg = 'weighted_sum' AND billing_usage_matches(e.properties, p.filters)) b
             WHERE b.v IS NOT NULL
             ORDER BY b.i, b.g, b.occurred_at DESC, b.event_id DESC)
        ), held AS (
            SELECT r.i, r.g, r.v * CAST(1000000 * (extract(epoch FROM COALESCE(
                       lead(r.occurred_at) OVER (PARTITION BY r.i, r.g ORDER BY r.occurred_at, r.event_id),
                       GREATEST(from_at, to_at))) - extract(epoch FROM r.occurred_at)) AS numeric(40, 0)) AS weighted
              FROM readings r
        ), gauge AS (
            SELECT held.i, held.g, sum(held.weighted) AS numerator FROM held GROUP BY held.i, held.g
        ), groups AS (
            SELECT COALESCE(a.i, w.i) AS i, COALESCE(a.g, w.g) AS g, a.quantity, a.fees, w.numerator
              FROM agg a FULL JOIN gauge w ON w.i = a.i AND w.g IS NOT DISTINCT FROM a.g
        )
        SELECT json_agg(COALESCE(
                   (SELECT json_agg(CASE
                        WHEN p.agg = 'weighted_sum' THEN json_build_object(
                            'group', s.g, 'numerator', CAST(COALESCE(s.numerator, 0) AS text),
                            'denominator', CAST(GREATEST(CAST(1000000 * (extract(epoch FROM to_at)
                                                 - extract(epoch FROM from_at)) AS numeric(40, 0)), 1) AS text))
                        WHEN p.pct THEN json_build_object(
                            'group', s.g, 'quantity', s.quantity, 'fees_numerator', CAST(COALESCE(s.fees, 0) AS text),
                            'fees_denominator', '100')
                        ELSE json_build_object('group', s.g, 'quantity', s.quantity) END
                        ORDER BY s.g COLLATE "C" NULLS LAST)
                      FROM groups s WHERE s.i = p.i),
                   json_build_array()) ORDER BY p.i)
          FROM p
    $$;
