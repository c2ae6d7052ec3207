-- Least-privilege roles for a Waypoint database.
--
-- Run as a superuser, connected to the database, before the first
-- `waypoint migrate up`, once for each database the roles serve. Running it
-- again is harmless: the roles are made only if missing.
--
--   psql "postgres://postgres@db/waypoint" -f deploy/postgres/roles.sql
--   psql ... -c "ALTER ROLE waypoint_owner PASSWORD '...'"
--   psql ... -c "ALTER ROLE waypoint_writer PASSWORD '...'"
--
-- waypoint_owner owns the schema. Only `waypoint migrate up` connects as it.
-- waypoint_writer is what every other command connects as (start, ingest,
-- sink, backfill, dlq, search, status): it reads and writes rows and may
-- create the temporary tables FillEmbeddings stages into, and nothing more.
-- It cannot create, alter, drop or truncate tables. Once the schema is
-- migrated, the migrate step that start, sink and backfill run at startup
-- makes no change, so they start as this role too.
--
-- The writer may read schema_migrations, the migration runner's record of
-- applied versions, but not write it: a role that writes rows could
-- otherwise mark a migration applied that never ran. Default privileges
-- cannot leave one table out, and the runner creates that table after this
-- script, so the runner itself, whenever it creates the table or applies a
-- migration, revokes INSERT, UPDATE, DELETE and TRUNCATE on it from every
-- role but its owner. The REVOKE at the end of this script covers a table
-- that exists already, which the GRANT just before it has opened.
--
-- Rename the roles by editing the two names below throughout.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'waypoint_owner') THEN
        CREATE ROLE waypoint_owner LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'waypoint_writer') THEN
        CREATE ROLE waypoint_writer LOGIN;
    END IF;
END
$$;

-- pgvector is not a trusted extension: only a superuser can create it.
CREATE EXTENSION IF NOT EXISTS vector;

DO $$
BEGIN
    -- The owner of the database owns its public schema (PostgreSQL 15+),
    -- so the owner role can create tables there and no other role can.
    EXECUTE format('ALTER DATABASE %I OWNER TO waypoint_owner', current_database());
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO waypoint_writer', current_database());
END
$$;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO waypoint_writer;

-- Tables the owner creates from now on (every migration) are open to the
-- writer for rows only.
ALTER DEFAULT PRIVILEGES FOR ROLE waypoint_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO waypoint_writer;
ALTER DEFAULT PRIVILEGES FOR ROLE waypoint_owner IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO waypoint_writer;

-- Tables already there, for a database migrated before these roles existed
-- (reassign them to the owner first: REASSIGN OWNED BY old_role TO
-- waypoint_owner).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO waypoint_writer;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO waypoint_writer;

-- The runner's bookkeeping table stays read-only to the writer (see above).
DO $$
BEGIN
    IF to_regclass('public.schema_migrations') IS NOT NULL THEN
        REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON public.schema_migrations FROM waypoint_writer;
    END IF;
END
$$;
