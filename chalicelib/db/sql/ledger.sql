-- name: entries
-- Chronological, with the balance after each entry; the window runs over the
-- whole account so a later page still carries the right running balance.
SELECT id, object, entry_type, amount, currency, invoice_id, credit_note_id, period_start, description, created_at,
       balance
  FROM (SELECT id, 'ledger_entry' AS object, entry_type, amount, currency, invoice_id, credit_note_id, period_start,
               description, created_at, seq, CAST(sum(amount) OVER (ORDER BY seq) AS bigint) AS balance
          FROM ledger_entries
         WHERE account_id = :account_id) e
 WHERE CAST(:after AS uuid) IS NULL
    OR seq > (SELECT seq FROM ledger_entries WHERE id = CAST(:after AS uuid) AND account_id = :account_id)
 ORDER BY seq
 LIMIT :limit;

-- name: exists
SELECT 1 FROM ledger_entries WHERE id = :id AND account_id = :account_id;

-- name: balance
SELECT CAST(COALESCE(sum(amount), 0) AS bigint) FROM ledger_entries WHERE account_id = :account_id;

-- name: post
-- The idempotency key makes a retried posting a no-op (no row returned).
INSERT INTO ledger_entries (account_id, entry_type, amount, currency, invoice_id, period_start, idempotency_key,
                            description, metadata, credit_note_id)
VALUES (:account_id, :entry_type, :amount, :currency, :invoice_id, :period_start, :idempotency_key,
        :description, CAST(:metadata AS jsonb), :credit_note_id)
ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
RETURNING id;

-- name: post_many
-- Set-based posting; a key already posted is skipped.
INSERT INTO ledger_entries (account_id, entry_type, amount, currency, invoice_id, period_start, idempotency_key,
                            description, metadata)
SELECT v.account_id, v.entry_type, v.amount, v.currency, v.invoice_id, v.period_start, v.idempotency_key,
       v.description, COALESCE(v.metadata, '{}')
  FROM jsonb_to_recordset(CAST(:rows AS jsonb))
       AS v(account_id uuid, entry_type text, amount bigint, currency text, invoice_id uuid,
            period_start timestamptz, idempotency_key text, description text, metadata jsonb)
ON CONFLICT (tenant_id, idempotency_key) DO NOTHING;
