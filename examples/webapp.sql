-- A small notes application on sessdb: one service of each output type, plus one behind HTTP Basic.
--
-- Load it (again and again: every statement is idempotent) with
--     .venv/bin/sessdb sql -f examples/webapp.sql
-- and call it with curl as docs/webservices.md shows. Services live under the webapp/ prefix:
--
--   GET  /webapp/hello?name=Ada         RAW   a line of text
--   GET  /webapp/notes                  JSON  every note, newest last
--   POST /webapp/notes/add  title=..    JSON  adds a note, answers 201 with its id
--   GET  /webapp/note/1                 XML   one note (URL ELEMENTS: url1 is the id)
--   GET  /webapp/page                   HTML  every note as an HTML table
--   GET  /webapp/files/a/b.txt          RAW   echoes the rest of the path (URL ON: :url)
--   GET  /webapp/me                     JSON  needs the user name and password of a PostgreSQL role

-- The role the public services run as (SQL Anywhere's USER clause): it may read and add notes.
DO $$
BEGIN
    CREATE ROLE webapp_user NOLOGIN;
EXCEPTION WHEN duplicate_object THEN
    NULL;
END $$;
GRANT USAGE ON SCHEMA sessdb TO webapp_user;

CREATE TABLE IF NOT EXISTS public.webapp_notes (
    id      serial PRIMARY KEY,
    title   text NOT NULL CHECK (title <> ''),
    body    text,
    created timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT ON public.webapp_notes TO webapp_user;
GRANT USAGE ON SEQUENCE public.webapp_notes_id_seq TO webapp_user;

INSERT INTO public.webapp_notes (title, body)
SELECT 'Welcome', 'Notes are rows of public.webapp_notes; <b>markup</b> in data is escaped.'
WHERE NOT EXISTS (SELECT 1 FROM public.webapp_notes);

-- RAW: the first column of every row, as text. :name is the HTTP variable "name" (NULL when absent).
CREATE OR REPLACE SERVICE "webapp/hello" TYPE 'RAW' AUTHORIZATION OFF USER webapp_user
    AS SELECT 'Hello, ' || coalesce(:name, 'world') || '!';

-- JSON: an array with one object per row; numbers, booleans and NULL keep their JSON types.
CREATE OR REPLACE SERVICE "webapp/notes" TYPE 'JSON' AUTHORIZATION OFF USER webapp_user
    AS SELECT id, title, body, created FROM public.webapp_notes ORDER BY id;

-- JSON, POST only: the insert commits when the statement succeeds (a bad title rolls it back and answers 500).
CREATE OR REPLACE SERVICE "webapp/notes/add" TYPE 'JSON' METHODS 'POST' AUTHORIZATION OFF USER webapp_user
    AS WITH added AS (
           INSERT INTO public.webapp_notes (title, body) VALUES (:title, :body) RETURNING id, title
       )
       SELECT added.id, added.title
       FROM added, LATERAL (SELECT sa_set_http_header('@HttpStatus', '201')) AS status;

-- XML: <root><row id="1" title="..."/></root>. URL ELEMENTS puts /webapp/note/<id> in url1.
CREATE OR REPLACE SERVICE "webapp/note" TYPE 'XML' URL ELEMENTS AUTHORIZATION OFF USER webapp_user
    AS SELECT id, title, body FROM public.webapp_notes WHERE id::text = :url1;

-- HTML: a complete document with one table.
CREATE OR REPLACE SERVICE "webapp/page" TYPE 'HTML' AUTHORIZATION OFF USER webapp_user
    AS SELECT title AS "Title", body AS "Note", to_char(created, 'YYYY-MM-DD HH24:MI') AS "Written"
       FROM public.webapp_notes ORDER BY id;

-- RAW with URL ON: everything after /webapp/files/ is the variable url; the app picks the Content-Type.
CREATE OR REPLACE SERVICE "webapp/files" TYPE 'RAW' URL ON AUTHORIZATION OFF USER webapp_user
    AS SELECT 'you asked for ' || coalesce(:url, '(nothing)') || ' with ' || http_header('@HttpMethod')
       FROM (SELECT sa_set_http_header('Content-Type', 'text/plain; charset=utf-8'),
                    sa_set_http_header('Cache-Control', 'no-store')) AS headers;

-- AUTHORIZATION ON: HTTP Basic credentials of a PostgreSQL role; the statement runs as that role.
CREATE OR REPLACE SERVICE "webapp/me" TYPE 'JSON' AUTHORIZATION ON
    AS SELECT current_user AS you, http_header('User-Agent') AS agent;
