-- The service catalog API: create_service, alter_service, drop_service (contract section 3).
-- Every change notifies channel 'sessdb_services', so running engines reload within a second.

CREATE OR REPLACE FUNCTION sessdb._raise(sqlstate text, message text, hint text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message, HINT = coalesce(hint, '');
END $$;

-- Normalizes a METHODS list: '*' or DEFAULT are GET,HEAD,POST; NONE is the empty list.
CREATE OR REPLACE FUNCTION sessdb._normalize_methods(methods text)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    item text;
    result text[] := '{}';
BEGIN
    IF methods IS NULL OR btrim(methods) = '' THEN
        PERFORM sessdb._raise('SD100', 'METHODS must not be empty (use NONE to disable the service)');
    END IF;
    FOREACH item IN ARRAY string_to_array(upper(replace(methods, ' ', '')), ',') LOOP
        IF item IN ('*', 'DEFAULT') THEN
            result := result || ARRAY['GET', 'HEAD', 'POST'];
        ELSIF item = 'NONE' THEN
            NULL;
        ELSIF item IN ('GET', 'HEAD', 'POST', 'PUT', 'DELETE') THEN
            result := result || item;
        ELSE
            PERFORM sessdb._raise('SD100', format('unknown method %L in METHODS', item),
                                  'use GET, HEAD, POST, PUT, DELETE, *, DEFAULT or NONE');
        END IF;
    END LOOP;
    SELECT coalesce(string_agg(m, ',' ORDER BY array_position(ARRAY['GET','HEAD','POST','PUT','DELETE'], m)), '')
      INTO methods FROM (SELECT DISTINCT unnest(result) AS m) s;
    RETURN methods;
END $$;

CREATE OR REPLACE FUNCTION sessdb._check_service(s sessdb.services)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF s.name IS NULL OR s.name = '' THEN
        PERFORM sessdb._raise('SD100', 'a service needs a name');
    END IF;
    IF s.name !~ '^[A-Za-z0-9/_.!~*''()-]+$' THEN
        PERFORM sessdb._raise('SD100', format('invalid service name %L', s.name),
                              'names use letters, digits and / - _ . ! ~ * '' ( )');
    END IF;
    IF s.name ~ '^/|/$|//' THEN
        PERFORM sessdb._raise('SD100', format('invalid service name %L: no leading, trailing or doubled /', s.name));
    END IF;
    IF s.name ~* '^_sessdb(/|$)' THEN
        PERFORM sessdb._raise('SD100', format('the service name %L is reserved', s.name));
    END IF;
    IF s.type IS NULL OR s.type NOT IN ('RAW', 'HTML', 'XML', 'JSON', 'SOAP', 'DISH') THEN
        PERFORM sessdb._raise('SD100', format('invalid service type %L', s.type),
                              'use RAW, HTML, XML, JSON, SOAP or DISH');
    END IF;
    IF s.type = 'DISH' AND position('/' IN s.name) > 0 THEN
        PERFORM sessdb._raise('SD100', format('a DISH service name may not contain /: %L', s.name));
    END IF;
    IF s.url NOT IN ('OFF', 'ON', 'ELEMENTS') THEN
        PERFORM sessdb._raise('SD100', format('invalid url mode %L', s.url), 'use OFF, ON or ELEMENTS');
    END IF;
    IF s.session NOT IN ('optional', 'required', 'required-url') THEN
        PERFORM sessdb._raise('SD100', format('invalid session mode %L', s.session),
                              'use optional, required or required-url');
    END IF;
    IF s.type <> 'DISH' AND (s.statement IS NULL OR btrim(s.statement) = '') THEN
        PERFORM sessdb._raise('SD100', format('service %L needs a statement', s.name));
    END IF;
    IF s.user_name IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = s.user_name) THEN
        PERFORM sessdb._raise('SD100', format('role %L does not exist', s.user_name));
    END IF;
END $$;

CREATE OR REPLACE FUNCTION sessdb.create_service(
    name text,
    type text,
    statement text DEFAULT NULL,
    url text DEFAULT 'OFF',
    methods text DEFAULT NULL,
    "authorization" boolean DEFAULT false,
    user_name text DEFAULT NULL,
    session text DEFAULT 'optional',
    enabled boolean DEFAULT true,
    group_name text DEFAULT NULL,
    format text DEFAULT NULL,
    replace boolean DEFAULT false
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s sessdb.services;
BEGIN
    s.name := name;
    s.type := upper(type);
    s.statement := statement;
    s.url := upper(coalesce(url, 'OFF'));
    -- a SOAP service takes POST unless told otherwise (SQL Anywhere); the others GET, HEAD, POST
    s.methods := sessdb._normalize_methods(coalesce(methods, CASE WHEN upper(type) = 'SOAP' THEN 'POST' ELSE '*' END));
    s."authorization" := coalesce("authorization", false);
    s.user_name := user_name;
    s.session := lower(coalesce(session, 'optional'));
    s.enabled := coalesce(enabled, true);
    s.group_name := group_name;
    s.format := format;
    s.created_at := now();
    s.updated_at := now();
    PERFORM sessdb._check_service(s);
    IF replace THEN
        DELETE FROM sessdb.services AS t WHERE t.name = s.name;
    ELSIF EXISTS (SELECT 1 FROM sessdb.services AS t WHERE t.name = s.name) THEN
        PERFORM sessdb._raise('SD101', format('service %L already exists', s.name),
                              'use alter_service, or CREATE OR REPLACE SERVICE');
    END IF;
    INSERT INTO sessdb.services SELECT s.*;
END $$;

CREATE OR REPLACE FUNCTION sessdb.alter_service(
    name text,
    type text DEFAULT NULL,
    statement text DEFAULT NULL,
    url text DEFAULT NULL,
    methods text DEFAULT NULL,
    "authorization" boolean DEFAULT NULL,
    user_name text DEFAULT 'sessdb:unchanged',
    session text DEFAULT NULL,
    enabled boolean DEFAULT NULL,
    group_name text DEFAULT 'sessdb:unchanged',
    format text DEFAULT 'sessdb:unchanged'
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s sessdb.services;
BEGIN
    SELECT * INTO s FROM sessdb.services AS t WHERE t.name = alter_service.name FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM sessdb._raise('SD102', format('service %L does not exist', alter_service.name));
    END IF;
    s.type := coalesce(upper(alter_service.type), s.type);
    s.statement := coalesce(alter_service.statement, s.statement);
    s.url := coalesce(upper(alter_service.url), s.url);
    IF alter_service.methods IS NOT NULL THEN
        s.methods := sessdb._normalize_methods(alter_service.methods);
    END IF;
    s."authorization" := coalesce(alter_service."authorization", s."authorization");
    -- user_name, group_name and format may be set to NULL (USER NULL); left out, they stay
    IF alter_service.user_name IS DISTINCT FROM 'sessdb:unchanged' THEN
        s.user_name := alter_service.user_name;
    END IF;
    s.session := coalesce(lower(alter_service.session), s.session);
    s.enabled := coalesce(alter_service.enabled, s.enabled);
    IF alter_service.group_name IS DISTINCT FROM 'sessdb:unchanged' THEN
        s.group_name := alter_service.group_name;
    END IF;
    IF alter_service.format IS DISTINCT FROM 'sessdb:unchanged' THEN
        s.format := alter_service.format;
    END IF;
    s.updated_at := now();
    PERFORM sessdb._check_service(s);
    DELETE FROM sessdb.services AS t WHERE t.name = s.name;
    INSERT INTO sessdb.services SELECT s.*;
END $$;

CREATE OR REPLACE FUNCTION sessdb.drop_service(name text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM sessdb.services AS t WHERE t.name = drop_service.name;
    IF NOT FOUND THEN
        PERFORM sessdb._raise('SD102', format('service %L does not exist', drop_service.name));
    END IF;
END $$;

CREATE OR REPLACE FUNCTION sessdb._services_changed()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sessdb_services', '');
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER services_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sessdb.services
    FOR EACH STATEMENT EXECUTE FUNCTION sessdb._services_changed();
