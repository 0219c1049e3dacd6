-- The request and response functions of contract section 4.
--
-- The engine puts the request in the transaction-local setting 'sessdb.request' (JSON):
--   {"method", "uri", "version", "query", "vars": [{"n", "v", "h", "b"}], "headers": [[name, value]],
--    "body" (text) or "body64" (base64)}
-- and the response headers so far in 'sessdb.response' (JSON array of [name, value]).
-- Changes the engine must act on while the statement runs (response headers, session changes)
-- are also sent as a NOTICE with message 'sessdb-event' and the change as JSON in DETAIL.

CREATE OR REPLACE FUNCTION sessdb._request()
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('sessdb.request', true), '')::jsonb
$$;

-- True inside a service request. Cheaper than testing sessdb._request(), which parses the request.
CREATE OR REPLACE FUNCTION sessdb._in_request()
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('sessdb.request', true), '') <> ''
$$;

-- Tells the engine of a change while the statement runs: detail is a JSON object with "kind".
-- It answers true, so that PL/pgSQL callers can assign it (sent := sessdb._event(...)): an
-- assignment is evaluated as a simple expression, without the executor a PERFORM starts (a few
-- microseconds a statement), and is never planned anew for its parameters, as a PERFORM is at
-- its first five runs on a connection. The request path's functions use assignments for that.
CREATE OR REPLACE FUNCTION sessdb._event(detail json)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE USING MESSAGE = 'sessdb-event', DETAIL = detail;
    RETURN true;
END $$;
DROP FUNCTION IF EXISTS sessdb._event(text, jsonb);  -- its earlier form: a kind, and a jsonb payload

-- The variables named "name": exactly as written if any is, else in any letter case.
CREATE OR REPLACE FUNCTION sessdb._variables(name text)
RETURNS SETOF jsonb LANGUAGE sql STABLE AS $$
    WITH vars AS (
        SELECT v, ord FROM jsonb_array_elements(sessdb._request() -> 'vars') WITH ORDINALITY AS a(v, ord)
    ), exact AS (
        SELECT v, ord FROM vars WHERE v ->> 'n' = name
    )
    SELECT v FROM (
        SELECT v, ord FROM exact
        UNION ALL
        SELECT v, ord FROM vars WHERE lower(v ->> 'n') = lower(name) AND NOT EXISTS (SELECT 1 FROM exact)
    ) s ORDER BY ord
$$;

CREATE OR REPLACE FUNCTION sessdb.http_variable(name text, instance integer DEFAULT NULL, attribute text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    var jsonb;
    header text;
BEGIN
    SELECT v INTO var FROM sessdb._variables(name) AS v OFFSET greatest(coalesce(instance, 1), 1) - 1 LIMIT 1;
    IF var IS NULL OR (instance IS NOT NULL AND instance < 1) THEN
        RETURN NULL;
    END IF;
    IF attribute IS NULL THEN
        RETURN var ->> 'v';
    ELSIF upper(attribute) = '@BINARY' THEN
        IF var ? 'b' THEN
            -- raw bytes that are not UTF-8 come back in bytea's hex text form
            BEGIN
                RETURN convert_from(decode(var ->> 'b', 'base64'), 'UTF8');
            EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character OR invalid_parameter_value THEN
                RETURN decode(var ->> 'b', 'base64')::text;
            END;
        END IF;
        RETURN var ->> 'v';
    ELSIF upper(attribute) = '@TRANSPORT' THEN
        RETURN coalesce(var ->> 't', var ->> 'v');
    END IF;
    SELECT h ->> 1 INTO header FROM jsonb_array_elements(var -> 'h') AS h WHERE lower(h ->> 0) = lower(attribute) LIMIT 1;
    RETURN header;
END $$;

CREATE OR REPLACE FUNCTION sessdb.next_http_variable(name text)
RETURNS text LANGUAGE sql STABLE AS $$
    WITH names AS (
        SELECT v ->> 'n' AS n, min(ord) AS first
        FROM jsonb_array_elements(sessdb._request() -> 'vars') WITH ORDINALITY AS a(v, ord)
        GROUP BY v ->> 'n'
    )
    SELECT n FROM names
    WHERE name IS NULL OR first > (SELECT first FROM names WHERE n = name)
    ORDER BY first LIMIT 1
$$;

CREATE OR REPLACE FUNCTION sessdb._pseudo_headers()
RETURNS TABLE(name text, value text, ord bigint) LANGUAGE sql STABLE AS $$
    SELECT * FROM (VALUES
        ('@HttpMethod', sessdb._request() ->> 'method', -4::bigint),
        ('@HttpURI', sessdb._request() ->> 'uri', -3),
        ('@HttpVersion', sessdb._request() ->> 'version', -2),
        ('@HttpQueryString', sessdb._request() ->> 'query', -1)
    ) AS p(name, value, ord)
    WHERE sessdb._request() IS NOT NULL AND value IS NOT NULL
$$;

CREATE OR REPLACE FUNCTION sessdb._headers()
RETURNS TABLE(name text, value text, ord bigint) LANGUAGE sql STABLE AS $$
    SELECT name, value, ord FROM sessdb._pseudo_headers()
    UNION ALL
    SELECT h ->> 0, h ->> 1, ord FROM jsonb_array_elements(sessdb._request() -> 'headers') WITH ORDINALITY AS a(h, ord)
$$;

CREATE OR REPLACE FUNCTION sessdb.http_header(name text)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT string_agg(value, ', ' ORDER BY ord) FROM sessdb._headers() h WHERE lower(h.name) = lower(http_header.name)
$$;

CREATE OR REPLACE FUNCTION sessdb.next_http_header(name text)
RETURNS text LANGUAGE sql STABLE AS $$
    WITH names AS (SELECT lower(h.name) AS key, min(h.name) AS n, min(ord) AS first FROM sessdb._headers() h GROUP BY lower(h.name))
    SELECT n FROM names
    WHERE next_http_header.name IS NULL OR first > (SELECT first FROM names WHERE key = lower(next_http_header.name))
    ORDER BY first LIMIT 1
$$;

CREATE OR REPLACE FUNCTION sessdb.http_body()
RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    req jsonb := sessdb._request();
BEGIN
    IF req ? 'body' THEN
        RETURN req ->> 'body';
    ELSIF req ? 'body64' THEN
        BEGIN
            RETURN convert_from(decode(req ->> 'body64', 'base64'), 'UTF8');
        EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character OR invalid_parameter_value THEN
            RETURN decode(req ->> 'body64', 'base64')::text;
        END;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION sessdb.http_body_bytes()
RETURNS bytea LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN r ? 'body' THEN convert_to(r ->> 'body', 'UTF8')
                WHEN r ? 'body64' THEN decode(r ->> 'body64', 'base64') END
    FROM (SELECT sessdb._request() AS r) s
$$;

-- Response headers.

CREATE OR REPLACE FUNCTION sessdb._response()
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('sessdb.response', true), '')::jsonb, '[]'::jsonb)
$$;

CREATE OR REPLACE FUNCTION sessdb.sa_set_http_header(name text, value text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    headers jsonb;
    ignored text;
    sent boolean;
BEGIN
    IF name IS NULL OR (lower(name) <> '@httpstatus' AND name !~ '^[!#$%&''*+.^_`|~0-9A-Za-z-]+$') THEN
        PERFORM sessdb._raise('SD100', format('invalid HTTP header name %L', name));
    END IF;
    IF value ~ '[\r\n]' THEN
        PERFORM sessdb._raise('SD100', format('the value of HTTP header %L contains a line break', name));
    END IF;
    IF lower(name) = '@httpstatus' THEN
        -- 1xx are interim answers, never a response's status: a client would wait for the real one
        IF value IS NULL OR value !~ '^[2-9][0-9]{2}(:[^\r\n]*)?$' THEN
            PERFORM sessdb._raise('SD100', format('invalid HTTP status %L', value),
                                  'give three digits from 200 to 999, optionally followed by :reason, as in ''404'' or ''418:Teapot''');
        END IF;
        name := '@HttpStatus';
    END IF;
    IF NOT sessdb._in_request() THEN
        RETURN;  -- outside a service request there is no response to shape
    END IF;
    SELECT coalesce(jsonb_agg(h ORDER BY ord), '[]'::jsonb) INTO headers
    FROM jsonb_array_elements(sessdb._response()) WITH ORDINALITY AS a(h, ord)
    WHERE lower(h ->> 0) <> lower(name);
    IF value IS NOT NULL THEN
        headers := headers || jsonb_build_array(jsonb_build_array(name, value));
    END IF;
    ignored := set_config('sessdb.response', headers::text, true);
    sent := sessdb._event(json_build_object('kind', 'header', 'name', name, 'value', value));
END $$;

CREATE OR REPLACE FUNCTION sessdb.http_response_header(name text)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT h ->> 1 FROM jsonb_array_elements(sessdb._response()) AS h
    WHERE lower(h ->> 0) = lower(http_response_header.name) LIMIT 1
$$;

CREATE OR REPLACE FUNCTION sessdb.next_http_response_header(name text)
RETURNS text LANGUAGE sql STABLE AS $$
    WITH names AS (SELECT h ->> 0 AS n, ord FROM jsonb_array_elements(sessdb._response()) WITH ORDINALITY AS a(h, ord))
    SELECT n FROM names
    WHERE next_http_response_header.name IS NULL
       OR ord > (SELECT ord FROM names WHERE lower(n) = lower(next_http_response_header.name))
    ORDER BY ord LIMIT 1
$$;

-- sa_set_http_option: CharsetConversion and AcceptCharset here; SessionID and SessionTimeout are
-- the session functions' (sessions.sql). An unknown option or a bad value raises SD939, SQL
-- Anywhere's -939 "invalid setting for HTTP option".
CREATE OR REPLACE FUNCTION sessdb.sa_set_http_option(option text, value text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    name text := lower(coalesce(option, ''));
    done boolean;
BEGIN
    IF name = 'sessionid' THEN
        done := sessdb._apply_session_id(value);
    ELSIF name = 'sessiontimeout' THEN
        PERFORM sessdb._set_session_timeout(value);
    ELSIF name = 'charsetconversion' THEN
        IF upper(coalesce(value, '')) NOT IN ('ON', 'OFF') THEN
            PERFORM sessdb._raise('SD939', format('invalid setting %L for HTTP option ''CharsetConversion''', value),
                                  'use ON or OFF');
        END IF;
        IF sessdb._in_request() THEN
            PERFORM sessdb._event(json_build_object('kind', 'option', 'name', 'CharsetConversion', 'value', upper(value)));
        END IF;
    ELSIF name = 'acceptcharset' THEN
        IF value IS NULL OR value !~ '^[A-Za-z0-9_.:+*-]+(\s*;\s*q=[0-9.]+)?(\s*,\s*[A-Za-z0-9_.:+*-]+(\s*;\s*q=[0-9.]+)?)*$' THEN
            PERFORM sessdb._raise('SD939', format('invalid setting %L for HTTP option ''AcceptCharset''', value),
                                  'give a list in Accept-Charset syntax, such as ''utf-8, iso-8859-1;q=0.5''');
        END IF;
        IF sessdb._in_request() THEN
            PERFORM sessdb._event(json_build_object('kind', 'option', 'name', 'AcceptCharset', 'value', value));
        END IF;
    ELSE
        PERFORM sessdb._raise('SD939', format('invalid HTTP option %L', option),
                              'use SessionID, SessionTimeout, CharsetConversion or AcceptCharset');
    END IF;
END $$;
