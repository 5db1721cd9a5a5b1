--
-- hostile_names: schemas, tables and columns whose names hold quotes,
-- spaces, semicolons, comment markers, mixed case and reserved words, and
-- key values that look like SQL, array syntax or NULL.  Every identifier
-- must be quoted and every value passed as a value: the link syncs, backs
-- fill, verifies and repairs as with plain names, and the statements
-- hidden in the names never run.
--
-- what an injected statement would drop or write
CREATE TABLE public.hn_canary (note text);
INSERT INTO public.hn_canary VALUES ('intact');

CREATE SCHEMA "My Schema";
CREATE SCHEMA "v2; DROP TABLE public.hn_canary; --";
CREATE TABLE "My Schema"."v1""; DROP TABLE public.hn_canary;--" (
	"id;--"			integer PRIMARY KEY,
	"Mixed Case"	text NOT NULL,
	"a;b"			integer,
	"quote""d"		text,
	"from"			boolean NOT NULL DEFAULT false);
CREATE TABLE "v2; DROP TABLE public.hn_canary; --"."t2'); INSERT INTO public.hn_canary VALUES ('x');--" (
	"select"		integer PRIMARY KEY,
	"Mixed Case"	text NOT NULL,
	"user"			integer,
	"quote""d"		text,
	"order"			text NOT NULL DEFAULT 'no',
	"label $1 $$"	text);
-- short names for what follows
CREATE VIEW hn_v1 AS SELECT * FROM "My Schema"."v1""; DROP TABLE public.hn_canary;--";
CREATE VIEW hn_v2 AS SELECT * FROM "v2; DROP TABLE public.hn_canary; --"."t2'); INSERT INTO public.hn_canary VALUES ('x');--";

-- a rename of the key ("id;--" to "select") and of "a;b" to "user"; a
-- transform each way over quoted names; a one-way column whose expression
-- holds a comment marker, a parameter-like $1 and a dollar quote in literals
SELECT mailsync.link('hostile', '"My Schema"."v1""; DROP TABLE public.hn_canary;--"',
	'"v2; DROP TABLE public.hn_canary; --"."t2''); INSERT INTO public.hn_canary VALUES (''x'');--"',
	$json${
	"select": "id;--",
	"Mixed Case": {"up": "upper(legacy.\"Mixed Case\")", "down": "lower(current.\"Mixed Case\")",
				   "to": "Mixed Case"},
	"user": "a;b",
	"quote\"d": "quote\"d",
	"order": {"up": "CASE WHEN legacy.\"from\" THEN 'yes' ELSE 'no' END",
			  "down": "current.\"order\" = 'yes'", "to": "from"},
	"label $1 $$": {"up": "legacy.\"quote\"\"d\" || ' -- $1 $$ ' || legacy.\"a;b\"::text || ';'"}
	}$json$);
SELECT name, legacy, current, key, legacy_key FROM mailsync.links WHERE name = 'hostile';
SELECT jsonb_pretty(columns) FROM mailsync.links WHERE name = 'hostile';
SELECT tgname, tgenabled FROM pg_trigger
WHERE tgrelid IN ('hn_v1'::regclass, 'hn_v2'::regclass) OR tgname LIKE 'mailsync\_hostile\_%'
ORDER BY tgrelid::regclass::text, tgname;

-- inserts both ways, with values that look like SQL
INSERT INTO "My Schema"."v1""; DROP TABLE public.hn_canary;--" VALUES
	(1, 'Alice', 10, 'it''s', true),
	(2, 'Bob', NULL, '"; DROP TABLE public.hn_canary; --', false),
	(3, 'Carol', 30, NULL, false);
INSERT INTO "v2; DROP TABLE public.hn_canary; --"."t2'); INSERT INTO public.hn_canary VALUES ('x');--"
	("select", "Mixed Case", "user", "quote""d", "order") VALUES
	(4, 'DAVE', 40, '$1', 'yes'),
	(5, 'ERIN', 50, '\', 'no');
SELECT * FROM hn_v1 ORDER BY 1;
SELECT * FROM hn_v2 ORDER BY 1;

-- updates, a key change each way, deletes
UPDATE "My Schema"."v1""; DROP TABLE public.hn_canary;--" SET "Mixed Case" = 'Alicia', "a;b" = 11 WHERE "id;--" = 1;
UPDATE "v2; DROP TABLE public.hn_canary; --"."t2'); INSERT INTO public.hn_canary VALUES ('x');--"
	SET "order" = 'yes', "quote""d" = 'q''q' WHERE "select" = 3;
UPDATE "My Schema"."v1""; DROP TABLE public.hn_canary;--" SET "id;--" = 20 WHERE "id;--" = 2;
UPDATE "v2; DROP TABLE public.hn_canary; --"."t2'); INSERT INTO public.hn_canary VALUES ('x');--"
	SET "select" = 40 WHERE "select" = 4;
DELETE FROM "My Schema"."v1""; DROP TABLE public.hn_canary;--" WHERE "id;--" = 5;
DELETE FROM "v2; DROP TABLE public.hn_canary; --"."t2'); INSERT INTO public.hn_canary VALUES ('x');--"
	WHERE "select" = 3;
-- many rows at once
INSERT INTO "My Schema"."v1""; DROP TABLE public.hn_canary;--"
SELECT g, 'bulk ' || g, g, 'q"' || g, g % 2 = 0 FROM generate_series(100, 139) g;
UPDATE "v2; DROP TABLE public.hn_canary; --"."t2'); INSERT INTO public.hn_canary VALUES ('x');--"
	SET "order" = 'yes' WHERE "select" >= 100;
SELECT * FROM hn_v1 WHERE "id;--" < 100 ORDER BY 1;
SELECT * FROM hn_v2 WHERE "select" < 100 ORDER BY 1;
SELECT count(*) AS bulk_rows, sum("a;b") AS bulk_sum, count(*) FILTER (WHERE "from") AS bulk_from
FROM hn_v1 WHERE "id;--" >= 100;
-- the row inserted through the current table has no label: the one-way
-- column is computed from legacy writes only
SELECT * FROM mailsync.verify('hostile');
-- and down compares legacy with lower(current): the case a legacy row was
-- written in is lost on the way up
SELECT * FROM mailsync.verify('hostile', 'down');

-- truncate each way
TRUNCATE "v2; DROP TABLE public.hn_canary; --"."t2'); INSERT INTO public.hn_canary VALUES ('x');--";
SELECT count(*) AS v1_rows FROM hn_v1;
INSERT INTO "My Schema"."v1""; DROP TABLE public.hn_canary;--" VALUES (1, 'One', 1, 'x', false);
TRUNCATE "My Schema"."v1""; DROP TABLE public.hn_canary;--";
SELECT count(*) AS v2_rows FROM hn_v2;

-- rows made with the triggers off: backfill carries them each way
SET session_replication_role = replica;
INSERT INTO "My Schema"."v1""; DROP TABLE public.hn_canary;--"
SELECT g, 'Old ' || g, g, 'it''s "' || g || '"', g % 3 = 0 FROM generate_series(1, 7) g;
INSERT INTO "v2; DROP TABLE public.hn_canary; --"."t2'); INSERT INTO public.hn_canary VALUES ('x');--"
	("select", "Mixed Case", "user", "quote""d", "order") VALUES (3, 'STALE', 0, 'stale', 'yes'),
	(50, 'NEW ONLY', 5, ';', 'no');
SET session_replication_role = origin;
\set VERBOSITY terse
CALL mailsync.backfill('hostile', batch_size => 3);
CALL mailsync.backfill('hostile', 'down', batch_size => 3);
\set VERBOSITY default
SELECT * FROM hn_v2 ORDER BY 1;
SELECT * FROM mailsync.verify('hostile');
SELECT link, direction, state, position, stop_at, rows_done FROM mailsync.backfills
WHERE link = 'hostile' ORDER BY direction;

-- drift each way, found by verify and fixed by repair
SET session_replication_role = replica;
UPDATE "My Schema"."v1""; DROP TABLE public.hn_canary;--" SET "quote""d" = 'drift''ed' WHERE "id;--" = 1;
DELETE FROM "v2; DROP TABLE public.hn_canary; --"."t2'); INSERT INTO public.hn_canary VALUES ('x');--"
	WHERE "select" = 2;
UPDATE "v2; DROP TABLE public.hn_canary; --"."t2'); INSERT INTO public.hn_canary VALUES ('x');--"
	SET "order" = 'yes', "Mixed Case" = 'OTHER' WHERE "select" = 4;
INSERT INTO "v2; DROP TABLE public.hn_canary; --"."t2'); INSERT INTO public.hn_canary VALUES ('x');--"
	("select", "Mixed Case") VALUES (60, 'V2 ONLY');
SET session_replication_role = origin;
SELECT * FROM mailsync.verify('hostile');
SELECT missing_in_current, missing_in_legacy, differs FROM mailsync.verify_summary('hostile');
SELECT * FROM mailsync.repair('hostile', 'legacy');
SELECT count(*) AS drift_up FROM mailsync.verify('hostile');
SELECT * FROM mailsync.verify('hostile', 'down');
SET session_replication_role = replica;
UPDATE "v2; DROP TABLE public.hn_canary; --"."t2'); INSERT INTO public.hn_canary VALUES ('x');--"
	SET "user" = 99, "order" = 'yes' WHERE "select" = 6;
SET session_replication_role = origin;
SELECT * FROM mailsync.repair('hostile', 'current');
SELECT * FROM hn_v1 WHERE "id;--" = 6;
SELECT count(*) AS drift_down FROM mailsync.verify('hostile', 'down');
SELECT name, legacy, current, triggers_ok, backfill, drift, problem FROM mailsync.status()
WHERE name = 'hostile';

-- drift made with one trigger disabled by hand: status names it
ALTER TABLE "My Schema"."v1""; DROP TABLE public.hn_canary;--" DISABLE TRIGGER mailsync_hostile_update;
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name = 'hostile';
UPDATE "My Schema"."v1""; DROP TABLE public.hn_canary;--" SET "a;b" = -7 WHERE "id;--" = 7;
ALTER TABLE "My Schema"."v1""; DROP TABLE public.hn_canary;--" ENABLE TRIGGER mailsync_hostile_update;
SELECT * FROM mailsync.verify('hostile');
SELECT * FROM mailsync.repair('hostile', 'legacy');

-- a uuid column with a hostile name on the current table, made immutable
-- (its trigger's WHEN clause names the column)
CALL mailsync.ensure_uuid('"v2; DROP TABLE public.hn_canary; --"."t2''); INSERT INTO public.hn_canary VALUES (''x'');--"',
						  'uuid "x"; --', batch_size => 2, immutable => true);
SELECT count(*) AS rows, count("uuid ""x""; --") AS with_uuid
FROM "v2; DROP TABLE public.hn_canary; --"."t2'); INSERT INTO public.hn_canary VALUES ('x');--";
SELECT try($$UPDATE "v2; DROP TABLE public.hn_canary; --"."t2'); INSERT INTO public.hn_canary VALUES ('x');--"
	SET "uuid ""x""; --" = mailsync.uuid_v4() WHERE "select" = 1$$);
INSERT INTO "My Schema"."v1""; DROP TABLE public.hn_canary;--" VALUES (8, 'Eight', 8, NULL, true);
SELECT "select", "uuid ""x""; --" IS NOT NULL AS has_uuid
FROM "v2; DROP TABLE public.hn_canary; --"."t2'); INSERT INTO public.hn_canary VALUES ('x');--"
WHERE "select" = 8;

--
-- key values that look like array syntax, quotes, NULL and SQL, in a
-- two-column text key: backfill saves its position as text[] after each
-- batch and must read it back as the same values
--
-- (collation "C": the order of the keys, and so where a batch ends, is the
-- same everywhere)
CREATE TABLE "My Schema"."Keys" ("k 1" text COLLATE "C", "k;2" text COLLATE "C", v integer NOT NULL,
	PRIMARY KEY ("k 1", "k;2"));
CREATE TABLE "v2; DROP TABLE public.hn_canary; --"."Keys" ("K 1" text COLLATE "C", "K;2" text COLLATE "C",
	v integer NOT NULL, PRIMARY KEY ("K 1", "K;2"));
CREATE TEMP TABLE hostile_keys (k1 text, k2 text);
INSERT INTO hostile_keys VALUES
	('NULL', ''), ('', 'NULL'), ('a,b', '{c}'), ('"q"', 'x''y'), ('back\slash', ' lead'),
	('trail ', E'tab\tin'), ('); DROP TABLE public.hn_canary; --', '$1'), ('{}', '{"a":1}'),
	(E'line\nbreak', 'ok');
INSERT INTO "My Schema"."Keys" SELECT k1, k2, row_number() OVER (ORDER BY k1, k2) FROM hostile_keys;
SELECT mailsync.link('hostile_keys', '"My Schema"."Keys"', '"v2; DROP TABLE public.hn_canary; --"."Keys"',
					 '{"K 1": "k 1", "K;2": "k;2", "v": "v"}');
-- a batch fails on one key (a trigger refuses it); the backfill stops
-- after the batch before it, and resumes from the saved position: first
-- ('NULL', ''), then ('a,b', '{c}')
CREATE TABLE public.hn_refused (k text);
INSERT INTO public.hn_refused VALUES ('a,b');
CREATE FUNCTION public.hn_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW."K 1" IN (SELECT k FROM public.hn_refused) THEN
		RAISE EXCEPTION 'key % refused', NEW."K 1";
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER refuse BEFORE INSERT ON "v2; DROP TABLE public.hn_canary; --"."Keys"
	FOR EACH ROW EXECUTE FUNCTION public.hn_refuse();
\set VERBOSITY terse
CALL mailsync.backfill('hostile_keys', batch_size => 1);
\set VERBOSITY default
SELECT state, position, rows_done FROM mailsync.backfills WHERE link = 'hostile_keys';
SELECT name, backfill, backfill_position, problem FROM mailsync.status() WHERE name = 'hostile_keys';
UPDATE public.hn_refused SET k = 'back\slash';
\set VERBOSITY terse
CALL mailsync.backfill('hostile_keys', batch_size => 1);
\set VERBOSITY default
SELECT state, position, rows_done FROM mailsync.backfills WHERE link = 'hostile_keys';
DROP TRIGGER refuse ON "v2; DROP TABLE public.hn_canary; --"."Keys";
\set VERBOSITY terse
CALL mailsync.backfill('hostile_keys', batch_size => 2);
\set VERBOSITY default
SELECT state, position, rows_done, rows_total FROM mailsync.backfills WHERE link = 'hostile_keys';
-- every key arrived once, exactly as it was
SELECT count(*) AS rows, count(*) FILTER (WHERE (k."K 1", k."K;2") IN (SELECT k1, k2 FROM hostile_keys)) AS same_keys
FROM "v2; DROP TABLE public.hn_canary; --"."Keys" k;
SELECT * FROM mailsync.verify('hostile_keys');
-- drift on those keys, and a key change through the current table
SET session_replication_role = replica;
UPDATE "v2; DROP TABLE public.hn_canary; --"."Keys" SET v = -1 WHERE "K 1" = 'NULL';
DELETE FROM "v2; DROP TABLE public.hn_canary; --"."Keys" WHERE "K 1" = '"q"';
SET session_replication_role = origin;
SELECT * FROM mailsync.verify('hostile_keys');
SELECT * FROM mailsync.repair('hostile_keys', 'legacy');
UPDATE "v2; DROP TABLE public.hn_canary; --"."Keys" SET "K;2" = 'NULL' || chr(10) || 'x' WHERE "K 1" = 'a,b';
SELECT "k 1", "k;2" FROM "My Schema"."Keys" WHERE "k 1" = 'a,b';
SELECT count(*) AS drift FROM mailsync.verify('hostile_keys');

--
-- clean up: the canary is there, untouched
--
SELECT mailsync.unlink('hostile');
SELECT mailsync.unlink('hostile_keys');
SELECT * FROM public.hn_canary;
DROP VIEW hn_v1, hn_v2;
DROP FUNCTION public.hn_refuse();
DROP TABLE public.hn_refused;
SET client_min_messages = warning;
DROP SCHEMA "My Schema", "v2; DROP TABLE public.hn_canary; --" CASCADE;
RESET client_min_messages;
DROP TABLE public.hn_canary;
