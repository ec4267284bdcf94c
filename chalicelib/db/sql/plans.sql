-- name: create
-- amounts: the flat amount per currency, the default currency's included (migration 0017's column).
INSERT INTO plans (code, name, interval, interval_count, amount, currency, amounts, features, limits, usage_prices,
                   trial_days, trial_usage, tax_rates)
VALUES (:code, :name, :interval, :interval_count, :amount, :currency, CAST(:amounts AS jsonb),
        CAST(:features AS jsonb), CAST(:limits AS jsonb), CAST(:usage_prices AS jsonb), :trial_days, :trial_usage,
        CAST(:tax_rates AS uuid[]))
RETURNING id, 'plan' AS object, code, name, interval, interval_count, amount, currency,
          amounts || jsonb_build_object(currency, amount) AS amounts, features, limits, usage_prices, trial_days,
          trial_usage, active, created_at, tax_rates;

-- name: list
-- A plan made before prices per currency has no amounts: its one price is its default's.
SELECT id, 'plan' AS object, code, name, interval, interval_count, amount, currency,
       amounts || jsonb_build_object(currency, amount) AS amounts, features, limits, usage_prices, trial_days,
       trial_usage, active, created_at, tax_rates
  FROM plans
 WHERE (CAST(:after AS uuid) IS NULL
        OR (created_at, id) < (SELECT created_at, id FROM plans WHERE id = CAST(:after AS uuid)))
 ORDER BY created_at DESC, id DESC
 LIMIT :limit;

-- name: exists
SELECT 1 FROM plans WHERE id = :id;

-- name: find_for_cycle
-- The active price of a plan code for a billing interval, or for an account
-- (any interval: monthly first).
SELECT id, code, name, interval, interval_count, amount, currency, amounts, usage_prices, trial_days, trial_usage
  FROM plans
 WHERE code = :code AND active
   AND (CAST(:interval AS text) IS NULL OR interval = CAST(:interval AS text))
 ORDER BY (interval = 'month') DESC, interval_count, created_at
 LIMIT 1;
