-- An account's entitlements (chalicelib/billing/entitlements.py).

-- name: current_plan
-- The account (no row: absent, or another tenant's) with its live subscription's period and plan.
SELECT a.id AS account_id, live.id AS subscription_id, live.current_period_start, live.current_period_end,
       p.code AS plan, p.features, p.limits, p.usage_prices
  FROM accounts a
  LEFT JOIN LATERAL (SELECT s.id, s.plan_id, s.current_period_start, s.current_period_end
                       FROM subscriptions s
                      WHERE s.account_id = a.id AND s.status IN ('trialing', 'active', 'past_due', 'paused')
                      ORDER BY s.created_at DESC LIMIT 1) live ON true
  LEFT JOIN plans p ON p.id = live.plan_id
 WHERE a.id = :id;
