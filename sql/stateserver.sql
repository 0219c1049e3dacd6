-- The ASP.NET state-server store (aspnet-state.md 1.6 and 8): one function per protocol operation.
--
-- Each function is one call, hence one transaction: it locks the item row (FOR UPDATE), decides
-- and writes, so concurrent callers on one key take turns for the length of one statement and
-- nobody ever waits for a session lock held by a client. An item whose expires_at has passed
-- is treated as absent by every function, before the sweeper deletes it.
--
-- Every item function returns one row of the same shape:
--   status          200, 404 or 423
--   data            the stored bytes (200 on a read only)
--   timeout_minutes the item's timeout (column timeout_min)
--   lock_cookie     the current cookie (the holder's on 423, the new one after an acquire)
--   lock_date       when the current lock was taken (UTC instant)
--   db_now          the database clock, so that the caller can work out LockAge
--   action_flags    1 when this read cleared the "uninitialized" flag (bit 0), else 0
--
-- A release that a waiting provider asked to hear about (watched) sends
-- pg_notify('sessdb_state', md5(key)) and clears the flag.

-- Earlier signatures, so that calls never match two overloads.
DROP FUNCTION IF EXISTS sessdb.state_put(text, bytea, int, int, int);
DROP FUNCTION IF EXISTS sessdb.state_remove(text, int);

-- When an item with this timeout expires if untouched from now: never for a timeout of 0 (a zero
-- sliding expiration means none, as in ASP.NET's state server).
CREATE OR REPLACE FUNCTION sessdb.state_expiry(p_timeout int) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_timeout = 0 THEN 'infinity'::timestamptz ELSE now() + make_interval(mins => p_timeout) END
$$;

CREATE OR REPLACE FUNCTION sessdb.state_notify_release(p_key text) RETURNS void
LANGUAGE sql AS $$ SELECT pg_notify('sessdb_state', md5(p_key)) $$;


-- How stale an item's expiry may get before a read slides it again: a tenth of its timeout,
-- between 1 and 60 seconds.
CREATE OR REPLACE FUNCTION sessdb.state_slide_slack(p_timeout int) RETURNS interval
LANGUAGE sql IMMUTABLE AS $$ SELECT make_interval(secs => least(60, greatest(1, p_timeout * 6))) $$;


-- GET (shared) and GET + Exclusive: acquire. p_watch marks a locked item as waited for.
--
-- Polls of a locked item (the ASP.NET module retries every 500 ms per waiting request) must
-- never queue behind each other or behind a slow commit, so they are answered from a plain
-- snapshot: a 423 costs no row lock and no write while the item's expiry is fresh (slid within
-- state_slide_slack), and when it is not, only the poller that gets the row lock at once
-- (SKIP LOCKED) slides it; the others answer from the snapshot. A shared read of an unlocked,
-- fresh item with no flag to clear is answered the same way.
CREATE OR REPLACE FUNCTION sessdb.state_get(p_key text, p_exclusive boolean, p_watch boolean DEFAULT false)
RETURNS TABLE(status int, data bytea, timeout_minutes int, lock_cookie int, lock_date timestamptz,
              db_now timestamptz, action_flags int)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    snap record;
    cur record;
    v_take boolean;
BEGIN
    SELECT i.locked, i.flags, i.lock_cookie, i.lock_date, i.watched, i.timeout_min,
           i.expires_at >= sessdb.state_expiry(i.timeout_min)
                           - sessdb.state_slide_slack(i.timeout_min) AS fresh
      INTO snap
      FROM sessdb.state_items i WHERE i.key_md5 = md5(p_key) AND i.item_key = p_key AND i.expires_at > now();
    IF NOT FOUND THEN
        RETURN QUERY SELECT 404, NULL::bytea, NULL::int, NULL::int, NULL::timestamptz, now(), 0;
        RETURN;
    END IF;
    IF snap.locked AND (snap.watched OR NOT p_watch) THEN
        IF NOT snap.fresh THEN
            PERFORM 1 FROM sessdb.state_items i WHERE i.key_md5 = md5(p_key) AND i.item_key = p_key FOR UPDATE SKIP LOCKED;
        END IF;
        IF snap.fresh OR NOT FOUND THEN
            RETURN QUERY SELECT 423, NULL::bytea, snap.timeout_min, snap.lock_cookie, snap.lock_date, now(), 0;
            RETURN;
        END IF;
    ELSIF NOT snap.locked AND NOT p_exclusive AND snap.fresh AND (snap.flags & 1) = 0 THEN
        RETURN QUERY SELECT 200, i.data, i.timeout_min, i.lock_cookie, i.lock_date, now(), 0
          FROM sessdb.state_items i WHERE i.key_md5 = md5(p_key) AND i.item_key = p_key;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    SELECT i.locked, i.flags, i.lock_cookie INTO cur
      FROM sessdb.state_items i WHERE i.key_md5 = md5(p_key) AND i.item_key = p_key AND i.expires_at > now() FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 404, NULL::bytea, NULL::int, NULL::int, NULL::timestamptz, now(), 0;
        RETURN;
    END IF;
    v_take := p_exclusive AND NOT cur.locked;
    RETURN QUERY
    UPDATE sessdb.state_items s SET
        expires_at  = sessdb.state_expiry(s.timeout_min),
        locked      = s.locked OR v_take,
        lock_cookie = CASE WHEN NOT v_take THEN s.lock_cookie
                           WHEN s.lock_cookie >= 2147483647 THEN 1 ELSE s.lock_cookie + 1 END,
        lock_date   = CASE WHEN v_take THEN now() ELSE s.lock_date END,
        flags       = CASE WHEN cur.locked THEN s.flags ELSE s.flags & ~1 END,
        watched     = s.watched OR (cur.locked AND p_watch)
    WHERE s.key_md5 = md5(p_key) AND s.item_key = p_key
    RETURNING CASE WHEN cur.locked THEN 423 ELSE 200 END,
              CASE WHEN cur.locked THEN NULL ELSE s.data END,
              s.timeout_min, s.lock_cookie, s.lock_date, now(),
              CASE WHEN cur.locked THEN 0 ELSE cur.flags & 1 END;
END $$;


-- GET + Exclusive: release. Unlocks when the cookie matches; 200 as well when not locked.
CREATE OR REPLACE FUNCTION sessdb.state_release(p_key text, p_cookie int)
RETURNS TABLE(status int, data bytea, timeout_minutes int, lock_cookie int, lock_date timestamptz,
              db_now timestamptz, action_flags int)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    cur record;
    v_free boolean;
BEGIN
    SELECT i.locked, i.lock_cookie, i.watched INTO cur
      FROM sessdb.state_items i WHERE i.key_md5 = md5(p_key) AND i.item_key = p_key AND i.expires_at > now() FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 404, NULL::bytea, NULL::int, NULL::int, NULL::timestamptz, now(), 0;
        RETURN;
    END IF;
    v_free := cur.locked AND cur.lock_cookie = p_cookie;
    IF v_free AND cur.watched THEN
        PERFORM sessdb.state_notify_release(p_key);
    END IF;
    RETURN QUERY
    UPDATE sessdb.state_items s SET
        expires_at = sessdb.state_expiry(s.timeout_min),
        locked     = s.locked AND NOT v_free,
        lock_date  = CASE WHEN v_free THEN NULL ELSE s.lock_date END,
        watched    = s.watched AND NOT v_free
    WHERE s.key_md5 = md5(p_key) AND s.item_key = p_key
    RETURNING CASE WHEN cur.locked AND NOT v_free THEN 423 ELSE 200 END, NULL::bytea,
              s.timeout_min, s.lock_cookie, s.lock_date, now(), 0;
END $$;


-- PUT. Creates an absent or expired item (cookie 0, flags = p_extra_flags); with bit 0 of
-- p_extra_flags (insert-only) leaves a live item alone; otherwise replaces the data and unlocks
-- when the item is unlocked or p_cookie matches the lock, else 423. With p_strict (the Python
-- provider, like ASP.NET's SQL provider) p_cookie must match even when the item is unlocked,
-- so a holder whose lock was broken cannot overwrite what the next holder wrote.
CREATE OR REPLACE FUNCTION sessdb.state_put(p_key text, p_data bytea, p_timeout int, p_cookie int,
                                            p_extra_flags int, p_strict boolean)
RETURNS TABLE(status int, data bytea, timeout_minutes int, lock_cookie int, lock_date timestamptz,
              db_now timestamptz, action_flags int)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    cur record;
BEGIN
    LOOP
        SELECT i.locked, i.lock_cookie, i.lock_date, i.watched, i.expires_at > now() AS live INTO cur
          FROM sessdb.state_items i WHERE i.key_md5 = md5(p_key) AND i.item_key = p_key FOR UPDATE;
        EXIT WHEN FOUND;
        INSERT INTO sessdb.state_items (item_key, data, created_at, expires_at, timeout_min, flags,
                                        lock_cookie, locked, lock_date, watched)
        VALUES (p_key, p_data, now(), sessdb.state_expiry(p_timeout), p_timeout, p_extra_flags,
                0, false, NULL, false)
        ON CONFLICT (key_md5) DO NOTHING;
        IF FOUND THEN
            RETURN QUERY SELECT 200, NULL::bytea, p_timeout, 0, NULL::timestamptz, now(), 0;
            RETURN;
        END IF;
        -- Someone inserted the key since our SELECT: lock their row and decide again.
    END LOOP;
    IF NOT cur.live THEN
        UPDATE sessdb.state_items s SET data = p_data, created_at = now(),
               expires_at = sessdb.state_expiry(p_timeout), timeout_min = p_timeout,
               flags = p_extra_flags, lock_cookie = 0, locked = false, lock_date = NULL, watched = false
         WHERE s.key_md5 = md5(p_key) AND s.item_key = p_key;
        RETURN QUERY SELECT 200, NULL::bytea, p_timeout, 0, NULL::timestamptz, now(), 0;
        RETURN;
    END IF;
    IF (p_extra_flags & 1) = 1 THEN
        RETURN QUERY SELECT 200, NULL::bytea, p_timeout, cur.lock_cookie, cur.lock_date, now(), 0;
        RETURN;
    END IF;
    IF (cur.locked OR p_strict) AND cur.lock_cookie IS DISTINCT FROM p_cookie THEN
        RETURN QUERY
        UPDATE sessdb.state_items s SET expires_at = sessdb.state_expiry(s.timeout_min)
         WHERE s.key_md5 = md5(p_key) AND s.item_key = p_key
        RETURNING 423, NULL::bytea, s.timeout_min, s.lock_cookie, s.lock_date, now(), 0;
        RETURN;
    END IF;
    IF cur.locked AND cur.watched THEN
        PERFORM sessdb.state_notify_release(p_key);
    END IF;
    RETURN QUERY
    UPDATE sessdb.state_items s SET data = p_data, timeout_min = p_timeout,
           expires_at = sessdb.state_expiry(p_timeout), locked = false, lock_date = NULL,
           watched = false
     WHERE s.key_md5 = md5(p_key) AND s.item_key = p_key
    RETURNING 200, NULL::bytea, s.timeout_min, s.lock_cookie, NULL::timestamptz, now(), 0;
END $$;


-- DELETE. Removes the item when it is unlocked or p_cookie matches the lock, else 423
-- (with p_strict, p_cookie must match also when the item is unlocked).
CREATE OR REPLACE FUNCTION sessdb.state_remove(p_key text, p_cookie int, p_strict boolean)
RETURNS TABLE(status int, data bytea, timeout_minutes int, lock_cookie int, lock_date timestamptz,
              db_now timestamptz, action_flags int)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    cur record;
BEGIN
    SELECT i.locked, i.lock_cookie, i.watched INTO cur
      FROM sessdb.state_items i WHERE i.key_md5 = md5(p_key) AND i.item_key = p_key AND i.expires_at > now() FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 404, NULL::bytea, NULL::int, NULL::int, NULL::timestamptz, now(), 0;
        RETURN;
    END IF;
    IF (cur.locked OR p_strict) AND cur.lock_cookie IS DISTINCT FROM p_cookie THEN
        RETURN QUERY
        UPDATE sessdb.state_items s SET expires_at = sessdb.state_expiry(s.timeout_min)
         WHERE s.key_md5 = md5(p_key) AND s.item_key = p_key
        RETURNING 423, NULL::bytea, s.timeout_min, s.lock_cookie, s.lock_date, now(), 0;
        RETURN;
    END IF;
    IF cur.locked AND cur.watched THEN
        PERFORM sessdb.state_notify_release(p_key);
    END IF;
    RETURN QUERY
    DELETE FROM sessdb.state_items s WHERE s.key_md5 = md5(p_key) AND s.item_key = p_key
    RETURNING 200, NULL::bytea, s.timeout_min, s.lock_cookie, NULL::timestamptz, now(), 0;
END $$;


-- HEAD. Slides the expiry of a live item; no lock check.
CREATE OR REPLACE FUNCTION sessdb.state_touch(p_key text)
RETURNS TABLE(status int, data bytea, timeout_minutes int, lock_cookie int, lock_date timestamptz,
              db_now timestamptz, action_flags int)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    UPDATE sessdb.state_items s SET expires_at = sessdb.state_expiry(s.timeout_min)
     WHERE s.key_md5 = md5(p_key) AND s.item_key = p_key AND s.expires_at > now()
    RETURNING 200, NULL::bytea, s.timeout_min, s.lock_cookie, s.lock_date, now(), 0;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 404, NULL::bytea, NULL::int, NULL::int, NULL::timestamptz, now(), 0;
    END IF;
END $$;


-- One batch of the sweeper: deletes up to p_batch expired items, skipping rows that a live
-- statement holds, and returns how many went. Callers loop until it returns less than p_batch.
CREATE OR REPLACE FUNCTION sessdb.state_sweep(p_batch int DEFAULT 1000) RETURNS int
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM sessdb.state_items s
         WHERE s.ctid = ANY (ARRAY(SELECT i.ctid FROM sessdb.state_items i
                                    WHERE i.expires_at <= now()
                                    ORDER BY i.expires_at LIMIT p_batch
                                    FOR UPDATE SKIP LOCKED))
           AND s.expires_at <= now()
        RETURNING 1)
    SELECT count(*)::int FROM gone
$$;
