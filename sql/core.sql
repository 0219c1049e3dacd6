-- Shared helpers of the sessdb schema.

-- The version of the replaceable objects, for 'sessdb db status' and support questions.
CREATE OR REPLACE FUNCTION sessdb.version() RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT '0.1.0'::text $$;
