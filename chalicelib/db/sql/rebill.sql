-- The daily rebill's selection (chalicelib/billing/rebill.py): due accounts across
-- tenants, through the SECURITY DEFINER functions that return ids only.

-- name: due_page
SELECT tenant_id, account_id, due_at, kind FROM rebill_due_accounts(:as_of, :after_at, :after_id, :max_rows);

-- name: retry_page
SELECT tenant_id, account_id, due_at, kind FROM rebill_retry_accounts(:as_of, :after_at, :after_id, :max_rows);

-- name: settle_page
SELECT tenant_id, account_id, due_at, kind FROM rebill_unsettled_accounts(:as_of, :after_at, :after_id, :max_rows);
