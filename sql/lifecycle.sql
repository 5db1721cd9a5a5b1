--
-- lifecycle: a link from birth to DROP EXTENSION.  Linking a pair twice,
-- a link that fails half-way, triggers disabled or dropped by hand, the
-- tables' columns renamed, dropped or retyped under a link (writes fail
-- loudly, nothing is written half or as NULL, status() says why, and
-- unlink + link is the way back), DROP EXTENSION with and without CASCADE,
-- and CREATE EXTENSION again with hostile objects planted around it.
--
CREATE SCHEMA lc_a;	-- legacy
CREATE SCHEMA lc_b;	-- current
CREATE TABLE lc_a.users (id serial PRIMARY KEY, login text NOT NULL, note text, quota integer);
CREATE TABLE lc_b.users (id integer PRIMARY KEY, login text NOT NULL, remark text, quota integer,
						 plan text);
SELECT mailsync.link('lc', 'lc_a.users', 'lc_b.users', $${
	"id": "id", "login": "login", "quota": "quota",
	"remark": {"up": "upper(legacy.note)", "down": "lower(current.remark)", "to": "note"},
	"plan": {"up": "CASE WHEN legacy.quota > 100 THEN 'big' ELSE 'small' END"}}$$);
INSERT INTO lc_a.users (login, note, quota) VALUES ('alice', 'a', 10), ('bob', 'b', 200);

-- lc_try(sql, link): like try(), and says whether the error's context
-- names the link
CREATE FUNCTION pg_temp.lc_try(sql text, link text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	st text;
	msg text;
	hint text;
	ctx text;
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT,
							ctx = PG_EXCEPTION_CONTEXT;
	RETURN st || ': ' || msg || CASE WHEN hint <> '' THEN ' (hint: ' || hint || ')' ELSE '' END ||
		CASE WHEN strpos(ctx, 'mailsync link "' || link || '"') > 0
			 THEN ' [context: mailsync link "' || link || '"]'
			 ELSE ' [the context does not name link "' || link || '"]' END;
END
$$;
-- a fingerprint of a table's rows
CREATE FUNCTION pg_temp.lc_rows(tbl regclass) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	r text;
BEGIN
	EXECUTE format('SELECT md5(coalesce(string_agg(t::text, %L ORDER BY t::text), %L)) FROM %s t', ',', '', tbl)
	INTO r;
	RETURN r;
END
$$;
CREATE TEMP VIEW lc_triggers AS
SELECT tgrelid::regclass AS tbl, count(*) AS triggers,
	   string_agg(tgname || ' ' || tgenabled::text, ', ' ORDER BY tgname) AS names
FROM pg_trigger
WHERE tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace IN ('lc_a'::regnamespace, 'lc_b'::regnamespace))
  AND NOT tgisinternal
GROUP BY tgrelid ORDER BY tgrelid::regclass::text;

--
-- linking the same pair again is refused, and adds no trigger
--
SELECT tbl, triggers FROM lc_triggers;
\pset format unaligned
\pset tuples_only on
SELECT format(E'%s\n    %s', what, try(sql)) FROM (VALUES
('the same call again',
 $$SELECT mailsync.link('lc', 'lc_a.users', 'lc_b.users', '{"id": "id", "login": "login"}')$$),
('the same pair under a new name, one way',
 $$SELECT mailsync.link('lc_up', 'lc_a.users', 'lc_b.users', '{"id": "id", "login": "login"}', direction => 'up')$$),
('the same pair under a new name, the other way round, one way',
 $$SELECT mailsync.link('lc_down', 'lc_b.users', 'lc_a.users', '{"id": "id", "login": "login"}', direction => 'down')$$)) AS c(what, sql);
\pset format aligned
\pset tuples_only off
-- twice in one transaction: the second is refused, the first stands
CREATE TABLE lc_a.pair (id integer PRIMARY KEY, v text);
CREATE TABLE lc_b.pair (id integer PRIMARY KEY, v text);
BEGIN;
SELECT mailsync.link('lc_pair', 'lc_a.pair', 'lc_b.pair', '{"id": "id", "v": "v"}');
SAVEPOINT again;
SELECT try($$SELECT mailsync.link('lc_pair2', 'lc_a.pair', 'lc_b.pair', '{"id": "id", "v": "v"}')$$);
ROLLBACK TO again;
COMMIT;
SELECT tbl, triggers FROM lc_triggers;
SELECT name, legacy, current FROM mailsync.links WHERE name LIKE 'lc%' ORDER BY name;
INSERT INTO lc_a.pair VALUES (1, 'once');
SELECT * FROM lc_b.pair;
-- unlink twice: the second is refused; link again after unlink works
SELECT mailsync.unlink('lc_pair');
SELECT try($$SELECT mailsync.unlink('lc_pair')$$);
SELECT mailsync.link('lc_pair', 'lc_a.pair', 'lc_b.pair', '{"id": "id", "v": "v"}');
UPDATE lc_b.pair SET v = 'twice';
SELECT * FROM lc_a.pair;
SELECT mailsync.unlink('lc_pair');

--
-- a link that fails half-way leaves no trigger, no catalog row, no
-- changed default and no copied row: here its backfill fails, once while
-- copying up (a CHECK of current) and once while copying down (a UNIQUE
-- of legacy), after the key sequence was shared
--
CREATE TABLE lc_a.fail (id serial PRIMARY KEY, code text NOT NULL UNIQUE, n integer);
CREATE TABLE lc_b.fail (id integer PRIMARY KEY, code text NOT NULL, n integer CHECK (n > 0));
INSERT INTO lc_a.fail (code, n) VALUES ('a', 1), ('b', 2), ('c', -3);
INSERT INTO lc_b.fail VALUES (40, 'x', 4);
CREATE TEMP TABLE lc_before AS
SELECT pg_temp.lc_rows('lc_a.fail') AS a_rows, pg_temp.lc_rows('lc_b.fail') AS b_rows,
	   (SELECT count(*) FROM pg_attrdef WHERE adrelid IN ('lc_a.fail'::regclass, 'lc_b.fail'::regclass)) AS defaults;
SET client_min_messages = warning;	-- the NOTICE that the key sequence is shared
\set SHOW_CONTEXT never
SELECT mailsync.link('lc_fail', 'lc_a.fail', 'lc_b.fail', '{"id": "id", "code": "code", "n": "n"}', backfill => true);
UPDATE lc_a.fail SET n = 3 WHERE code = 'c';
INSERT INTO lc_b.fail VALUES (41, 'a', 5);	-- copied down, its code collides in legacy
SELECT mailsync.link('lc_fail', 'lc_a.fail', 'lc_b.fail', '{"id": "id", "code": "code", "n": "n"}', backfill => true);
\set SHOW_CONTEXT errors
RESET client_min_messages;
SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'mailsync\_lc\_fail\_%') AS triggers,
	   (SELECT count(*) FROM mailsync.links WHERE name = 'lc_fail') AS links,
	   (SELECT count(*) FROM pg_attrdef WHERE adrelid IN ('lc_a.fail'::regclass, 'lc_b.fail'::regclass)) = defaults AS same_defaults,
	   (SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'lc_b.fail'::regclass) AS b_id_default
FROM lc_before;
SELECT * FROM lc_b.fail ORDER BY id;
SELECT * FROM lc_a.fail ORDER BY id;

--
-- triggers disabled or dropped by hand
--
-- disabled: status() says so, writes meanwhile are not mirrored (verify
-- finds them), enabling clears the problem, repair the drift
ALTER TABLE lc_b.users DISABLE TRIGGER mailsync_lc_insert;
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name = 'lc';
INSERT INTO lc_b.users (id, login, remark, quota) VALUES (3, 'carol', 'C', 30);
SELECT count(*) AS carol_in_legacy FROM lc_a.users WHERE login = 'carol';
ALTER TABLE lc_b.users ENABLE TRIGGER mailsync_lc_insert;
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name = 'lc';
SELECT * FROM mailsync.verify('lc', 'down');
SELECT * FROM mailsync.repair('lc', 'current');
-- all of a table's triggers
ALTER TABLE lc_a.users DISABLE TRIGGER ALL;
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name = 'lc';
ALTER TABLE lc_a.users ENABLE TRIGGER ALL;
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name = 'lc';
-- dropped: status() says it is missing, its writes are not mirrored;
-- unlink and link again bring it back
DROP TRIGGER mailsync_lc_update ON lc_a.users;
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name = 'lc';
UPDATE lc_a.users SET quota = 300 WHERE login = 'alice';
SELECT login, quota, plan FROM lc_b.users WHERE login = 'alice';
SET client_min_messages = warning;	-- unlink says the missing trigger was skipped
SELECT mailsync.unlink('lc');
RESET client_min_messages;
SELECT mailsync.link('lc', 'lc_a.users', 'lc_b.users', $${
	"id": "id", "login": "login", "quota": "quota",
	"remark": {"up": "upper(legacy.note)", "down": "lower(current.remark)", "to": "note"},
	"plan": {"up": "CASE WHEN legacy.quota > 100 THEN 'big' ELSE 'small' END"}}$$);
SELECT tbl, names FROM lc_triggers WHERE tbl::text LIKE '%users';
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name = 'lc';
SELECT * FROM mailsync.verify('lc');
SELECT * FROM mailsync.repair('lc', 'legacy');
UPDATE lc_a.users SET quota = 5 WHERE login = 'alice';
SELECT login, quota, plan FROM lc_b.users WHERE login = 'alice';

--
-- schema drift: a mapped column renamed, dropped or retyped on either
-- side.  status() names the column and the table; writes on either table
-- fail with the error and a context naming the link; the other table is
-- left as it was (no half write, no NULL)
--
CREATE TEMP TABLE lc_snap (a text, b text);
CREATE FUNCTION pg_temp.lc_snap() RETURNS void LANGUAGE sql AS $$
	DELETE FROM lc_snap;
	INSERT INTO lc_snap SELECT pg_temp.lc_rows('lc_a.users'), pg_temp.lc_rows('lc_b.users');
$$;
CREATE FUNCTION pg_temp.lc_same() RETURNS TABLE (legacy_unchanged boolean, current_unchanged boolean)
LANGUAGE sql AS $$
	SELECT a = pg_temp.lc_rows('lc_a.users'), b = pg_temp.lc_rows('lc_b.users') FROM lc_snap
$$;
-- what a drift breaks: the problem status() reports, then a write of each
-- kind through each table (naming no column that drifts), then whether
-- both tables are as they were
CREATE FUNCTION pg_temp.lc_drift() RETURNS SETOF text LANGUAGE sql AS $$
	SELECT pg_temp.lc_snap();
	SELECT 'status: ' || coalesce(problem, 'no problem') FROM mailsync.status() WHERE name = 'lc'
	UNION ALL
	(SELECT format(E'%s\n    %s', what, pg_temp.lc_try(sql, 'lc')) FROM (VALUES
	(1, 'insert through legacy', $q$INSERT INTO lc_a.users (id, login) VALUES (90, 'zed')$q$),
	(2, 'update through legacy', $q$UPDATE lc_a.users SET login = 'al' WHERE login = 'alice'$q$),
	(3, 'delete through legacy', $q$DELETE FROM lc_a.users WHERE login = 'bob'$q$),
	(4, 'insert through current', $q$INSERT INTO lc_b.users (id, login) VALUES (91, 'yan')$q$),
	(5, 'update through current', $q$UPDATE lc_b.users SET login = 'al' WHERE login = 'alice'$q$),
	(6, 'delete through current', $q$DELETE FROM lc_b.users WHERE login = 'bob'$q$)) AS c(n, what, sql)
	ORDER BY n)
	UNION ALL
	SELECT format('legacy unchanged: %s, current unchanged: %s', legacy_unchanged, current_unchanged)
	FROM pg_temp.lc_same();
$$;
SELECT * FROM lc_b.users ORDER BY id;

-- a legacy column an expression reads, renamed
ALTER TABLE lc_a.users RENAME COLUMN note TO note_renamed;
\pset format unaligned
\pset tuples_only on
SELECT pg_temp.lc_drift();
\pset format aligned
\pset tuples_only off
ALTER TABLE lc_a.users RENAME COLUMN note_renamed TO note;
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name = 'lc';

-- a current column a rename maps, dropped (the column's values are gone:
-- the way back is a new link without it)
ALTER TABLE lc_b.users DROP COLUMN quota;
\pset format unaligned
\pset tuples_only on
SELECT pg_temp.lc_drift();
\pset format aligned
\pset tuples_only off
SELECT mailsync.unlink('lc');
SELECT mailsync.link('lc', 'lc_a.users', 'lc_b.users', $${
	"id": "id", "login": "login",
	"remark": {"up": "upper(legacy.note)", "down": "lower(current.remark)", "to": "note"},
	"plan": {"up": "CASE WHEN legacy.quota > 100 THEN 'big' ELSE 'small' END"}}$$);
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name = 'lc';
INSERT INTO lc_a.users (id, login, note, quota) VALUES (4, 'dave', 'd', 400);
UPDATE lc_b.users SET remark = 'B2' WHERE login = 'bob';
SELECT 'a' AS side, id, login, note AS remark_or_note, quota::text AS quota_or_plan FROM lc_a.users
UNION ALL SELECT 'b', id, login, remark, plan FROM lc_b.users ORDER BY 2, 1;

-- a legacy column an expression reads, dropped
ALTER TABLE lc_a.users DROP COLUMN note;
\pset format unaligned
\pset tuples_only on
SELECT pg_temp.lc_drift();
\pset format aligned
\pset tuples_only off
ALTER TABLE lc_a.users ADD COLUMN note text;
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name = 'lc';
SELECT * FROM mailsync.verify('lc');
SELECT * FROM mailsync.repair('lc', 'current');

-- a current column retyped to a type the mapping cannot assign
ALTER TABLE lc_b.users ALTER COLUMN remark TYPE jsonb USING to_jsonb(remark);
\pset format unaligned
\pset tuples_only on
SELECT pg_temp.lc_drift();
\pset format aligned
\pset tuples_only off
ALTER TABLE lc_b.users ALTER COLUMN remark TYPE text USING remark #>> '{}';
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name = 'lc';

-- retyped to a type the mapping can assign: the key of legacy, integer to
-- bigint, and a mapped column of current, text to varchar(5): writes go on;
-- a value the other side cannot hold fails the write, and nothing is
-- written
ALTER TABLE lc_a.users ALTER COLUMN id TYPE bigint;
ALTER TABLE lc_b.users ALTER COLUMN login TYPE varchar(5);
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name = 'lc';
INSERT INTO lc_a.users (login, note, quota) VALUES ('erin', 'e', 5);
UPDATE lc_a.users SET id = 50 WHERE login = 'erin';
UPDATE lc_b.users SET id = 51 WHERE login = 'erin';
INSERT INTO lc_b.users (id, login, remark) VALUES (60, 'fay', 'F');
DELETE FROM lc_a.users WHERE login = 'fay';
SELECT * FROM mailsync.verify('lc');
SELECT pg_temp.lc_snap();
\pset format unaligned
\pset tuples_only on
SELECT format(E'%s\n    %s', what, pg_temp.lc_try(sql, 'lc')) FROM (VALUES
('a legacy key beyond integer', $$INSERT INTO lc_a.users (id, login) VALUES (5000000000, 'big')$$),
('a legacy key changed beyond integer', $$UPDATE lc_a.users SET id = 5000000000 WHERE login = 'erin'$$),
('a login too long for current', $$UPDATE lc_a.users SET login = 'gregory' WHERE login = 'erin'$$)) AS c(what, sql);
\pset format aligned
\pset tuples_only off
SELECT * FROM pg_temp.lc_same();
\set VERBOSITY terse
CALL mailsync.backfill('lc', batch_size => 2);
\set VERBOSITY default
SELECT count(*) AS drift FROM mailsync.verify('lc');

--
-- DROP EXTENSION: refused while links exist, naming their triggers; with
-- CASCADE it drops every trigger mailsync made and leaves the tables,
-- their rows and the helpers in public as they were
--
SELECT mailsync.link('lc_pair', 'lc_a.pair', 'lc_b.pair', '{"id": "id", "v": "v"}', direction => 'up');
CREATE TEMP TABLE lc_kept AS
SELECT pg_temp.lc_rows('lc_a.users') AS a_users, pg_temp.lc_rows('lc_b.users') AS b_users,
	   pg_temp.lc_rows('lc_a.pair') AS a_pair, pg_temp.lc_rows('lc_b.pair') AS b_pair;
DO $$
DECLARE
	st text;
	msg text;
	detail text;
	hint text;
BEGIN
	DROP EXTENSION mailsync;
	RAISE NOTICE 'dropped';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
							hint = PG_EXCEPTION_HINT;
	RAISE NOTICE '%: % (hint: %)', st, msg, hint;
	-- the lines about this test's tables (other tests may have links too)
	RAISE NOTICE E'detail:\n%', (SELECT string_agg(l, E'\n' ORDER BY l)
								 FROM regexp_split_to_table(detail, E'\n') l
								 WHERE l ~ ' on table lc_[ab]\.');
END
$$;
SELECT extname FROM pg_extension WHERE extname = 'mailsync';
SELECT tbl, triggers FROM lc_triggers;

SET client_min_messages = warning;
DROP EXTENSION mailsync CASCADE;
RESET client_min_messages;
SELECT (SELECT count(*) FROM pg_extension WHERE extname = 'mailsync') AS extensions,
	   (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'mailsync\_%') AS mailsync_named_triggers,
	   (SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
		WHERE p.pronamespace = 'mailsync'::regnamespace) AS triggers_calling_mailsync,
	   (SELECT count(*) FROM pg_trigger t WHERE NOT EXISTS (SELECT FROM pg_proc p WHERE p.oid = t.tgfoid))
		   AS triggers_calling_nothing,
	   (SELECT count(*) FROM pg_proc WHERE pronamespace = 'mailsync'::regnamespace) AS functions_left,
	   (SELECT count(*) FROM pg_class WHERE relnamespace = 'mailsync'::regnamespace) AS relations_left;
-- the tables and their rows are as they were; writes are no longer mirrored
SELECT a_users = pg_temp.lc_rows('lc_a.users') AS same_a_users, b_users = pg_temp.lc_rows('lc_b.users') AS same_b_users,
	   a_pair = pg_temp.lc_rows('lc_a.pair') AS same_a_pair, b_pair = pg_temp.lc_rows('lc_b.pair') AS same_b_pair
FROM lc_kept;
INSERT INTO lc_a.pair VALUES (7, 'after the drop');
SELECT count(*) AS mirrored FROM lc_b.pair WHERE id = 7;
-- the key default link gave current stays (there is no catalog left to
-- restore the replaced one from)
SELECT pg_get_expr(adbin, adrelid) AS b_users_id_default
FROM pg_attrdef WHERE adrelid = 'lc_b.users'::regclass AND adnum = 1;
-- the helpers of install.sql are untouched
SELECT 'public.try(text)'::regprocedure, 'public.log_write()'::regprocedure,
	   'public.write_log'::regclass, 'public.writes'::regclass;
SELECT try('SELECT 1/0');

--
-- CREATE EXTENSION again, with a hostile search_path and, in public,
-- functions, operators and a type named like what the install script
-- uses, each writing to a canary when called
--
CREATE ROLE ms_lc_evil;
GRANT CREATE ON SCHEMA public TO ms_lc_evil;
SET ROLE ms_lc_evil;
CREATE TABLE public.lc_canary (what text, who name DEFAULT current_user);
GRANT INSERT ON public.lc_canary TO PUBLIC;
CREATE FUNCTION public.lc_note(what text) RETURNS boolean LANGUAGE sql AS
	$$ INSERT INTO public.lc_canary (what) VALUES (what); SELECT true $$;
CREATE FUNCTION public.pg_extension_config_dump(regclass, text) RETURNS void LANGUAGE sql AS
	$$ SELECT public.lc_note('pg_extension_config_dump') $$;
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS
	$$ SELECT public.lc_note('now'); SELECT 'epoch'::timestamptz $$;
CREATE FUNCTION public.hashtext(text) RETURNS integer LANGUAGE sql AS
	$$ SELECT public.lc_note('hashtext'); SELECT 0 $$;
CREATE FUNCTION public.format(text, text) RETURNS text LANGUAGE sql AS
	$$ SELECT public.lc_note('format'); SELECT $1 $$;
CREATE FUNCTION public.text_eq(text, text) RETURNS boolean LANGUAGE sql AS
	$$ SELECT public.lc_note('= (text, text)'); SELECT $1 OPERATOR(pg_catalog.=) $2 $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.text_eq);
CREATE FUNCTION public.text_re(text, text) RETURNS boolean LANGUAGE sql AS
	$$ SELECT public.lc_note('~ (text, text)'); SELECT $1 OPERATOR(pg_catalog.~) $2 $$;
CREATE OPERATOR public.~ (LEFTARG = text, RIGHTARG = text, FUNCTION = public.text_re);
CREATE DOMAIN public.text AS pg_catalog.text CHECK (public.lc_note('domain text'));
CREATE DOMAIN public.regclass AS pg_catalog.regclass CHECK (public.lc_note('domain regclass'));
RESET ROLE;
-- the traps work
SET search_path = public, pg_catalog;
SELECT now() = 'epoch' AS planted_now, 'a'::text = 'a' AS planted_eq, 'x'::text AS planted_text;
RESET search_path;
SELECT what FROM public.lc_canary ORDER BY what;
TRUNCATE public.lc_canary;
-- the schema mailsync that DROP EXTENSION left behind goes too
DROP SCHEMA mailsync;
SET search_path = public, pg_catalog;
CREATE EXTENSION mailsync;
RESET search_path;
SELECT count(*) AS canary_rows FROM public.lc_canary;
-- the catalog's columns have pg_catalog's types, not the planted domains
SELECT c.relname, a.attname, a.atttypid::regtype
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_type t ON t.oid = a.atttypid
WHERE c.relnamespace = 'mailsync'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
  AND t.typnamespace <> 'pg_catalog'::regnamespace;
-- and it works: a link, writes both ways, verify, status, all under the
-- hostile search_path
SET search_path = public, pg_catalog;
SELECT mailsync.link('lc_pair', 'lc_a.pair', 'lc_b.pair', '{"id": "id", "v": "v"}', backfill => true);
INSERT INTO lc_a.pair VALUES (8, 'eight');
UPDATE lc_b.pair SET v = 'EIGHT' WHERE id OPERATOR(pg_catalog.=) 8;
SELECT * FROM mailsync.verify('lc_pair');
SELECT name, triggers_ok, problem FROM mailsync.status();
SELECT mailsync.unlink('lc_pair');
RESET search_path;
SELECT count(*) AS canary_rows FROM public.lc_canary;
SELECT 'a' AS side, * FROM lc_a.pair UNION ALL SELECT 'b', * FROM lc_b.pair ORDER BY 2, 1;
DROP EXTENSION mailsync;
DROP SCHEMA mailsync;

--
-- a role that may create schemas makes schema mailsync before the
-- extension is installed, with an overload of mailsync.link that the
-- documented call (all arguments literals) would pick: CREATE EXTENSION
-- must not install into a schema that role owns
--
-- (pg_catalog.format: public.format(text, text) is still planted)
DO $$ BEGIN EXECUTE pg_catalog.format('GRANT CREATE ON DATABASE %I TO ms_lc_evil', current_database()); END $$;
SET ROLE ms_lc_evil;
CREATE SCHEMA mailsync;
CREATE FUNCTION mailsync.link(name text, legacy text, current text, columns text) RETURNS void
LANGUAGE sql AS $$ SELECT public.lc_note('mailsync.link(text, text, text, text) as ' || current_user) $$;
RESET ROLE;
SELECT try('CREATE EXTENSION mailsync');
DO $$
BEGIN
	IF EXISTS (SELECT FROM pg_extension WHERE extname = 'mailsync') THEN
		EXECUTE $q$SELECT mailsync.link('lc_pair', 'lc_a.pair', 'lc_b.pair', '{"id": "id", "v": "v"}')$q$;
		IF EXISTS (SELECT FROM pg_trigger WHERE tgname = 'mailsync_lc_pair_insert') THEN
			EXECUTE $q$SELECT mailsync.unlink('lc_pair')$q$;
		END IF;
	END IF;
END
$$;
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'mailsync')
	   AND (SELECT nspowner FROM pg_namespace WHERE nspname = 'mailsync') = 'ms_lc_evil'::regrole
	   AS installed_in_the_roles_schema;
SELECT what, who FROM public.lc_canary;

--
-- clean up, and leave the extension installed for the tests that follow
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS mailsync CASCADE;
DROP SCHEMA IF EXISTS mailsync CASCADE;
DO $$ BEGIN EXECUTE pg_catalog.format('REVOKE CREATE ON DATABASE %I FROM ms_lc_evil', current_database()); END $$;
REVOKE CREATE ON SCHEMA public FROM ms_lc_evil;
DROP DOMAIN public.text, public.regclass;
DROP OPERATOR public.= (text, text), public.~ (text, text);
DROP FUNCTION public.text_eq(text, text), public.text_re(text, text), public.format(text, text),
	public.hashtext(text), public.now(), public.pg_extension_config_dump(regclass, text), public.lc_note(text);
DROP TABLE public.lc_canary;
DROP ROLE ms_lc_evil;
DROP SCHEMA lc_a CASCADE;
DROP SCHEMA lc_b CASCADE;
RESET client_min_messages;
CREATE EXTENSION mailsync;
SELECT extname, extversion, to_regclass('mailsync.links') AS links, to_regproc('mailsync.status') AS status
FROM pg_extension WHERE extname = 'mailsync';
SELECT nspname, nspowner = (SELECT extowner FROM pg_extension WHERE extname = 'mailsync') AS owned_by_installer
FROM pg_namespace WHERE nspname = 'mailsync';
