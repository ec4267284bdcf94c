-- The functions' login role (#16): billing_runtime, which is not the schema owner.
--
-- Until now the functions logged in as the owner (Aurora's master user) and SET ROLE billing_app,
-- so a RESET ROLE, in SQL the app ran, would have given the session back the owner's powers and
-- left row-level security behind. billing_runtime logs in, owns nothing and holds no privilege of
-- its own: NOINHERIT, and its membership in billing_app does not inherit either, so it reads
-- nothing until it SETs ROLE billing_app (chalicelib/db/connection.py does, on every connection),
-- and after a RESET ROLE it reads nothing at all. It cannot become billing_system or the owner.
-- The owner (the master secret) is for migrations only.
--
-- No password, here or anywhere: on Aurora it logs in with IAM database authentication (a token
-- signed by the function's own credentials), granted by membership in rds_iam where that role
-- exists (Aurora and RDS only). rds_iam is the one membership it inherits: RDS decides that a
-- login authenticates with IAM by that role's privileges (PostgreSQL 16: the INHERIT option of the
-- grant), and rds_iam grants nothing else. Roles are per cluster: a second database, or a rerun,
-- finds the role made and only checks it.

-- billing_proxy is the same login for the RDS Proxy (infra: rds_proxy = true): the proxy logs in
-- to Aurora with a password (from its secret; `python -m chalicelib.db.migrate --proxy-secret ARN`
-- sets it, as a SCRAM verifier), and a role granted rds_iam cannot log in with a password, so it
-- never gets rds_iam. Without a password it cannot log in at all, which is where it stays on a
-- stage without a proxy.

DO $$
DECLARE
    login text;
    existing pg_roles;
BEGIN
    FOREACH login IN ARRAY ARRAY['billing_runtime', 'billing_proxy'] LOOP
        SELECT * INTO existing FROM pg_roles WHERE rolname = login;
        IF NOT FOUND THEN
            EXECUTE format('CREATE ROLE %I LOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION',
                           login);
        ELSIF existing.rolsuper OR existing.rolbypassrls OR existing.rolcreatedb OR existing.rolcreaterole
              OR existing.rolreplication OR existing.rolinherit OR NOT existing.rolcanlogin THEN
            RAISE EXCEPTION 'role % exists with other attributes than this migration gives it', login
                USING HINT = 'it must be LOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION';
        END IF;

        IF current_setting('server_version_num')::int >= 160000 THEN
            -- May SET ROLE billing_app; inherits none of its privileges.
            EXECUTE format('GRANT billing_app TO %I WITH INHERIT FALSE, SET TRUE', login);
        ELSE
            EXECUTE format('GRANT billing_app TO %I', login);  -- NOINHERIT: the same, before grant options
        END IF;
    END LOOP;

    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam') THEN
        IF current_setting('server_version_num')::int >= 160000 THEN
            EXECUTE 'GRANT rds_iam TO billing_runtime WITH INHERIT TRUE, SET FALSE';
        ELSE
            EXECUTE 'GRANT rds_iam TO billing_runtime';
        END IF;
    END IF;
END
$$;
