-- HTTP sessions from SQL (contract sections 4 and 5).
--
-- The engine's memory is the authority on sessions. What SQL needs to decide at once lives in
-- PostgreSQL itself:
--   * A session id is owned through a session-level advisory lock on hashtextextended(id),
--     held by the connection of the session (or of the request that has it pending). Taking
--     an id another connection holds fails at once: SD939 at the call, as in SQL Anywhere.
--   * A live session also holds one of MAX_SESSIONS slot locks (classid = the engine's slot
--     class), so no more sessions than that can exist, whatever the concurrency.
--   * The request's view of its session is in transaction-local settings the engine sets at
--     the start of each request: sessdb.session_id, .session_created, .session_last,
--     .session_timeout, .session_creator ('1' when the request started without a session),
--     .pending_id and .slots ('<class>:<max>'); an empty one is not set, and reads as unset.
--   * Changes are reported to the engine while the statement runs, as 'sessdb-event' notices.
-- sessdb.http_sessions mirrors the engine's sessions for other connections: the engine writes a
-- new session's row after its creator's statement (in batches, sessdb._mirror_new_sessions);
-- after that each session connection updates its own row, in the transaction of its requests.

CREATE OR REPLACE FUNCTION sessdb._setting(name text)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting(name, true), '')
$$;

CREATE OR REPLACE FUNCTION sessdb._id_lock_key(id text)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended('sessdb-session:' || id, 0)
$$;

CREATE OR REPLACE FUNCTION sessdb._sd939(message text, hint text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM sessdb._raise('SD939', message, hint);
END $$;

-- Claims a session id for this connection (the advisory lock); false when another holds it.
CREATE OR REPLACE FUNCTION sessdb._claim_id(id text)
RETURNS boolean LANGUAGE sql AS $$
    SELECT pg_try_advisory_lock(sessdb._id_lock_key(id))
$$;

CREATE OR REPLACE FUNCTION sessdb._release_id(id text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF id IS NOT NULL AND id <> '' THEN
        WHILE pg_advisory_unlock(sessdb._id_lock_key(id)) LOOP
        END LOOP;
    END IF;
END $$;

-- Takes one of the engine's session slots; the slot number, or NULL when all are taken.
CREATE OR REPLACE FUNCTION sessdb._claim_slot(slots text)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    class integer := split_part(slots, ':', 1)::integer;
    total integer := split_part(slots, ':', 2)::integer;
    start integer;
    i integer;
BEGIN
    IF total <= 0 THEN
        RETURN NULL;
    END IF;
    start := floor(random() * total)::integer;
    FOR i IN 0 .. total - 1 LOOP
        IF pg_try_advisory_lock(class, (start + i) % total) THEN
            RETURN (start + i) % total;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

-- Claims id and a slot for a new session on this connection (the engine uses it for
-- session => 'required'); raises SD939 or SD941 like sa_set_http_option would.
CREATE OR REPLACE FUNCTION sessdb._create_session(id text, slots text)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    slot integer;
BEGIN
    IF NOT sessdb._claim_id(id) THEN
        PERFORM sessdb._sd939(format('invalid setting for HTTP option ''SessionID'': %L is in use', id));
    END IF;
    slot := sessdb._claim_slot(slots);
    IF slot IS NULL THEN
        PERFORM sessdb._release_id(id);
        PERFORM sessdb._raise('SD941', 'too many HTTP sessions', 'raise MAX_SESSIONS, or delete sessions that are done');
    END IF;
    PERFORM set_config('sessdb.holds_session', '1', false);
    RETURN slot;
END $$;

-- sa_set_http_option('SessionID', value). Every creation runs it: its statements are
-- assignments rather than PERFORMs (see sessdb._event). True.
CREATE OR REPLACE FUNCTION sessdb._apply_session_id(value text)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    target text := coalesce(value, '');
    current_id text := coalesce(sessdb._setting('sessdb.session_id'), '');
    pending text;
    slot integer;
    ignored text;
    sent boolean;
BEGIN
    IF NOT sessdb._in_request() THEN
        PERFORM sessdb._sd939('SessionID can only be set by a service request');
    END IF;
    IF length(target) > 128 THEN
        PERFORM sessdb._sd939('invalid setting for HTTP option ''SessionID'': an id has at most 128 characters');
    END IF;
    IF sessdb._setting('sessdb.session_creator') = '1' THEN
        -- a creator request: every change takes effect at once (contract 5.3)
        IF target = current_id THEN
            RETURN true;
        END IF;
        IF target <> '' THEN
            IF NOT sessdb._claim_id(target) THEN
                PERFORM sessdb._sd939(format('invalid setting for HTTP option ''SessionID'': %L is in use', target));
            END IF;
            IF current_id = '' THEN
                slot := sessdb._claim_slot(sessdb._setting('sessdb.slots'));
                IF slot IS NULL THEN
                    PERFORM sessdb._release_id(target);
                    PERFORM sessdb._raise('SD941', 'too many HTTP sessions',
                                          'raise MAX_SESSIONS, or delete sessions that are done');
                END IF;
                ignored := set_config('sessdb.session_created', clock_timestamp()::text, true);
                ignored := set_config('sessdb.holds_session', '1', false);
            END IF;
        END IF;
        IF current_id <> '' THEN
            PERFORM sessdb._release_id(current_id);
        END IF;
        ignored := set_config('sessdb.session_id', target, true);
        IF target = '' THEN
            -- the session is gone: its slot (and any lock it held) is free at once
            PERFORM pg_advisory_unlock_all();
            ignored := set_config('sessdb.session_created', '', true);
            ignored := set_config('sessdb.holds_session', '', false);
        END IF;
        sent := sessdb._event(json_build_object('kind', 'session', 'op', 'set', 'id', nullif(target, ''),
                                                'old', nullif(current_id, ''), 'slot', slot));
        RETURN true;
    END IF;
    -- a request that started inside a session: the change is pending until it commits
    pending := sessdb._setting('sessdb.pending_id');
    IF target = current_id THEN
        IF pending IS NOT NULL THEN
            PERFORM sessdb._release_id(CASE WHEN pending = chr(127) THEN NULL ELSE pending END);
            ignored := set_config('sessdb.pending_id', '', true);
            sent := sessdb._event(json_build_object('kind', 'session', 'op', 'pending', 'id', current_id,
                                                    'delete', false));
        END IF;
        RETURN true;
    END IF;
    IF target = '' THEN
        IF pending IS NOT NULL AND pending <> chr(127) THEN
            PERFORM sessdb._release_id(pending);
        END IF;
        ignored := set_config('sessdb.pending_id', chr(127), true);
        sent := sessdb._event(json_build_object('kind', 'session', 'op', 'pending', 'id', NULL, 'delete', true));
        RETURN true;
    END IF;
    IF pending = target THEN
        RETURN true;
    END IF;
    IF NOT sessdb._claim_id(target) THEN
        PERFORM sessdb._sd939(format('invalid setting for HTTP option ''SessionID'': %L is in use', target));
    END IF;
    IF pending IS NOT NULL AND pending <> chr(127) THEN
        PERFORM sessdb._release_id(pending);
    END IF;
    ignored := set_config('sessdb.pending_id', target, true);
    sent := sessdb._event(json_build_object('kind', 'session', 'op', 'pending', 'id', target, 'delete', false));
    RETURN true;
END $$;
DROP FUNCTION IF EXISTS sessdb._set_session_id(text);  -- its earlier name, which answered nothing

CREATE OR REPLACE FUNCTION sessdb._set_session_timeout(value text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    minutes double precision;
    ignored text;
    sent boolean;
BEGIN
    BEGIN
        minutes := value::double precision;
    EXCEPTION WHEN others THEN
        minutes := NULL;
    END;
    IF minutes IS NULL OR minutes <= 0 OR minutes > 525600 OR minutes = 'NaN'::double precision THEN
        PERFORM sessdb._sd939(format('invalid setting %L for HTTP option ''SessionTimeout''', value),
                              'give minutes, more than 0 and at most 525600');
    END IF;
    IF NOT sessdb._in_request() THEN
        PERFORM sessdb._sd939('SessionTimeout can only be set by a service request');
    END IF;
    ignored := set_config('sessdb.session_timeout', minutes::text, true);
    ignored := set_config('sessdb.mirror_stale', '1', true);  -- the request's bookkeeping writes the mirror row
    sent := sessdb._event(json_build_object('kind', 'session', 'op', 'timeout', 'minutes', minutes));
END $$;

-- Bytes from PostgreSQL's strong random source: two version-4 UUIDs carry 244 random bits.
CREATE OR REPLACE FUNCTION sessdb._random_bytes()
RETURNS bytea LANGUAGE sql VOLATILE AS $$
    SELECT decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex')
$$;

-- A fresh session id: 43 URL- and cookie-safe characters carrying 244 random bits.
CREATE OR REPLACE FUNCTION sessdb.new_session_id()
RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT rtrim(translate(encode(sessdb._random_bytes(), 'base64'), '+/', '-_'), '=')
$$;

-- Introspection -------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION sessdb.next_connection(conn_id integer, db text DEFAULT NULL)
RETURNS integer LANGUAGE sql STABLE AS $$
    WITH conns AS (
        SELECT pid, backend_start FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND datname = coalesce(db, current_database())
    )
    SELECT pid FROM conns
    WHERE conn_id IS NULL
       OR (backend_start, pid) < (SELECT backend_start, pid FROM conns WHERE pid = conn_id)
    ORDER BY backend_start DESC, pid DESC LIMIT 1
$$;

CREATE OR REPLACE FUNCTION sessdb._format_time(ts timestamptz)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(to_char(ts, 'YYYY-MM-DD HH24:MI:SS.MS'), '')
$$;

CREATE OR REPLACE FUNCTION sessdb.connection_property(name text, conn_id integer DEFAULT NULL)
RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    target_pid integer := coalesce(conn_id, pg_backend_pid());
    own boolean := target_pid = pg_backend_pid() AND sessdb._in_request();
    row record;
    prop text := lower(name);
    pending text := sessdb._setting('sessdb.pending_id');
BEGIN
    IF prop = 'number' THEN
        RETURN CASE WHEN EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = target_pid)
                    THEN target_pid::text END;
    END IF;
    IF prop NOT IN ('sessionid', 'sessioncreatetime', 'sessionlasttime', 'http_session_timeout') THEN
        RETURN (SELECT CASE prop
                    WHEN 'name' THEN a.application_name
                    WHEN 'userid' THEN a.usename::text
                    WHEN 'nodeaddr' THEN host(a.client_addr)
                    WHEN 'lastreqtime' THEN sessdb._format_time(a.query_start)
                    WHEN 'logintime' THEN sessdb._format_time(a.backend_start)
                    ELSE NULL END
                FROM pg_stat_activity a WHERE a.pid = target_pid);
    END IF;
    IF own THEN
        RETURN CASE prop
            WHEN 'sessionid' THEN CASE WHEN pending IS NOT NULL AND pending <> chr(127) THEN pending
                                       ELSE coalesce(sessdb._setting('sessdb.session_id'), '') END
            WHEN 'sessioncreatetime' THEN CASE WHEN sessdb._setting('sessdb.session_id') IS NOT NULL
                THEN sessdb._format_time(sessdb._setting('sessdb.session_created')::timestamptz) ELSE '' END
            WHEN 'sessionlasttime' THEN CASE WHEN sessdb._setting('sessdb.session_id') IS NOT NULL
                THEN sessdb._format_time(sessdb._setting('sessdb.session_last')::timestamptz) ELSE '' END
            ELSE coalesce(sessdb._setting('sessdb.session_timeout'),
                          sessdb._setting('sessdb.default_timeout'), '') END;
    END IF;
    SELECT s.session_id, s.created_at, s.timeout_minutes,
           sessdb._session_last_time(s.last_time, a.state, a.state_change) AS last_time
      INTO row FROM sessdb.http_sessions s
    JOIN pg_stat_activity a ON a.pid = s.conn_id AND a.backend_start <= s.created_at  -- not a reused pid
    WHERE s.conn_id = target_pid;
    IF NOT FOUND THEN
        RETURN '';
    END IF;
    RETURN CASE prop
        WHEN 'sessionid' THEN row.session_id
        WHEN 'sessioncreatetime' THEN sessdb._format_time(row.created_at)
        WHEN 'sessionlasttime' THEN sessdb._format_time(row.last_time)
        ELSE trim(to_char(row.timeout_minutes, 'FM999999990.########'), '.') END;
END $$;

-- SessionLastTime of another connection's session, seen from any connection. A session request
-- writes the mirror row's last_time only when the row's is a second old or more (or something
-- else of the row changed): this saves PostgreSQL a row update on most requests. An idle
-- session's last release is when its connection went idle, which PostgreSQL records; a busy
-- one's is the row's, at most about a second early. With track_activities off the row's is
-- read. (A role that may not see the engine's connections in pg_stat_activity sees no session.)
-- From the row's time and the connection's pg_stat_activity state, which the callers join.
DROP FUNCTION IF EXISTS sessdb._session_last_time(integer, timestamptz);
CREATE OR REPLACE FUNCTION sessdb._session_last_time(mirrored timestamptz, state text, state_change timestamptz)
RETURNS timestamptz LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN state = 'idle' AND mirrored IS NOT NULL THEN greatest(mirrored, state_change) ELSE mirrored END
$$;

-- Called by each session connection after each request (and with NULL when it leaves its session).
-- Its statements run on connections in their first few uses, where PostgreSQL would plan them
-- anew at each of the first five runs (custom plans, for their parameters): a generic plan, made
-- once per connection, serves them as well (a row by conn_id). The SET clause costs about 0.1 us
-- a call; this function and _mirror_new_sessions change no setting it would undo.
CREATE OR REPLACE FUNCTION sessdb._sync_session(id text, engine text, created timestamptz, last timestamptz,
                                                timeout double precision, state text, waiting integer, addr text)
RETURNS void LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    -- the mirror is the engine's to write, whatever role the statement ran as (an authorized
    -- service's, or one it SET itself, which a session keeps after the commit: this is local)
    PERFORM set_config('role', 'none', true);
    IF id IS NULL THEN
        DELETE FROM sessdb.http_sessions WHERE conn_id = pg_backend_pid();
        RETURN;
    END IF;
    INSERT INTO sessdb.http_sessions AS s
        (conn_id, session_id, engine_id, created_at, last_time, timeout_minutes, state, waiting, client_addr)
    VALUES (pg_backend_pid(), id, engine, created, last, timeout, state, waiting, addr)
    ON CONFLICT (conn_id) DO UPDATE SET session_id = excluded.session_id, engine_id = excluded.engine_id,
        created_at = excluded.created_at, last_time = excluded.last_time,
        timeout_minutes = excluded.timeout_minutes, state = excluded.state, waiting = excluded.waiting,
        client_addr = excluded.client_addr;
END $$;

-- The rows of new sessions, written by the engine in batches after their creators' statements
-- (sessdb/mirror.py), on a connection of its own that runs nothing else, planned generically from
-- its first call like sessdb._sync_session (a row by conn_id): rows is a JSON
-- array of [conn_id, session id, created, timeout minutes, client address]. Answers the rows'
-- release time, as epoch seconds.
CREATE OR REPLACE FUNCTION sessdb._mirror_new_sessions(engine text, rows text)
RETURNS text LANGUAGE sql SET plan_cache_mode = force_generic_plan AS $$
    WITH at AS (SELECT clock_timestamp() AS t),
    written AS (
        INSERT INTO sessdb.http_sessions AS s
            (conn_id, session_id, engine_id, created_at, last_time, timeout_minutes, state, waiting, client_addr)
        SELECT (r->>0)::integer, r->>1, engine, (r->>2)::timestamptz, at.t, (r->>3)::float8, 'idle', 0, r->>4
        FROM at, jsonb_array_elements(rows::jsonb) AS r
        ON CONFLICT (conn_id) DO UPDATE SET session_id = excluded.session_id, engine_id = excluded.engine_id,
            created_at = excluded.created_at, last_time = excluded.last_time,
            timeout_minutes = excluded.timeout_minutes, state = excluded.state, waiting = excluded.waiting,
            client_addr = excluded.client_addr
    )
    SELECT extract(epoch FROM t)::text FROM at
$$;

-- Admin drop (contract 5.6) from any SQL connection: a session connection is handed to its engine
-- (which cancels or marks it); any other connection of the database is terminated.
CREATE OR REPLACE FUNCTION sessdb.drop_connection(conn_id integer)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF conn_id IS NULL OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                                      WHERE a.pid = conn_id AND a.datname = current_database()) THEN
        PERFORM sessdb._raise('SD200', format('connection %s does not exist', conn_id));
    END IF;
    IF conn_id = pg_backend_pid() THEN
        PERFORM sessdb._raise('SD200', 'a connection cannot drop itself');
    END IF;
    -- an engine connection (a session's, or a creator's whose row is not committed yet) goes to
    -- the engines, which cancel or mark its session; an engine ignores a pid it has no session on
    IF EXISTS (SELECT 1 FROM sessdb.http_sessions s WHERE s.conn_id = drop_connection.conn_id)
       OR EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = conn_id AND a.application_name = 'sessdb') THEN
        PERFORM pg_notify('sessdb_admin', jsonb_build_object('op', 'drop', 'conn_id', conn_id)::text);
    ELSE
        PERFORM pg_terminate_backend(conn_id);
    END IF;
END $$;

-- Connection-scoped variables (SQL Anywhere's CREATE VARIABLE), kept in custom settings, so that
-- resetting a pooled connection (DISCARD ALL) forgets them.

CREATE OR REPLACE FUNCTION sessdb._var_setting(name text)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF name IS NULL OR name !~ '^[A-Za-z_][A-Za-z0-9_]*$' OR length(name) > 50 THEN
        PERFORM sessdb._raise('SD300', format('invalid variable name %L', name));
    END IF;
    RETURN 'sessdb_var.' || lower(name);
END $$;

CREATE OR REPLACE FUNCTION sessdb.varexists(name text)
RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN coalesce(current_setting(sessdb._var_setting(name), true), '') <> '' THEN 1 ELSE 0 END
$$;

CREATE OR REPLACE FUNCTION sessdb.create_variable(name text, type text DEFAULT 'text')
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF sessdb.varexists(name) = 1 THEN
        PERFORM sessdb._raise('SD301', format('variable %L already exists', name));
    END IF;
    PERFORM format_type(to_regtype(type), NULL) WHERE to_regtype(type) IS NOT NULL;
    IF to_regtype(type) IS NULL THEN
        PERFORM sessdb._raise('SD300', format('unknown type %L for variable %L', type, name));
    END IF;
    PERFORM set_config(sessdb._var_setting(name), 'n', false);  -- 'n': NULL value; 'v...': a value
END $$;

CREATE OR REPLACE FUNCTION sessdb.set_variable(name text, value text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF sessdb.varexists(name) = 0 THEN
        PERFORM sessdb._raise('SD302', format('variable %L does not exist', name));
    END IF;
    PERFORM set_config(sessdb._var_setting(name), CASE WHEN value IS NULL THEN 'n' ELSE 'v' || value END, false);
END $$;

CREATE OR REPLACE FUNCTION sessdb.get_variable(name text)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN s LIKE 'v%' THEN substr(s, 2) END
    FROM (SELECT current_setting(sessdb._var_setting(name), true) AS s) q
$$;

CREATE OR REPLACE FUNCTION sessdb.drop_variable(name text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF sessdb.varexists(name) = 0 THEN
        PERFORM sessdb._raise('SD302', format('variable %L does not exist', name));
    END IF;
    PERFORM set_config(sessdb._var_setting(name), '', false);
END $$;

-- Run by the engine inside each request's transaction, after the statement: brings this
-- connection's row of sessdb.http_sessions up to date (SessionLastTime is the release time) and,
-- for a committed rename, gives up the old id.
CREATE OR REPLACE FUNCTION sessdb._sync_from_request(engine text, addr text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    current_id text := sessdb._setting('sessdb.session_id');
    pending text := sessdb._setting('sessdb.pending_id');
    effective text := current_id;
BEGIN
    IF pending = chr(127) THEN
        effective := NULL;
        PERFORM pg_advisory_unlock_all();  -- the session ends with this request: free its id and slot now
    ELSIF pending IS NOT NULL THEN
        effective := pending;
        PERFORM sessdb._release_id(current_id);
    END IF;
    IF effective IS NULL AND sessdb._setting('sessdb.session_creator') = '1' THEN
        RETURN;  -- a sessionless request that made no session: nothing to mirror
    END IF;
    PERFORM sessdb._sync_session(
        effective, engine,
        coalesce(sessdb._setting('sessdb.session_created')::timestamptz, clock_timestamp()),
        clock_timestamp(),
        coalesce(sessdb._setting('sessdb.session_timeout'), sessdb._setting('sessdb.default_timeout'), '30')::float8,
        'idle', 0, addr);
END $$;

-- The same, as the last step of a session request calls it: answers when (PostgreSQL's epoch
-- seconds) the row got its release time. That step starts with the request's role in force, so it
-- names only this schema of its own, on which every role has USAGE (migration 0005), and
-- PostgreSQL's own functions; it resets the role before it calls this, so the body runs as the
-- engine's login. Anyone may call it, but it can do no more than they could: without USAGE on
-- sessdb it fails at once. A plain call costs PostgreSQL about 10 us less a request than a
-- subquery in that step, even when the CASE around it does not call it.
CREATE OR REPLACE FUNCTION sessdb_request.sync_from_request(engine text, addr text)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM sessdb._sync_from_request(engine, addr);
    RETURN extract(epoch FROM clock_timestamp())::text;
END $$;
GRANT EXECUTE ON FUNCTION sessdb_request.sync_from_request(text, text) TO PUBLIC;

-- A sessionless request ends with sessdb._end_pooled, the last value of its last statement, in
-- the request's own transaction and round trip: it forgets everything the request left on the
-- connection that DISCARD ALL would forget and a user can see, but the engine's own prepared
-- statements, so that the connection can serve the next request at once. True when it reset the
-- connection. It refuses (false, and the pool resets the connection in full, or it stays with the
-- session it now holds) when the connection holds a session, a session authorization is left,
-- or something was PREPAREd in SQL; when the request fails before it, or its commit fails, the
-- engine resets the connection in full too, since nothing of this ran.
-- The request's deferred constraints were checked by a step of its own, right after its
-- statement, so that whatever their triggers did is checked and reset here too; anything they
-- deferred again is checked first. The request's engine-role step has made the current role the
-- login's again, for this transaction only: RESET ROLE takes back a role the statement SET,
-- since the commit keeps the last non-local value.
-- SQL functions: PostgreSQL keeps their plans, where PL/pgSQL would EXECUTE each command; the
-- commands are in a function of their own, so that a refusal skips them without an error
-- (which PostgreSQL would log for every session created). Relations are named with their
-- schema: a temp view must not stand in for pg_catalog's.
CREATE OR REPLACE FUNCTION sessdb._reset_connection()
RETURNS boolean LANGUAGE sql AS $$
    CLOSE ALL;
    RESET ROLE;  -- RESET ALL leaves the role alone
    RESET ALL;
    UNLISTEN *;
    SELECT pg_advisory_unlock_all();
    DISCARD TEMP;
    DISCARD SEQUENCES;
    SELECT true;
$$;

CREATE OR REPLACE FUNCTION sessdb._end_pooled(login text)
RETURNS boolean LANGUAGE sql AS $$
    SET CONSTRAINTS ALL IMMEDIATE;
    SELECT CASE WHEN coalesce(current_setting('sessdb.holds_session', true), '') <> '1'
                 AND session_user = login AND current_user = login
                 AND NOT EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE from_sql)
           THEN sessdb._reset_connection()
           ELSE false END;
$$;

-- Functions of earlier versions' resets. An engine of such a version running on this SQL (a
-- rolling restart) finds them gone: its reset fails, and it resets the connection in full.
DROP FUNCTION IF EXISTS sessdb._end_request();
DROP FUNCTION IF EXISTS sessdb._reset_in_request();
DROP FUNCTION IF EXISTS sessdb._reset_request(text);
DROP FUNCTION IF EXISTS sessdb._reset_pooled(text);
DROP FUNCTION IF EXISTS sessdb._reset_refused();

-- Run on a connection opened ahead for new sessions (SESSION_RESERVE), before its first use:
-- PostgreSQL compiles the PL/pgSQL functions and loads the catalog entries that creating a
-- session needs, a millisecond or more of CPU that the first creation would pay otherwise. It
-- creates a session (with an id and a slot of its own, in a lock class no engine uses) and
-- takes it all back: the subtransaction rolls back and the advisory locks, which a rollback
-- keeps, are released. Nothing is left behind, and no other connection sees anything. It
-- waits at most a second for a lock (a migration's, say): a spare is not held up for it.
CREATE OR REPLACE FUNCTION sessdb._warm_up()
RETURNS boolean LANGUAGE plpgsql SET lock_timeout = '1s' AS $$
BEGIN
    IF sessdb._setting('sessdb.request') IS NOT NULL OR sessdb._setting('sessdb.holds_session') IS NOT NULL THEN
        RETURN false;  -- only for a connection that serves nothing yet, never from a request
    END IF;
    BEGIN
        PERFORM set_config('sessdb.request', '{}', true);
        PERFORM set_config('sessdb.session_creator', '1', true);
        PERFORM set_config('sessdb.slots', '-1:1000000', true);
        PERFORM sessdb.sa_set_http_option('SessionID', 'sessdb-warm-up-' || pg_backend_pid());
        PERFORM sessdb_request.sync_from_request('', '');
        PERFORM sessdb._raise('SD000', 'warmed up');
    EXCEPTION WHEN others OR query_canceled THEN
        NULL;
    END;
    PERFORM pg_advisory_unlock_all();
    RETURN true;
END $$;

-- Database options (SQL Anywhere's SET OPTION PUBLIC.name = value). http_session_timeout is the
-- default timeout, in minutes, of sessions created from now on; sessions that exist keep theirs
-- (scenario 22). NULL removes the option, so SESSION_TIMEOUT applies again.
CREATE OR REPLACE FUNCTION sessdb.set_option(name text, value text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    minutes double precision;
BEGIN
    IF lower(coalesce(name, '')) <> 'http_session_timeout' THEN
        PERFORM sessdb._raise('SD201', format('unknown option %L', name), 'sessdb knows http_session_timeout');
    END IF;
    IF value IS NULL THEN
        DELETE FROM sessdb.options o WHERE o.name = 'http_session_timeout';
    ELSE
        BEGIN
            minutes := value::double precision;
        EXCEPTION WHEN others THEN
            minutes := NULL;
        END;
        IF minutes IS NULL OR minutes <= 0 OR minutes > 525600 OR minutes = 'NaN'::double precision THEN
            PERFORM sessdb._raise('SD201', format('invalid setting %L for option http_session_timeout', value),
                                  'give minutes, more than 0 and at most 525600');
        END IF;
        INSERT INTO sessdb.options AS o VALUES ('http_session_timeout', minutes::text, now())
        ON CONFLICT ON CONSTRAINT options_pkey DO UPDATE SET value = excluded.value, updated_at = now();
    END IF;
    PERFORM pg_notify('sessdb_admin', jsonb_build_object('op', 'option', 'name', 'http_session_timeout')::text);
END $$;
