-- What the platform's plan a tenant is on allows (chalicelib/billing/tenant_limits.py).

-- name: tiers
-- The tiers a new tenant may be put on.
SELECT tier FROM platform_plans WHERE for_sale ORDER BY tier;

-- name: cap
-- The tenant's tier and its limit for one thing it may have (:column is max_<limit>); NULL: unlimited.
SELECT p.tier, CAST(to_jsonb(p) ->> CAST(:column AS text) AS bigint) AS cap FROM tenant_platform_plan() p;

-- name: lock
-- One creation at a time per tenant and limit, until commit: the count that follows sees every
-- earlier one committed, so two concurrent creations cannot both take the last place.
SELECT pg_advisory_xact_lock(hashtextextended(CAST(:limit AS text) || ':' || app_current_tenant()::text, 0));

-- name: admit_usage_request
-- GCRA, a token bucket kept as one number: the theoretical arrival time (TAT) of the next request,
-- integer microseconds. A request at `now` is admitted when TAT - now <= (burst - 1) * interval, and
-- moves TAT to max(TAT, now) + interval (interval = 1 s / rate); a refused one changes nothing. So a
-- burst of `burst` requests passes at once, then one per interval; a refused request's wait is at most
-- one interval (<= 1 s). One statement on one row; the caller's transaction holds the row for
-- just this statement. No row when the tier has no rate (or no tenant is set): admitted.
/* prepared */ WITH plan AS (
    SELECT p.tier, p.usage_requests_per_second AS rate, 1000000 / p.usage_requests_per_second AS interval_us,
           CAST(p.usage_burst - 1 AS bigint) * (1000000 / p.usage_requests_per_second) AS tolerance_us,
           CAST(extract(epoch FROM clock_timestamp()) * 1000000 AS bigint) AS now_us
      FROM tenant_platform_plan() p
     WHERE p.usage_requests_per_second IS NOT NULL
), admitted AS (
    INSERT INTO tenant_rate_limits AS r (usage_tat_us)
    SELECT now_us + interval_us FROM plan
    ON CONFLICT (tenant_id) DO UPDATE
       SET usage_tat_us = GREATEST(r.usage_tat_us, (SELECT now_us FROM plan)) + (SELECT interval_us FROM plan)
     WHERE GREATEST(r.usage_tat_us, (SELECT now_us FROM plan)) - (SELECT now_us FROM plan)
           <= (SELECT tolerance_us FROM plan)
    RETURNING usage_tat_us
)
SELECT tier, rate, EXISTS (SELECT 1 FROM admitted) AS admitted FROM plan;
