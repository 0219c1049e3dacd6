-- HTTP sessions from SQL (contract sections 4 and 5). Filled in by the sessions work; these first
-- definitions refuse clearly instead of failing with "function does not exist".

CREATE OR REPLACE FUNCTION sessdb._set_session_id(value text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM sessdb._raise('SD939', 'HTTP sessions are not available in this version of sessdb');
END $$;

CREATE OR REPLACE FUNCTION sessdb._set_session_timeout(value text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM sessdb._raise('SD939', 'HTTP sessions are not available in this version of sessdb');
END $$;
