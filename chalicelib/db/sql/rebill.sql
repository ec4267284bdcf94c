-- The daily rebill's selection (chalicelib/billing/rebill.py): due accounts across tenants,
-- through the SECURITY DEFINER functions that return ids only, and the fan-out's chains
-- (migrations/0014_rebill_fanout.sql). Every page returns (tenant, account, due at, kind,
-- bucket); only renewals are split by bucket, so retries and pending payments say 0.

-- name: renewal_page
SELECT tenant_id, account_id, due_at, kind, bucket
  FROM rebill_due_page(:as_of, :last_bucket, :from_bucket, :after_at, :after_id, :max_rows);

-- name: retry_page
SELECT tenant_id, account_id, due_at, kind, 0 FROM rebill_retry_accounts(:as_of, :after_at, :after_id, :max_rows);

-- name: settle_page
SELECT tenant_id, account_id, due_at, kind, 0 FROM rebill_unsettled_accounts(:as_of, :after_at, :after_id, :max_rows);

-- name: open_run
SELECT chains, stalled FROM rebill_chains_open(:run_id, :as_of, :partitions);

-- name: claim_step
SELECT as_of, source, last_bucket, bucket, after_at, after_id FROM rebill_chain_claim(:run_id, :chain, :step);

-- name: advance_chain
SELECT rebill_chain_advance(:run_id, :chain, :step, :bucket, :after_at, :after_id, :sent, :finished);

-- name: run_progress
SELECT chain, source, step, enqueued, done FROM rebill_run_progress(:run_id);
