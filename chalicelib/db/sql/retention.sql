-- Retention (chalicelib/retention.py): each purge is one bounded batch through its SECURITY DEFINER
-- function (migration 0016), whose billing_system DELETE policy holds the table's floor. Each answers
-- how many rows it removed and how many it looked at (a batch that looked at fewer than max_rows
-- found the end of what is due).

-- name: idempotency_keys
SELECT n AS purged, n AS scanned FROM retention_purge_idempotency_keys(:max_rows) n;

-- name: processed_events
SELECT n AS purged, n AS scanned FROM retention_purge_processed_events(:keep_s, :max_rows) n;

-- name: webhook_deliveries
SELECT n AS purged, n AS scanned FROM retention_purge_webhook_deliveries(:keep_s, :max_rows) n;

-- name: outbox
SELECT n AS purged, n AS scanned FROM retention_purge_outbox(:keep_s, :max_rows) n;

-- name: usage_events
SELECT moved AS purged, scanned FROM retention_archive_usage(:keep_s, :max_rows);

-- name: drop_usage_archive
SELECT retention_drop_usage_archive(:keep_months);
