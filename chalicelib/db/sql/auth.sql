-- Who a token is about (chalicelib/auth.py), before any tenant scope: migration 0011's token_subject.

-- name: token_subject
SELECT tenant_id, status, plan_tier, features FROM token_subject(CAST(:tenant AS uuid), CAST(:client AS text));
