-- A tenant's tax rates (chalicelib/billing/tax_rates.py). percentage is shown as an exact decimal string.

-- name: create
INSERT INTO tax_rates (display_name, description, percentage, inclusive, jurisdiction, country, active)
VALUES (:display_name, :description, CAST(:percentage AS numeric), :inclusive, :jurisdiction, :country, :active)
RETURNING id;

-- name: get
SELECT id, 'tax_rate' AS object, display_name, description, CAST(trim_scale(percentage) AS text) AS percentage,
       inclusive, jurisdiction, country, active, created_at
  FROM tax_rates WHERE id = :id;

-- name: exists
SELECT 1 FROM tax_rates WHERE id = :id;

-- name: update
UPDATE tax_rates
   SET display_name = COALESCE(CAST(:display_name AS text), display_name),
       description = CASE WHEN CAST(:set_description AS boolean) THEN CAST(:description AS text) ELSE description END,
       active = COALESCE(CAST(:active AS boolean), active)
 WHERE id = :id
RETURNING id;

-- name: list
SELECT id, 'tax_rate' AS object, display_name, description, CAST(trim_scale(percentage) AS text) AS percentage,
       inclusive, jurisdiction, country, active, created_at
  FROM tax_rates
 WHERE (CAST(:active AS boolean) IS NULL OR active = CAST(:active AS boolean))
   AND (CAST(:after AS uuid) IS NULL
        OR (created_at, id) < (SELECT created_at, id FROM tax_rates WHERE id = CAST(:after AS uuid)))
 ORDER BY created_at DESC, id DESC
 LIMIT :limit;

-- name: found
-- Which of a list of ids name this tenant's rates.
SELECT CAST(id AS text) AS id FROM tax_rates
 WHERE id IN (SELECT CAST(value AS uuid) FROM jsonb_array_elements_text(CAST(:ids AS jsonb)));
