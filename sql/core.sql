-- Shared helpers of the sessdb schema.

-- The version of the replaceable objects, for 'sessdb db status' and support questions.
CREATE OR REPLACE FUNCTION sessdb.version() RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT '0.1.0'::text $$;

-- Put sessdb at the end of the database's default search_path, so that the SQL Anywhere names
-- (next_connection, connection_property, drop_connection, ...) work unqualified from any psql,
-- as contract section 4 promises. Done once; a search_path set by an administrator that already
-- names sessdb is left alone.
DO $$
DECLARE
    configured text;
BEGIN
    SELECT split_part(c, '=', 2) INTO configured
    FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, unnest(s.setconfig) c
    WHERE d.datname = current_database() AND s.setrole = 0 AND c LIKE 'search_path=%';
    IF configured IS NULL OR configured !~ '(^|[ ,"])sessdb($|[ ,"])' THEN
        EXECUTE format('ALTER DATABASE %I SET search_path = "$user", public, sessdb', current_database());
    END IF;
END $$;
