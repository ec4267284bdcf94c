-- The daily rebill fans out (issue #17): instead of one invocation paging through every due
-- account, the schedule opens a run of chains and each chain advances one bounded page per SQS
-- message, wherever the rebill processor picks it up (chalicelib/billing/rebill.py).
--
-- * Renewals are split by bucket: the last byte of the account id (0-255; random in both UUIDv4
--   and UUIDv7 ids). A chain owns a range of buckets and walks them in (bucket, next_billing_at,
--   id) order on accounts_due_by_bucket, which replaces accounts_due (same columns behind the
--   bucket, same partial predicate): a page reads due entries only, whatever the number of
--   chains, and each rebill still updates one selection index, not two.
-- * rebill_chains holds each chain's position. A step message names its run, chain and step
--   number; the step locks its chain's row, pages from the stored position, sends the page and
--   the next step's message, then moves the row on in the same transaction. A duplicate or
--   redelivered message whose step is no longer current finds nothing to do; a step that
--   dies before its commit leaves the row where it was, and the redelivered message re-sends
--   that one page (processing is idempotent).
-- * As with every cross-tenant job, the app role reaches both only through SECURITY DEFINER
--   functions owned by billing_system; the chains' table holds no tenant data beyond the
--   position's account id.

CREATE FUNCTION rebill_bucket(id uuid) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    RETURN get_byte(uuid_send(id), 15);

CREATE INDEX accounts_due_by_bucket ON accounts (rebill_bucket(id), next_billing_at, id)
    WHERE status IN ('ACTIVE', 'PENDING');
DROP FUNCTION IF EXISTS rebill_due_accounts(timestamptz, timestamptz, uuid, integer);
DROP INDEX IF EXISTS accounts_due;

-- Up to max_rows renewals due at as_of in buckets from_bucket..last_bucket, in keyset order, after
-- (after_at, after_id) in from_bucket (after_at NULL: from that bucket's start). One bucket at a
-- time, so every query is a range scan of the index that stops at as_of; `bucket` says where the
-- page ended, for the next one. The ORDER BY names the bucket although it is fixed: without it the
-- planner does not see the index's order, reads the whole bucket and sorts it (56 ms instead of 7
-- for a page of 1,000 from a bucket of 3,900, at a million accounts).
CREATE FUNCTION rebill_due_page(as_of timestamptz, last_bucket integer, from_bucket integer,
                                after_at timestamptz, after_id uuid, max_rows integer)
    RETURNS TABLE (tenant_id uuid, account_id uuid, due_at timestamptz, kind text, bucket integer)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public
    AS $$
DECLARE
    b integer := from_bucket;
    got integer := 0;
    n integer;
BEGIN
    WHILE b <= last_bucket AND got < max_rows LOOP
        IF b = from_bucket AND after_at IS NOT NULL THEN
            RETURN QUERY
                SELECT a.tenant_id, a.id, a.next_billing_at, 'renewal'::text, b
                  FROM accounts a
                 WHERE rebill_bucket(a.id) = b AND a.status IN ('ACTIVE', 'PENDING')
                   AND a.next_billing_at <= as_of AND (a.next_billing_at, a.id) > (after_at, after_id)
                 ORDER BY rebill_bucket(a.id), a.next_billing_at, a.id
                 LIMIT max_rows - got;
        ELSE
            RETURN QUERY
                SELECT a.tenant_id, a.id, a.next_billing_at, 'renewal'::text, b
                  FROM accounts a
                 WHERE rebill_bucket(a.id) = b AND a.status IN ('ACTIVE', 'PENDING')
                   AND a.next_billing_at <= as_of
                 ORDER BY rebill_bucket(a.id), a.next_billing_at, a.id
                 LIMIT max_rows - got;
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        got := got + n;
        b := b + 1;
    END LOOP;
END
$$;
ALTER FUNCTION rebill_due_page(timestamptz, integer, integer, timestamptz, uuid, integer) OWNER TO billing_system;
REVOKE ALL ON FUNCTION rebill_due_page(timestamptz, integer, integer, timestamptz, uuid, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rebill_due_page(timestamptz, integer, integer, timestamptz, uuid, integer) TO billing_app;

-- One row per chain of a run: what it selects (source, bucket range), where it stands (step,
-- bucket, after_at, after_id), how many accounts it has sent, and when it finished.
CREATE TABLE rebill_chains (
    run_id        uuid NOT NULL,
    chain         integer NOT NULL CHECK (chain >= 0),
    as_of         timestamptz NOT NULL,
    source        text NOT NULL CHECK (source IN ('renewal', 'retry', 'settle')),
    first_bucket  integer NOT NULL CHECK (first_bucket BETWEEN 0 AND 255),
    last_bucket   integer NOT NULL CHECK (last_bucket BETWEEN first_bucket AND 255),
    step          integer NOT NULL DEFAULT 0 CHECK (step >= 0),
    bucket        integer NOT NULL CHECK (bucket BETWEEN first_bucket AND last_bucket),
    after_at      timestamptz,
    after_id      uuid,
    enqueued      bigint NOT NULL DEFAULT 0 CHECK (enqueued >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    done_at       timestamptz,
    PRIMARY KEY (run_id, chain)
);
CREATE INDEX rebill_chains_unfinished ON rebill_chains (updated_at) WHERE done_at IS NULL;
REVOKE ALL ON rebill_chains FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON rebill_chains TO billing_system;

-- A new run's chains: renewals in `partitions` bucket ranges (as even as 256 divides), then one
-- chain of dunning retries and one of payments left pending. Chains of earlier runs that stopped
-- short (unfinished, untouched for an hour: a step message in the dead-letter queue) are counted
-- and forgotten: their accounts are still due, so this run selects them. Finished runs are kept
-- a week.
CREATE FUNCTION rebill_chains_open(run_id uuid, as_of timestamptz, partitions integer)
    RETURNS TABLE (chains integer, stalled bigint)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public
    AS $$
DECLARE
    forgotten bigint;
BEGIN
    IF partitions NOT BETWEEN 1 AND 256 THEN
        RAISE EXCEPTION 'partitions must be between 1 and 256, not %', partitions USING ERRCODE = '22023';
    END IF;
    WITH gone AS (
        DELETE FROM rebill_chains c
         WHERE (c.done_at IS NULL AND c.updated_at < now() - interval '1 hour')
            OR c.created_at < now() - interval '7 days'
        RETURNING c.done_at)
    SELECT count(*) FILTER (WHERE gone.done_at IS NULL) INTO forgotten FROM gone;
    INSERT INTO rebill_chains (run_id, chain, as_of, source, first_bucket, last_bucket, bucket)
    SELECT rebill_chains_open.run_id, p, rebill_chains_open.as_of, 'renewal', p * 256 / partitions,
           (p + 1) * 256 / partitions - 1, p * 256 / partitions
      FROM generate_series(0, partitions - 1) p
    UNION ALL SELECT rebill_chains_open.run_id, partitions, rebill_chains_open.as_of, 'retry', 0, 0, 0
    UNION ALL SELECT rebill_chains_open.run_id, partitions + 1, rebill_chains_open.as_of, 'settle', 0, 0, 0;
    RETURN QUERY SELECT partitions + 2, forgotten;
END
$$;
ALTER FUNCTION rebill_chains_open(uuid, timestamptz, integer) OWNER TO billing_system;
REVOKE ALL ON FUNCTION rebill_chains_open(uuid, timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rebill_chains_open(uuid, timestamptz, integer) TO billing_app;

-- The chain's row, locked until the caller's transaction ends, when `step` is its current step;
-- no row when that step is done (a duplicate or late message) or the chain has finished. The row
-- is locked by its key first and its step compared after: a step message taken while the step
-- before it is still committing waits for that commit and then finds its step current. (With the
-- step in the WHERE clause, the scan would judge the row by the version committed before, skip
-- it without waiting, and the chain would stop.)
CREATE FUNCTION rebill_chain_claim(run_id uuid, chain integer, step integer)
    RETURNS TABLE (as_of timestamptz, source text, last_bucket integer, bucket integer, after_at timestamptz,
                   after_id uuid)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public
    AS $$
DECLARE
    c rebill_chains;
BEGIN
    SELECT * INTO c FROM rebill_chains r
     WHERE r.run_id = rebill_chain_claim.run_id AND r.chain = rebill_chain_claim.chain
       FOR UPDATE;
    IF FOUND AND c.step = rebill_chain_claim.step AND c.done_at IS NULL THEN
        RETURN QUERY SELECT c.as_of, c.source, c.last_bucket, c.bucket, c.after_at, c.after_id;
    END IF;
END
$$;
ALTER FUNCTION rebill_chain_claim(uuid, integer, integer) OWNER TO billing_system;
REVOKE ALL ON FUNCTION rebill_chain_claim(uuid, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rebill_chain_claim(uuid, integer, integer) TO billing_app;

-- Moves a claimed chain past the page it sent: the next step, its position, or finished.
CREATE FUNCTION rebill_chain_advance(run_id uuid, chain integer, step integer, bucket integer,
                                     after_at timestamptz, after_id uuid, sent integer, finished boolean)
    RETURNS integer
    LANGUAGE sql SECURITY DEFINER SET search_path = public
    AS $$
        WITH moved AS (
            UPDATE rebill_chains c
               SET step = c.step + 1, bucket = rebill_chain_advance.bucket, after_at = rebill_chain_advance.after_at,
                   after_id = rebill_chain_advance.after_id, enqueued = c.enqueued + sent, updated_at = now(),
                   done_at = CASE WHEN finished THEN now() END
             WHERE c.run_id = rebill_chain_advance.run_id AND c.chain = rebill_chain_advance.chain
               AND c.step = rebill_chain_advance.step AND c.done_at IS NULL
            RETURNING 1)
        SELECT count(*)::integer FROM moved
    $$;
ALTER FUNCTION rebill_chain_advance(uuid, integer, integer, integer, timestamptz, uuid, integer, boolean)
    OWNER TO billing_system;
REVOKE ALL ON FUNCTION rebill_chain_advance(uuid, integer, integer, integer, timestamptz, uuid, integer, boolean)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rebill_chain_advance(uuid, integer, integer, integer, timestamptz, uuid, integer, boolean)
    TO billing_app;

-- A run's progress, for operators and tests: per chain, where it stands.
CREATE FUNCTION rebill_run_progress(run_id uuid)
    RETURNS TABLE (chain integer, source text, step integer, enqueued bigint, done boolean)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$
        SELECT c.chain, c.source, c.step, c.enqueued, c.done_at IS NOT NULL
          FROM rebill_chains c WHERE c.run_id = rebill_run_progress.run_id ORDER BY c.chain
    $$;
ALTER FUNCTION rebill_run_progress(uuid) OWNER TO billing_system;
REVOKE ALL ON FUNCTION rebill_run_progress(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rebill_run_progress(uuid) TO billing_app;
