-- Price models and aggregations (#18): billing_usage (migration 0017's usage hook) returns the usage of a
-- window per usage price, by the price's index in the plan's usage_prices, and per group, as exact values
-- only; chalicelib/billing/usage_charges.py prices them and does every rounding (lines.round_half_even).
--
-- The answer: a JSON array with one entry per usage price, each an array of groups (empty: no event of
-- the price's metric matched), each group
--   {"group": text | null, "quantity": n}                                  sum, count, max, unique_count, latest
--   {"group": ..., "numerator": "n", "denominator": "d"}                   weighted_sum (time-weighted average)
--   {"group": ..., "quantity": n, "fees_numerator": "x", "fees_denominator": "100"}   model percentage
-- where n, d are exact integers, x an exact decimal (hundredths of a minor unit: rate is a percent).
--
-- An event of the price's metric in [from_at, to_at) counts when its properties match every key of the
-- price's "filters" (the property a scalar whose text is the filter's string, or one of its list). Its
-- value is its "quantity", or with a "field" the property of that name when it is a JSON integer >= 0
-- (2.0, -1, "2", true or a missing field: no value, and the event is left out of sum, max, latest,
-- weighted_sum and percentage); count counts the events (with a field: those whose field is a scalar);
-- unique_count the distinct texts of the field's scalar values (1 and "1" are one value). "group_by"
-- splits them by the text of a scalar property (null: the events lacking it). latest and weighted_sum
-- order events by occurred_at, then event_id (bytewise): the later of two at one instant has the greater
-- event_id. weighted_sum's level at from_at is the last value before it (same metric, filters and group),
-- else 0; its quantity is sum(level x microseconds it held) / the window's microseconds.
--
-- Plain prices (sum, count or max of the quantity, no field, filters or group_by, not percentage) take
-- the path they took before: one scan of the window's events grouped by metric.

-- Whether an event's properties match a price's filters: every key, its value's text one of the filter's.
CREATE FUNCTION billing_usage_matches(properties jsonb, filters jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    AS $$
        SELECT filters IS NULL OR NOT EXISTS (
            SELECT 1 FROM jsonb_each(filters) AS f(k, v)
             WHERE jsonb_typeof(properties -> f.k) NOT IN ('string', 'number', 'boolean')
                OR properties -> f.k IS NULL
                OR NOT CASE WHEN jsonb_typeof(f.v) = 'array' THEN f.v @> to_jsonb(properties ->> f.k)
                            ELSE f.v = to_jsonb(properties ->> f.k) END)
    $$;

-- The value an event gives a price's field: its quantity, or the field when a JSON integer >= 0; else null.
CREATE FUNCTION billing_usage_value(quantity bigint, properties jsonb, field text) RETURNS numeric
    LANGUAGE sql IMMUTABLE
    AS $$
        SELECT CASE WHEN field IS NULL THEN quantity
                    WHEN jsonb_typeof(properties -> field) = 'number' AND (properties ->> field) ~ '^[0-9]+$'
                    THEN CAST(properties ->> field AS numeric) END
    $$;

-- The text of a scalar property (a group's key, a unique_count's value); null for anything else.
CREATE FUNCTION billing_usage_text(properties jsonb, name text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
        SELECT CASE WHEN jsonb_typeof(properties -> name) IN ('string', 'number', 'boolean')
                    THEN properties ->> name END
    $$;

CREATE FUNCTION billing_usage_by_price(account uuid, from_at timestamptz, to_at timestamptz, prices jsonb)
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
              FROM jsonb_array_elements(prices) WITH ORDINALITY AS x(price, i)
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

CREATE OR REPLACE FUNCTION billing_usage(account uuid, from_at timestamptz, to_at timestamptz, prices jsonb) RETURNS json
    LANGUAGE sql STABLE
    AS $$
        SELECT CASE
            WHEN jsonb_array_length(prices) = 0 THEN NULL
            WHEN NOT jsonb_path_exists(prices, '$[*] ? (exists(@.field) || exists(@.filters) || exists(@.group_by)
                                                       || @.model == "percentage"
                                                       || !(@.aggregation == "sum" || @.aggregation == "count"
                                                            || @.aggregation == "max"))')
            THEN (SELECT json_agg(CASE WHEN u.metric IS NULL THEN json_build_array()
                                       ELSE json_build_array(json_build_object(
                                           'group', NULL,
                                           'quantity', CASE p.price ->> 'aggregation' WHEN 'sum' THEN u.sum
                                                                                      WHEN 'count' THEN u.count
                                                                                      ELSE u.max END)) END
                                  ORDER BY p.i)
                    FROM jsonb_array_elements(prices) WITH ORDINALITY AS p(price, i)
                    LEFT JOIN (SELECT e.metric, sum(e.quantity) AS sum, count(*) AS count, max(e.quantity) AS max
                                 FROM usage_events e
                                WHERE e.account_id = account AND e.occurred_at >= from_at AND e.occurred_at < to_at
                                GROUP BY e.metric) u ON u.metric = p.price ->> 'metric')
            ELSE billing_usage_by_price(account, from_at, to_at, prices) END
    $$;
