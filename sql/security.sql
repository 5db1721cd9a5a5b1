--
-- security: nothing a session plants in its search_path (functions,
-- operators, an aggregate, temporary tables) is called or written by
-- mailsync, whoever runs it; a SECURITY DEFINER function, if any, pins its
-- search_path; and a role that does not own both tables cannot make
-- mailsync write or reveal what it could not write or read itself.
--
CREATE ROLE ms_sec_owner;	-- owns the linked tables
CREATE ROLE ms_sec_app;		-- the old application: writes the legacy tables only; hostile
CREATE ROLE ms_sec_reader;	-- reads some tables
CREATE ROLE ms_sec_half;	-- owns one table of a pair
CREATE ROLE ms_sec_member IN ROLE ms_sec_owner;	-- inherits the owner's rights
CREATE SCHEMA ms_sec_a AUTHORIZATION ms_sec_owner;	-- legacy
CREATE SCHEMA ms_sec_b AUTHORIZATION ms_sec_owner;	-- current
CREATE SCHEMA ms_sec_evil AUTHORIZATION ms_sec_app;
GRANT USAGE ON SCHEMA ms_sec_evil TO PUBLIC;
-- as in a database created before PostgreSQL 15, anyone may create in public
GRANT CREATE ON SCHEMA public TO ms_sec_app;

SET ROLE ms_sec_owner;
-- a function of the application, used by a one-way mapping
CREATE FUNCTION ms_sec_a.label_for(n text, t text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT n || ' (' || t || ')' $$;
CREATE TABLE ms_sec_a.users (id serial PRIMARY KEY, login varchar(40) NOT NULL,
							 kind varchar(10) NOT NULL, quota integer);
CREATE TABLE ms_sec_b.users (id integer PRIMARY KEY, login text NOT NULL, kind text NOT NULL,
							 quota bigint, label text);
-- a text key
CREATE TABLE ms_sec_a.domains (name text PRIMARY KEY, note text);
CREATE TABLE ms_sec_b.domains (name text PRIMARY KEY, remark text);
SET client_min_messages = warning;
SELECT mailsync.link('sec_users', 'ms_sec_a.users', 'ms_sec_b.users', $${
	"id": "id", "login": "login", "quota": "quota",
	"kind": {"up": "lower(legacy.kind)", "down": "upper(current.kind)", "to": "kind"},
	"label": {"up": "ms_sec_a.label_for(legacy.login, legacy.kind)"}}$$);
RESET client_min_messages;
SELECT mailsync.link('sec_domains', 'ms_sec_a.domains', 'ms_sec_b.domains',
					 '{"name": "name", "remark": "note"}');
GRANT USAGE ON SCHEMA ms_sec_a TO ms_sec_app;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ms_sec_a.users, ms_sec_a.domains TO ms_sec_app;
GRANT USAGE ON SEQUENCE ms_sec_a.users_id_seq TO ms_sec_app;
RESET ROLE;
-- what the mapping stores: every call outside pg_catalog qualified, and
-- each argument cast to the type the function takes
SELECT name, columns FROM mailsync.links WHERE name LIKE 'sec\_%' ORDER BY name;

--
-- the hostile role plants, in its own schema and in public, a function,
-- an operator or an aggregate under each name a generated statement might
-- use; each one writes a row into the canary when it is called
--
SET ROLE ms_sec_app;
CREATE TABLE ms_sec_evil.canary (what text, who name DEFAULT current_user);
GRANT INSERT ON ms_sec_evil.canary TO PUBLIC;
CREATE FUNCTION ms_sec_evil.plant(s name) RETURNS void LANGUAGE plpgsql AS $plant$
BEGIN
	EXECUTE pg_catalog.format($f$
	CREATE FUNCTION %1$I.lower(text) RETURNS text LANGUAGE sql AS
		$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('%1$s.lower(text)'); SELECT 'pwned'::text $$;
	CREATE FUNCTION %1$I.upper(text) RETURNS text LANGUAGE sql AS
		$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('%1$s.upper(text)'); SELECT 'PWNED'::text $$;
	CREATE FUNCTION %1$I.format(text, text) RETURNS text LANGUAGE sql AS
		$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('%1$s.format(text, text)'); SELECT $1 $$;
	CREATE FUNCTION %1$I.hashtext(text) RETURNS integer LANGUAGE sql AS
		$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('%1$s.hashtext(text)'); SELECT 0 $$;
	CREATE FUNCTION %1$I.now() RETURNS timestamptz LANGUAGE sql AS
		$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('%1$s.now()'); SELECT 'epoch'::timestamptz $$;
	CREATE FUNCTION %1$I.nextval(regclass) RETURNS bigint LANGUAGE sql AS
		$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('%1$s.nextval(regclass)'); SELECT 1::bigint $$;
	CREATE FUNCTION %1$I.setval(regclass, bigint, boolean) RETURNS bigint LANGUAGE sql AS
		$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('%1$s.setval(regclass, bigint, boolean)'); SELECT 1::bigint $$;
	CREATE FUNCTION %1$I.to_jsonb(text) RETURNS jsonb LANGUAGE sql AS
		$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('%1$s.to_jsonb(text)'); SELECT '"pwned"'::jsonb $$;
	CREATE FUNCTION %1$I.jsonb_build_object(text, integer) RETURNS jsonb LANGUAGE sql AS
		$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('%1$s.jsonb_build_object(text, integer)'); SELECT '{}'::jsonb $$;
	CREATE FUNCTION %1$I.count_step(bigint) RETURNS bigint LANGUAGE sql AS
		$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('%1$s.count(*)'); SELECT $1 OPERATOR(pg_catalog.+) 1 $$;
	CREATE AGGREGATE %1$I.count(*) (SFUNC = %1$I.count_step, STYPE = bigint, INITCOND = '0');
	CREATE FUNCTION %1$I.text_eq(text, text) RETURNS boolean LANGUAGE sql AS
		$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('%1$s.= (text, text)'); SELECT $1 OPERATOR(pg_catalog.=) $2 $$;
	CREATE OPERATOR %1$I.= (LEFTARG = text, RIGHTARG = text, FUNCTION = %1$I.text_eq);
	CREATE FUNCTION %1$I.text_ne(text, text) RETURNS boolean LANGUAGE sql AS
		$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('%1$s.<> (text, text)'); SELECT $1 OPERATOR(pg_catalog.<>) $2 $$;
	CREATE OPERATOR %1$I.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = %1$I.text_ne);
	CREATE FUNCTION %1$I.text_gt(text, text) RETURNS boolean LANGUAGE sql AS
		$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('%1$s.> (text, text)'); SELECT $1 OPERATOR(pg_catalog.>) $2 $$;
	CREATE OPERATOR %1$I.> (LEFTARG = text, RIGHTARG = text, FUNCTION = %1$I.text_gt);
	CREATE FUNCTION %1$I.int4_eq(integer, integer) RETURNS boolean LANGUAGE sql AS
		$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('%1$s.= (integer, integer)'); SELECT $1 OPERATOR(pg_catalog.=) $2 $$;
	CREATE OPERATOR %1$I.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = %1$I.int4_eq);
	CREATE FUNCTION %1$I.int4_gt(integer, integer) RETURNS boolean LANGUAGE sql AS
		$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('%1$s.> (integer, integer)'); SELECT $1 OPERATOR(pg_catalog.>) $2 $$;
	CREATE OPERATOR %1$I.> (LEFTARG = integer, RIGHTARG = integer, FUNCTION = %1$I.int4_gt);
	CREATE FUNCTION %1$I.int4_le(integer, integer) RETURNS boolean LANGUAGE sql AS
		$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('%1$s.<= (integer, integer)'); SELECT $1 OPERATOR(pg_catalog.<=) $2 $$;
	CREATE OPERATOR %1$I.<= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = %1$I.int4_le);
	CREATE FUNCTION %1$I.int8_eq(bigint, bigint) RETURNS boolean LANGUAGE sql AS
		$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('%1$s.= (bigint, bigint)'); SELECT $1 OPERATOR(pg_catalog.=) $2 $$;
	CREATE OPERATOR %1$I.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = %1$I.int8_eq);
	CREATE FUNCTION %1$I.int48_eq(integer, bigint) RETURNS boolean LANGUAGE sql AS
		$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('%1$s.= (integer, bigint)'); SELECT $1 OPERATOR(pg_catalog.=) $2 $$;
	CREATE OPERATOR %1$I.= (LEFTARG = integer, RIGHTARG = bigint, FUNCTION = %1$I.int48_eq);
	CREATE FUNCTION %1$I.int8_mul(bigint, integer) RETURNS bigint LANGUAGE sql AS
		$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('%1$s.* (bigint, integer)'); SELECT $1 OPERATOR(pg_catalog.*) $2 $$;
	CREATE OPERATOR %1$I.* (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = %1$I.int8_mul);
	$f$, s);
END
$plant$;
SELECT ms_sec_evil.plant('ms_sec_evil');
SELECT ms_sec_evil.plant('public');
-- an overload of the application's function that matches varchar
-- arguments exactly (the role may create in that schema)
RESET ROLE;
GRANT CREATE ON SCHEMA ms_sec_a TO ms_sec_app;
SET ROLE ms_sec_app;
CREATE FUNCTION ms_sec_a.label_for(n varchar, t varchar) RETURNS text LANGUAGE sql AS
	$$ INSERT INTO ms_sec_evil.canary (what) VALUES ('ms_sec_a.label_for(varchar, varchar)'); SELECT 'pwned'::text $$;
-- temporary tables named like the linked tables and mailsync's catalog,
-- found first for unqualified names; a write to one of them fills the canary
CREATE FUNCTION ms_sec_evil.trap() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO ms_sec_evil.canary (what) VALUES ('pg_temp.' || TG_TABLE_NAME || ' ' || TG_OP);
	RETURN NULL;
END $$;
CREATE TEMP TABLE users (id integer, login text, kind text, quota bigint, label text);
CREATE TEMP TABLE domains (name text, note text, remark text);
CREATE TEMP TABLE links (LIKE mailsync.links);
CREATE TEMP TABLE backfills (LIKE mailsync.backfills);
CREATE TEMP TABLE verifications (LIKE mailsync.verifications);
DO $$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['users', 'domains', 'links', 'backfills', 'verifications'] LOOP
		EXECUTE pg_catalog.format('CREATE TRIGGER trap AFTER INSERT OR UPDATE OR DELETE ON pg_temp.%I
						FOR EACH STATEMENT EXECUTE FUNCTION ms_sec_evil.trap()', t);
		EXECUTE pg_catalog.format('CREATE TRIGGER trap_truncate AFTER TRUNCATE ON pg_temp.%I
						FOR EACH STATEMENT EXECUTE FUNCTION ms_sec_evil.trap()', t);
	END LOOP;
END
$$;

-- the traps work: called directly under the hostile search_path, each
-- planted object writes to the canary
SET search_path = ms_sec_evil, pg_catalog, public;
SELECT lower('X') AS lower, upper('x') AS upper, 'a'::text = 'a'::text AS text_eq, 1 = 1 AS int_eq,
	   2::bigint * 3 AS mul, count(*) AS count FROM (VALUES (1)) v(x);
SELECT ms_sec_a.label_for('n'::varchar, 't'::varchar) AS label_for;
INSERT INTO users (id) VALUES (1);
TRUNCATE links;
SET search_path = public, pg_catalog;
SELECT lower('X') AS lower, now() = 'epoch' AS planted_now;
RESET search_path;
SELECT what, who FROM ms_sec_evil.canary ORDER BY what;
TRUNCATE ms_sec_evil.canary;
TRUNCATE pg_temp.users;
RESET ROLE;
TRUNCATE ms_sec_evil.canary;

--
-- the hostile role writes the legacy tables under its hostile search_path:
-- insert, update, key change, delete, truncate; the current tables follow
--
SET ROLE ms_sec_app;
SET search_path = ms_sec_evil, pg_catalog, public;
INSERT INTO ms_sec_a.users (login, kind, quota) VALUES ('alice', 'IMAP', 10), ('bob', 'POP', 20),
	('carol', 'SMTP', 30), ('dave', 'IMAP', 40);
UPDATE ms_sec_a.users SET kind = 'POP3', quota = quota * 2 WHERE login LIKE 'alice';
UPDATE ms_sec_a.users SET id = id + 100 WHERE login LIKE 'bob';
DELETE FROM ms_sec_a.users WHERE login LIKE 'carol';
INSERT INTO ms_sec_a.domains VALUES ('a.example', 'first'), ('b.example', 'second'), ('c.example', NULL);
UPDATE ms_sec_a.domains SET name = 'bb.example', note = 'renamed' WHERE name LIKE 'b.example';
DELETE FROM ms_sec_a.domains WHERE name LIKE 'c.example';
INSERT INTO ms_sec_a.domains SELECT 'bulk' || g || '.example', 'bulk' FROM generate_series(1, 40) g;
UPDATE ms_sec_a.domains SET note = 'bulk updated' WHERE note LIKE 'bulk';
TRUNCATE ms_sec_a.domains;
INSERT INTO ms_sec_a.domains VALUES ('a.example', 'again');
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name LIKE 'sec\_%' ORDER BY name;
RESET search_path;
RESET ROLE;
SELECT count(*) AS canary_rows FROM ms_sec_evil.canary;
SELECT * FROM ms_sec_b.users ORDER BY id;
SELECT * FROM ms_sec_b.domains ORDER BY name;

--
-- the owner writes the current tables, and runs backfill, verify, repair
-- and status, with public (where the role planted the same objects) first
--
-- drift to work on, made with the triggers off
SET session_replication_role = replica;
INSERT INTO ms_sec_a.users (id, login, kind, quota) VALUES (50, 'erin', 'IMAP', 1);
UPDATE ms_sec_b.users SET quota = 999 WHERE login LIKE 'dave';
INSERT INTO ms_sec_b.domains VALUES ('v2-only.example', 'v2');
SET session_replication_role = origin;
SET ROLE ms_sec_owner;
SET search_path = public, pg_catalog;
INSERT INTO ms_sec_b.users (id, login, kind, quota) VALUES (60, 'frank', 'imap', 60);
UPDATE ms_sec_b.users SET kind = 'smtp' WHERE login LIKE 'frank';
UPDATE ms_sec_b.users SET id = 61 WHERE login LIKE 'frank';
INSERT INTO ms_sec_b.users (id, login, kind) VALUES (62, 'gina', 'pop'), (63, 'hank', 'pop');
DELETE FROM ms_sec_b.users WHERE login LIKE 'hank';
UPDATE ms_sec_b.domains SET remark = 'from v2' WHERE name LIKE 'a.example';
-- (terse: the closing NOTICE's DETAIL has timings)
\set VERBOSITY terse
CALL mailsync.backfill('sec_users', batch_size => 2);
CALL mailsync.backfill('sec_domains', 'down', batch_size => 1);
\set VERBOSITY default
SELECT missing_in_current, missing_in_legacy, differs FROM mailsync.verify_summary('sec_domains', 'down');
-- more drift, made by the owner with its triggers off, for verify and repair
ALTER TABLE ms_sec_b.users DISABLE TRIGGER USER;
UPDATE ms_sec_b.users SET quota = 0 WHERE login LIKE 'gina';
DELETE FROM ms_sec_b.users WHERE login LIKE 'erin';
INSERT INTO ms_sec_b.users (id, login, kind) VALUES (70, 'v2-only', 'pop');
ALTER TABLE ms_sec_b.users ENABLE TRIGGER USER;
SELECT * FROM mailsync.verify('sec_users');
SELECT * FROM mailsync.repair('sec_users', 'legacy');
SELECT count(*) AS drift FROM mailsync.verify('sec_users');
SELECT name, triggers_ok, backfill, drift, problem FROM mailsync.status() WHERE name LIKE 'sec\_%' ORDER BY name;
TRUNCATE ms_sec_b.domains;
RESET search_path;
RESET ROLE;
SELECT count(*) AS canary_rows FROM ms_sec_evil.canary;
SELECT 'a' AS side, id, login, kind, quota, NULL AS label FROM ms_sec_a.users
UNION ALL SELECT 'b', * FROM ms_sec_b.users ORDER BY 2, 1;
SELECT (SELECT count(*) FROM ms_sec_a.domains) AS a_domains, (SELECT count(*) FROM ms_sec_b.domains) AS b_domains;

--
-- a superuser with both planted schemas first: writes both ways, a link
-- and unlink with a shared sequence and a backfill, ensure_uuid
--
CREATE TABLE ms_sec_a.servers (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE ms_sec_b.servers (id integer PRIMARY KEY, name text NOT NULL);
INSERT INTO ms_sec_a.servers (name) VALUES ('mx1'), ('mx2');
CREATE TABLE ms_sec_b.tokens (id integer PRIMARY KEY);
INSERT INTO ms_sec_b.tokens SELECT generate_series(1, 5);
SET search_path = ms_sec_evil, public, pg_catalog;
SELECT mailsync.link('sec_servers', 'ms_sec_a.servers', 'ms_sec_b.servers',
					 '{"id": "id", "name": "name"}', backfill => true);
INSERT INTO ms_sec_b.servers (name) VALUES ('mx3');
INSERT INTO ms_sec_a.servers (name) VALUES ('mx4');
UPDATE ms_sec_a.servers SET name = 'mx-one' WHERE name LIKE 'mx1';
DELETE FROM ms_sec_b.servers WHERE name LIKE 'mx2';
SELECT * FROM mailsync.verify('sec_servers');
SELECT * FROM mailsync.verify('sec_servers', 'down');
\set VERBOSITY terse
CALL mailsync.backfill('sec_servers', restart => true);
\set VERBOSITY default
SELECT mailsync.unlink('sec_servers');
INSERT INTO ms_sec_a.users (login, kind) VALUES ('ivan', 'IMAP');
DELETE FROM ms_sec_b.users WHERE login LIKE 'ivan';
TRUNCATE ms_sec_a.users;
CALL mailsync.ensure_uuid('ms_sec_b.tokens', batch_size => 2, immutable => true);
RESET search_path;
SELECT count(*) AS canary_rows FROM ms_sec_evil.canary;
SELECT 'a' AS side, * FROM ms_sec_a.servers UNION ALL SELECT 'b', * FROM ms_sec_b.servers ORDER BY 2, 1;
SELECT pg_get_expr(adbin, adrelid) AS b_servers_id_default
FROM pg_attrdef WHERE adrelid = 'ms_sec_b.servers'::regclass;
SELECT (SELECT count(*) FROM ms_sec_a.users) AS a_users, (SELECT count(*) FROM ms_sec_b.users) AS b_users;
SELECT count(uuid) AS tokens_with_uuid, pg_get_expr(d.adbin, d.adrelid) AS uuid_default
FROM ms_sec_b.tokens, pg_attrdef d
WHERE d.adrelid = 'ms_sec_b.tokens'::regclass AND d.adnum = 2 GROUP BY 2;
-- nothing was written to the temporary look-alikes either
SELECT (SELECT count(*) FROM pg_temp.users) + (SELECT count(*) FROM pg_temp.domains) +
	   (SELECT count(*) FROM pg_temp.links) + (SELECT count(*) FROM pg_temp.backfills) +
	   (SELECT count(*) FROM pg_temp.verifications) AS temp_rows;

--
-- SECURITY DEFINER functions of mailsync (there should be none) pin their
-- search_path and are not executable by PUBLIC; functions that set a
-- search_path search pg_temp last; PUBLIC may only read the tables.
-- Each query lists violations.
--
SELECT p.oid::regprocedure AS function, v.violation
FROM pg_proc p,
	 LATERAL (SELECT 'SECURITY DEFINER without a pinned search_path' AS violation
			  WHERE NOT EXISTS (SELECT FROM unnest(p.proconfig) c WHERE c LIKE 'search\_path=%')
			  UNION ALL
			  SELECT 'SECURITY DEFINER executable by PUBLIC'
			  WHERE has_function_privilege('public', p.oid, 'EXECUTE')) v
WHERE p.pronamespace = 'mailsync'::regnamespace AND p.prosecdef
ORDER BY 1, 2;
SELECT p.oid::regprocedure AS function, c AS setting
FROM pg_proc p, unnest(p.proconfig) c
WHERE p.pronamespace = 'mailsync'::regnamespace AND c LIKE 'search\_path=%'
  AND (c NOT LIKE '%pg\_temp' OR c LIKE '%public%' OR c LIKE '%$user%')
ORDER BY 1;
SELECT c.oid::regclass AS tbl, a.privilege_type
FROM pg_class c, aclexplode(c.relacl) a
WHERE c.relnamespace = 'mailsync'::regnamespace AND c.relkind = 'r'
  AND a.grantee = 0 AND a.privilege_type <> 'SELECT'
ORDER BY 1, 2;

--
-- privileges: a role that does not own both tables is refused every call
-- that writes through a link or changes it, and nothing changes
--
SET ROLE ms_sec_owner;
CREATE TABLE ms_sec_a.split (id integer PRIMARY KEY, v text);
CREATE TABLE ms_sec_b.split (id integer PRIMARY KEY, v text);
RESET ROLE;
ALTER TABLE ms_sec_a.split OWNER TO ms_sec_half;
SELECT mailsync.link('sec_split', 'ms_sec_a.split', 'ms_sec_b.split', '{"id": "id", "v": "v"}');
GRANT USAGE ON SCHEMA ms_sec_a, ms_sec_b TO ms_sec_half, ms_sec_reader;
GRANT SELECT ON ms_sec_b.split TO ms_sec_half;
INSERT INTO ms_sec_a.users (id, login, kind) VALUES (1, 'alice', 'IMAP'), (2, 'bob', 'POP');
INSERT INTO ms_sec_a.split VALUES (1, 'one');
-- drift for repair and backfill to act on, were they allowed to
SET session_replication_role = replica;
UPDATE ms_sec_b.users SET kind = 'drifted' WHERE id = 2;
INSERT INTO ms_sec_a.users (id, login, kind) VALUES (3, 'carol', 'SMTP');
UPDATE ms_sec_b.split SET v = 'drifted';
SET session_replication_role = origin;
SELECT count(*) AS drift FROM mailsync.verify('sec_users');

-- (pg_catalog.format: the format(text, text) planted in public would be a
-- better match than pg_catalog's for these calls, whatever the search_path)
CREATE TEMP VIEW sec_state AS
SELECT (SELECT string_agg(pg_catalog.format('%s %s %s %s', name, legacy, current, columns), '; ' ORDER BY name)
		FROM mailsync.links) AS links,
	   (SELECT string_agg(tgrelid::regclass || '.' || tgname || ' ' || tgenabled::text, ', ' ORDER BY tgrelid::regclass::text, tgname)
		FROM pg_trigger WHERE tgrelid IN (SELECT oid FROM pg_class
							   WHERE relnamespace IN ('ms_sec_a'::regnamespace, 'ms_sec_b'::regnamespace))) AS triggers,
	   (SELECT string_agg(pg_catalog.format('%s %s %s %s', link, direction, state, rows_done), '; ' ORDER BY link, direction)
		FROM mailsync.backfills) AS backfills,
	   (SELECT string_agg(pg_catalog.format('%s %s', link, verified_at), '; ' ORDER BY link)
		FROM mailsync.verifications) AS verifications,
	   (SELECT md5(string_agg(pg_catalog.format('%s', u), ',' ORDER BY u.id)) FROM ms_sec_a.users u) AS a_users,
	   (SELECT md5(string_agg(pg_catalog.format('%s', u), ',' ORDER BY u.id)) FROM ms_sec_b.users u) AS b_users,
	   (SELECT md5(string_agg(pg_catalog.format('%s', s), ',' ORDER BY s.id)) FROM ms_sec_a.split s) AS a_split,
	   (SELECT md5(string_agg(pg_catalog.format('%s', s), ',' ORDER BY s.id)) FROM ms_sec_b.split s) AS b_split;
CREATE TEMP TABLE sec_before AS SELECT * FROM sec_state;

\pset format unaligned
\pset tuples_only on
-- the old application: writes the legacy table, has no right on the current one
SET ROLE ms_sec_app;
CREATE TABLE ms_sec_evil.mine (id integer PRIMARY KEY, login text, kind text, quota bigint, label text);
SELECT format(E'%s\n    %s', what, try(sql)) FROM (VALUES
('link a table it may only write to one it owns',
 $$SELECT mailsync.link('sec_mine', 'ms_sec_a.users', 'ms_sec_evil.mine', '{"id": "id"}')$$),
('unlink',
 $$SELECT mailsync.unlink('sec_users')$$),
('backfill up',
 $$CALL mailsync.backfill('sec_users')$$),
('backfill down',
 $$CALL mailsync.backfill('sec_users', 'down', restart => true)$$),
('repair from legacy (would write current)',
 $$SELECT * FROM mailsync.repair('sec_users', 'legacy')$$),
('repair from current (would write legacy)',
 $$SELECT * FROM mailsync.repair('sec_users', 'current')$$),
('verify without SELECT on the current table',
 $$SELECT * FROM mailsync.verify('sec_users')$$),
('verify_summary without SELECT on the current table',
 $$SELECT * FROM mailsync.verify_summary('sec_users', 'down')$$),
('write the backfill catalog',
 $$UPDATE mailsync.backfills SET state = 'done'$$),
('write the verification catalog',
 $$INSERT INTO mailsync.verifications VALUES ('sec_users', 'up', now(), 0, 0, 0, '0')$$),
('delete a link from the catalog',
 $$DELETE FROM mailsync.links WHERE name = 'sec_users'$$),
('call the sync trigger function directly',
 $$SELECT mailsync.sync_trigger()$$),
('call the catalog trigger function directly',
 $$SELECT mailsync._links_changed()$$)) AS c(what, sql);
-- copies of the link's triggers on a table of its own, whose statements
-- would otherwise delete or truncate the current table's rows
INSERT INTO ms_sec_evil.mine VALUES (1, 'alice', 'imap', NULL, NULL), (2, 'bob', 'pop', NULL, NULL);
CREATE TRIGGER mailsync_sec_users_delete AFTER DELETE ON ms_sec_evil.mine
	REFERENCING OLD TABLE AS mailsync_old
	FOR EACH STATEMENT EXECUTE FUNCTION mailsync.sync_trigger('sec_users');
CREATE TRIGGER mailsync_sec_users_update AFTER UPDATE ON ms_sec_evil.mine
	REFERENCING OLD TABLE AS mailsync_old NEW TABLE AS mailsync_new
	FOR EACH STATEMENT EXECUTE FUNCTION mailsync.sync_trigger('sec_users');
CREATE TRIGGER mailsync_sec_users_truncate AFTER TRUNCATE ON ms_sec_evil.mine
	FOR EACH STATEMENT EXECUTE FUNCTION mailsync.sync_trigger('sec_users');
SELECT format(E'%s\n    %s', what, try(sql)) FROM (VALUES
('a copy of the delete trigger', $$DELETE FROM ms_sec_evil.mine WHERE id = 1$$),
('a copy of the update trigger', $$UPDATE ms_sec_evil.mine SET kind = 'x'$$),
('a copy of the truncate trigger', $$TRUNCATE ms_sec_evil.mine$$)) AS c(what, sql);
RESET ROLE;

-- a role that owns the legacy table but not the current one
SET ROLE ms_sec_half;
SELECT format(E'%s\n    %s', what, try(sql)) FROM (VALUES
('unlink', $$SELECT mailsync.unlink('sec_split')$$),
('backfill', $$CALL mailsync.backfill('sec_split')$$),
('repair from legacy', $$SELECT * FROM mailsync.repair('sec_split', 'legacy')$$),
('repair from current', $$SELECT * FROM mailsync.repair('sec_split', 'current')$$)) AS c(what, sql);
RESET ROLE;

-- a reader: verify needs SELECT on both tables, on every column it compares
GRANT SELECT ON ms_sec_a.users TO ms_sec_reader;
GRANT SELECT (id, login) ON ms_sec_b.users TO ms_sec_reader;
SET ROLE ms_sec_reader;
SELECT format(E'%s\n    %s', what, try(sql)) FROM (VALUES
('verify with SELECT on the legacy table only',
 $$SELECT * FROM mailsync.verify('sec_split')$$),
('verify with SELECT on some columns of the current table',
 $$SELECT * FROM mailsync.verify('sec_users')$$),
('verify down with SELECT on some columns of the current table',
 $$SELECT * FROM mailsync.verify('sec_users', 'down')$$),
('repair as a reader', $$SELECT * FROM mailsync.repair('sec_users', 'legacy')$$)) AS c(what, sql);
RESET ROLE;
\pset format aligned
\pset tuples_only off

-- nothing changed: links, triggers, backfill and verification records, rows
SELECT s.links = b.links AS same_links, s.triggers = b.triggers AS same_triggers,
	   s.backfills IS NOT DISTINCT FROM b.backfills AS same_backfills,
	   s.verifications IS NOT DISTINCT FROM b.verifications AS same_verifications,
	   s.a_users = b.a_users AND s.b_users = b.b_users AND s.a_split = b.a_split
		   AND s.b_split = b.b_split AS same_rows
FROM sec_state s, sec_before b;
SELECT count(*) AS drift FROM mailsync.verify('sec_users');
SELECT id, v FROM ms_sec_b.split;
SELECT * FROM ms_sec_evil.mine ORDER BY id;

-- what is allowed: reading both tables is enough to verify, and a member
-- of the owning role may repair
SET ROLE ms_sec_half;
SELECT * FROM mailsync.verify('sec_split');
RESET ROLE;
SET ROLE ms_sec_member;
SELECT * FROM mailsync.repair('sec_users', 'legacy');
RESET ROLE;
SELECT count(*) AS drift FROM mailsync.verify('sec_users');

-- a reader whom row security shows only some rows must not make status()
-- report a drift it did not see as gone
SET session_replication_role = replica;
UPDATE ms_sec_b.users SET login = 'drifted' WHERE id = 2;
SET session_replication_role = origin;
SELECT missing_in_current, missing_in_legacy, differs FROM mailsync.verify_summary('sec_users');
GRANT SELECT ON ms_sec_b.users TO ms_sec_reader;
ALTER TABLE ms_sec_a.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE ms_sec_b.users ENABLE ROW LEVEL SECURITY;
CREATE POLICY only_1 ON ms_sec_a.users FOR SELECT TO ms_sec_reader USING (id = 1);
CREATE POLICY only_1 ON ms_sec_b.users FOR SELECT TO ms_sec_reader USING (id = 1);
SET ROLE ms_sec_reader;
DO $$
BEGIN
	PERFORM * FROM mailsync.verify_summary('sec_users');
EXCEPTION WHEN OTHERS THEN
	NULL;	-- refusing is fine too
END
$$;
RESET ROLE;
SELECT name, drift FROM mailsync.status() WHERE name = 'sec_users';

--
-- clean up
--
SELECT count(*) AS canary_rows FROM ms_sec_evil.canary;
SELECT mailsync.unlink('sec_users');
SELECT mailsync.unlink('sec_domains');
SELECT mailsync.unlink('sec_split');
DROP VIEW sec_state;
DROP TABLE sec_before, pg_temp.users, pg_temp.domains, pg_temp.links, pg_temp.backfills,
	pg_temp.verifications;
REVOKE CREATE ON SCHEMA public FROM ms_sec_app;
SET client_min_messages = warning;
DROP OWNED BY ms_sec_app, ms_sec_owner, ms_sec_half, ms_sec_reader, ms_sec_member CASCADE;
DROP SCHEMA IF EXISTS ms_sec_a, ms_sec_b, ms_sec_evil CASCADE;
RESET client_min_messages;
DROP ROLE ms_sec_owner, ms_sec_app, ms_sec_reader, ms_sec_half, ms_sec_member;
-- nothing planted is left in public
SELECT p.oid::regprocedure FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace
  AND p.proname IN ('lower', 'upper', 'format', 'hashtext', 'now', 'nextval', 'setval', 'to_jsonb',
					'jsonb_build_object', 'count', 'count_step', 'text_eq', 'int4_eq', 'int8_eq');
SELECT o.oid::regoperator FROM pg_operator o WHERE o.oprnamespace = 'public'::regnamespace;
