-- Coupons and the discounts made from them (chalicelib/billing/coupons.py); invoicing.sql consumes
-- discounts, billing_adjustments (migration 0020) reads them.

-- name: create
INSERT INTO coupons (name, percent_off, amount_off, currency, duration, duration_in_periods, max_redemptions,
                     redeem_by, applies_to_plans)
VALUES (:name, CAST(:percent_off AS numeric), :amount_off, :currency, :duration, :duration_in_periods,
        :max_redemptions, CAST(:redeem_by AS timestamptz), CAST(:plans AS text[]))
RETURNING id;

-- name: get
SELECT c.id, 'coupon' AS object, c.name, CAST(trim_scale(c.percent_off) AS text) AS percent_off, c.amount_off,
       c.currency, c.duration, c.duration_in_periods, c.max_redemptions, c.redeem_by,
       CASE WHEN c.applies_to_plans IS NOT NULL THEN json_build_object('plans', c.applies_to_plans) END AS applies_to,
       c.times_redeemed, c.active,
       c.active AND (c.redeem_by IS NULL OR c.redeem_by > now())
         AND (c.max_redemptions IS NULL OR c.times_redeemed < c.max_redemptions) AS valid,
       c.created_at
  FROM coupons c WHERE c.id = :id;

-- name: exists
SELECT 1 FROM coupons WHERE id = :id;

-- name: update
UPDATE coupons
   SET name = COALESCE(CAST(:name AS text), name), active = COALESCE(CAST(:active AS boolean), active)
 WHERE id = :id
RETURNING id;

-- name: list
SELECT c.id, 'coupon' AS object, c.name, CAST(trim_scale(c.percent_off) AS text) AS percent_off, c.amount_off,
       c.currency, c.duration, c.duration_in_periods, c.max_redemptions, c.redeem_by,
       CASE WHEN c.applies_to_plans IS NOT NULL THEN json_build_object('plans', c.applies_to_plans) END AS applies_to,
       c.times_redeemed, c.active,
       c.active AND (c.redeem_by IS NULL OR c.redeem_by > now())
         AND (c.max_redemptions IS NULL OR c.times_redeemed < c.max_redemptions) AS valid,
       c.created_at
  FROM coupons c
 WHERE (CAST(:after AS uuid) IS NULL
        OR (c.created_at, c.id) < (SELECT created_at, id FROM coupons WHERE id = CAST(:after AS uuid)))
 ORDER BY c.created_at DESC, c.id DESC
 LIMIT :limit;

-- name: redeem
-- One more redemption of a coupon that may still be redeemed (active, before redeem_by, under
-- max_redemptions), counted under the coupon's row lock; no row: it may not.
UPDATE coupons SET times_redeemed = times_redeemed + 1
 WHERE id = :id AND active AND (redeem_by IS NULL OR redeem_by > now())
   AND (max_redemptions IS NULL OR times_redeemed < max_redemptions)
RETURNING id;

-- name: live_subscription
SELECT id, account_id, status FROM subscriptions WHERE id = :id;

-- name: remove_live
-- The account's (or subscription's) live discount ends now.
UPDATE discounts SET removed_at = now()
 WHERE account_id = :account_id AND removed_at IS NULL
   AND subscription_id IS NOT DISTINCT FROM CAST(:subscription_id AS uuid)
RETURNING id;

-- name: create_discount
INSERT INTO discounts (coupon_id, account_id, subscription_id)
VALUES (:coupon_id, :account_id, CAST(:subscription_id AS uuid))
RETURNING id;

-- name: get_discount
-- A discount with what is left of it: periods_remaining (repeating: periods not yet consumed by an
-- invoice that opened one; once: 1 until an invoice used it; forever: null) and its status.
SELECT d.id, 'discount' AS object, d.coupon_id AS coupon, d.account_id, d.subscription_id, d.start,
       d.removed_at AS "end",
       CASE c.duration WHEN 'repeating' THEN GREATEST(c.duration_in_periods - discount_used(d.id), 0)
                       WHEN 'once' THEN GREATEST(1 - discount_used(d.id), 0) END AS periods_remaining,
       CASE WHEN d.removed_at IS NOT NULL THEN 'removed'
            WHEN c.duration = 'repeating' AND discount_used(d.id) >= c.duration_in_periods THEN 'ended'
            WHEN c.duration = 'once' AND discount_used(d.id) >= 1 THEN 'ended'
            ELSE 'active' END AS status
  FROM discounts d JOIN coupons c ON c.id = d.coupon_id
 WHERE d.id = :id;
