--
-- link: pair a legacy and a current table with a mapping, and see each kind
-- of mapping at work: same name, rename, transforms both ways, a one-way
-- column, and columns no mapping names.  Then backfill, direction, and
-- that link and unlink are all-or-nothing.
--
CREATE SCHEMA v1;
CREATE SCHEMA v2;

-- a Postal-like credentials table, before (v1) and after (v2) a refactor
CREATE TABLE v1.credentials (
	id			serial PRIMARY KEY,
	server_id	integer NOT NULL,
	key			text NOT NULL,
	type		varchar(20) NOT NULL,
	name		text,
	hold		boolean NOT NULL DEFAULT false,
	note		text DEFAULT 'v1 default',		-- v1 only
	created_at	timestamptz NOT NULL DEFAULT '2020-01-01 00:00+00',
	updated_at	timestamptz NOT NULL DEFAULT '2020-01-01 00:00+00');
CREATE TABLE v2.credentials (
	id			integer PRIMARY KEY,
	uuid		uuid NOT NULL DEFAULT mailsync.uuid_v4() UNIQUE,	-- v2 only
	server_id	integer NOT NULL,
	key			text NOT NULL,
	kind		text NOT NULL,
	name		text,
	status		text NOT NULL DEFAULT 'active',
	label		text,
	created_at	timestamptz NOT NULL,
	updated_at	timestamptz NOT NULL);

-- a function of the application, found through the caller's search_path
CREATE FUNCTION public.label_for(n text, t text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT coalesce(n, '?') || ' (' || t || ')' $$;

-- every write to either table is logged (write_log, from install.sql)
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON v1.credentials
	FOR EACH ROW EXECUTE FUNCTION public.log_write();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON v2.credentials
	FOR EACH ROW EXECUTE FUNCTION public.log_write();

-- id, server_id, key, name, created_at, updated_at: same name
-- kind <-> type: a rename with a transform each way
-- status <-> hold: boolean in v1, text in v2
-- label: computed from v1, never written back (one-way)
-- uuid (v2) and note (v1): named by no mapping, left to their defaults
SELECT mailsync.link('creds', 'v1.credentials', 'v2.credentials', $${
	"id": "id",
	"server_id": "server_id",
	"key": "key",
	"kind": {"up": "lower(legacy.type)", "down": "upper(current.kind)", "to": "type"},
	"name": "name",
	"status": {"up": "CASE WHEN legacy.hold THEN 'hold' ELSE 'active' END",
			   "down": "current.status = 'hold'", "to": "hold"},
	"label": {"up": "label_for(legacy.name, legacy.type)"},
	"created_at": "created_at",
	"updated_at": "updated_at"
}$$);

-- the stored mapping: expressions normalised, label_for schema-qualified
SELECT name, legacy, current, direction, key, legacy_key, shared_sequence
FROM mailsync.links;
SELECT jsonb_pretty(columns) FROM mailsync.links WHERE name = 'creds';

-- the triggers it made: a row trigger and a truncate trigger on each side
SELECT tgrelid::regclass AS tbl, tgname, tgenabled,
	   pg_get_triggerdef(oid) LIKE '%FOR EACH ROW%' AS per_row
FROM pg_trigger WHERE tgname LIKE 'mailsync%' ORDER BY 1, 2;

-- an insert through v1 arrives in v2: transforms applied, uuid from its default
INSERT INTO v1.credentials (server_id, key, type, name) VALUES (1, 'k-1', 'SMTP', 'mx');
SELECT id, uuid IS NOT NULL AS has_uuid, server_id, key, kind, name, status, label, created_at
FROM v2.credentials;
SELECT * FROM writes;
TRUNCATE write_log;

-- an insert through v2 arrives in v1; the id comes from the sequence both
-- tables now share; v1's note keeps its default
INSERT INTO v2.credentials (server_id, key, kind, name, status, created_at, updated_at)
VALUES (1, 'k-2', 'api', 'hook', 'hold', '2021-01-01 00:00+00', '2021-01-01 00:00+00');
SELECT * FROM v1.credentials ORDER BY id;
SELECT * FROM writes;
TRUNCATE write_log;

-- an update through v1 rewrites the mapped columns of v2; uuid is untouched
CREATE TEMP TABLE uuid_before AS SELECT id, uuid FROM v2.credentials;
UPDATE v1.credentials SET name = 'mx-1', hold = true WHERE id = 1;
SELECT c.id, c.name, c.status, c.label, c.uuid = b.uuid AS same_uuid
FROM v2.credentials c JOIN uuid_before b USING (id) ORDER BY id;
SELECT * FROM writes;
TRUNCATE write_log;

-- an update of columns no mapping reads writes nothing on the other side:
-- v1.note (v1 only) and v2.label (one-way)
UPDATE v1.credentials SET note = 'just a note' WHERE id = 1;
UPDATE v2.credentials SET label = 'hand-made' WHERE id = 2;
SELECT * FROM writes;
TRUNCATE write_log;

-- the one-way column is recomputed when what it reads changes
UPDATE v1.credentials SET name = 'hook-2' WHERE id = 2;
SELECT id, name, label FROM v2.credentials ORDER BY id;
TRUNCATE write_log;

-- a delete through either side deletes on the other
DELETE FROM v2.credentials WHERE id = 1;
SELECT id FROM v1.credentials ORDER BY id;
SELECT * FROM writes;
TRUNCATE write_log;

SELECT * FROM mailsync.status();

--
-- backfill => true copies the rows that exist now, in the same transaction
--
CREATE TABLE v1.domains (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE v2.domains (id integer PRIMARY KEY, name text NOT NULL, active boolean NOT NULL DEFAULT true);
INSERT INTO v1.domains VALUES (1, 'example.org'), (2, 'example.net'), (3, 'example.com');
INSERT INTO v2.domains VALUES (3, 'stale.example.com', false), (4, 'v2-only.example', true);
SELECT mailsync.link('domains', 'v1.domains', 'v2.domains', '{"id": "id", "name": "name"}',
					 backfill => true);
-- legacy wins where both have a key; rows only v2 had are copied down
SELECT * FROM v1.domains ORDER BY id;
SELECT * FROM v2.domains ORDER BY id;

--
-- direction 'up': v1 feeds v2, v2's own writes stay in v2
--
CREATE TABLE v1.aliases (id integer PRIMARY KEY, address text NOT NULL);
CREATE TABLE v2.aliases (id integer PRIMARY KEY, address text NOT NULL);
SELECT mailsync.link('aliases', 'v1.aliases', 'v2.aliases', '{"id": "id", "address": "address"}',
					 direction => 'up');
SELECT tgrelid::regclass AS tbl, tgname FROM pg_trigger
WHERE tgname LIKE 'mailsync_aliases%' ORDER BY 1, 2;
INSERT INTO v1.aliases VALUES (1, 'postmaster@example.org');
INSERT INTO v2.aliases VALUES (2, 'only-in-v2@example.org');
SELECT 'v1' AS side, * FROM v1.aliases UNION ALL SELECT 'v2', * FROM v2.aliases ORDER BY 1, 2;

--
-- direction 'down': v2 feeds v1
--
CREATE TABLE v1.quotas (id integer PRIMARY KEY, bytes bigint NOT NULL);
CREATE TABLE v2.quotas (id integer PRIMARY KEY, megabytes integer NOT NULL);
SELECT mailsync.link('quotas', 'v1.quotas', 'v2.quotas',
					 $${"id": "id", "megabytes": {"down": "current.megabytes * 1048576", "to": "bytes"}}$$,
					 direction => 'down');
INSERT INTO v2.quotas VALUES (1, 50);
INSERT INTO v1.quotas VALUES (2, 1);
SELECT 'v1' AS side, id, bytes AS value FROM v1.quotas
UNION ALL SELECT 'v2', id, megabytes FROM v2.quotas ORDER BY 1, 2;

--
-- replica => true: the link also mirrors rows written where
-- session_replication_role is replica, as logical replication's apply
-- worker writes them, through row triggers that fire only there
--
CREATE TABLE v1.forwards (id integer PRIMARY KEY, target text NOT NULL);
CREATE TABLE v2.forwards (id integer PRIMARY KEY, recipient text NOT NULL);
SELECT mailsync.link('forwards', 'v1.forwards', 'v2.forwards', '{"id": "id", "recipient": "target"}',
					 replica => true);
SELECT tgrelid::regclass AS tbl, tgname, tgenabled,
	   CASE WHEN tgtype & 1 = 1 THEN 'row' ELSE 'statement' END AS level
FROM pg_trigger WHERE tgname LIKE 'mailsync_forwards%' ORDER BY 1, 2;
CREATE TRIGGER log AFTER INSERT OR UPDATE OR DELETE ON v2.forwards
	FOR EACH ROW EXECUTE FUNCTION log_write();
ALTER TABLE v2.forwards ENABLE ALWAYS TRIGGER log;
TRUNCATE write_log;
-- an ordinary session: the statement triggers
INSERT INTO v1.forwards VALUES (1, 'a@example.org'), (2, 'b@example.org');
-- as the apply worker: the row triggers, each row written once
SET session_replication_role = replica;
INSERT INTO v1.forwards VALUES (3, 'c@example.org');
UPDATE v1.forwards SET target = 'b2@example.org', id = 4 WHERE id = 2;
DELETE FROM v1.forwards WHERE id = 1;
RESET session_replication_role;
SELECT * FROM writes;
SELECT 'v1' AS side, * FROM v1.forwards UNION ALL SELECT 'v2', * FROM v2.forwards ORDER BY 1, 2;
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name = 'forwards';
SELECT mailsync.unlink('forwards');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgname LIKE 'mailsync_forwards%';
DROP TRIGGER log ON v2.forwards;

--
-- link is all-or-nothing
--
CREATE TABLE v1.servers (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE v2.servers (id integer PRIMARY KEY, name text NOT NULL);

-- a ROLLBACK undoes the link completely
BEGIN;
SELECT mailsync.link('servers', 'v1.servers', 'v2.servers', '{"id": "id", "name": "name"}');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgname LIKE 'mailsync_servers%';
ROLLBACK;
SELECT count(*) AS triggers FROM pg_trigger WHERE tgname LIKE 'mailsync_servers%';
SELECT count(*) AS links FROM mailsync.links WHERE name = 'servers';
SELECT pg_get_expr(adbin, adrelid) AS v2_id_default
FROM pg_attrdef WHERE adrelid = 'v2.servers'::regclass;

-- a link that fails half-way (here at its second trigger, whose name a
-- user trigger already has) leaves nothing either: no trigger but the
-- user's own, no row, and v2.servers.id without the default the link had
-- given it
CREATE TRIGGER mailsync_servers_truncate AFTER TRUNCATE ON v1.servers
	FOR EACH STATEMENT EXECUTE FUNCTION suppress_redundant_updates_trigger();
SELECT mailsync.link('servers', 'v1.servers', 'v2.servers', '{"id": "id", "name": "name"}');
SELECT tgname FROM pg_trigger WHERE tgname LIKE 'mailsync_servers%';
SELECT count(*) AS links FROM mailsync.links WHERE name = 'servers';
SELECT pg_get_expr(adbin, adrelid) AS v2_id_default
FROM pg_attrdef WHERE adrelid = 'v2.servers'::regclass;
DROP TRIGGER mailsync_servers_truncate ON v1.servers;

--
-- unlink removes the triggers and the catalog row, restores the key
-- default it replaced, and leaves every row where it is
--
BEGIN;
SELECT mailsync.unlink('creds');
ROLLBACK;
SELECT name FROM mailsync.links ORDER BY 1;

SELECT mailsync.unlink('creds');
SELECT name FROM mailsync.links ORDER BY 1;
SELECT tgname FROM pg_trigger WHERE tgname LIKE 'mailsync_creds%';
SELECT pg_get_expr(adbin, adrelid) AS v2_id_default
FROM pg_attrdef WHERE adrelid = 'v2.credentials'::regclass AND adnum = 1;
SELECT (SELECT count(*) FROM v1.credentials) AS v1_rows, (SELECT count(*) FROM v2.credentials) AS v2_rows;
INSERT INTO v1.credentials (server_id, key, type) VALUES (9, 'k-9', 'SMTP');
SELECT count(*) AS v2_rows FROM v2.credentials;

SELECT mailsync.unlink('domains');
SELECT mailsync.unlink('aliases');
SELECT mailsync.unlink('quotas');
SELECT * FROM mailsync.status();
