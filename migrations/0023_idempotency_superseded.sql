-- An Idempotency-Key's completion refuses, as an error, when the claim is no longer the request's
-- own (taken over as stale by a retry): the error rolls the work back with it, so the completion
-- can carry the work's COMMIT in the same flush (#17: one round trip fewer a keyed request). Its
-- SQLSTATE is the project's own class, 'BK' (idempotency.SUPERSEDED), raised by nothing else.
CREATE FUNCTION idempotency_superseded() RETURNS text
    LANGUAGE plpgsql VOLATILE
    AS $$
BEGIN
    RAISE EXCEPTION 'the idempotency key''s claim was taken over by a retry' USING ERRCODE = 'BK001';
END
$$;
