--
-- ensure_uuid: the Postal fix.  A credentials table restored from a 1.x
-- dump has no uuid column, or a varchar one that is NULL or blank for some
-- rows; one CALL gives every row a uuid and keeps it that way.
--
CREATE SCHEMA postal;

-- restored from an old version: no uuid column at all
CREATE TABLE postal.credentials (
	id				serial PRIMARY KEY,
	server_id		integer NOT NULL,
	key				varchar(255) NOT NULL,
	type			varchar(255) NOT NULL,
	name			varchar(255),
	hold			boolean NOT NULL DEFAULT false,
	last_used_at	timestamptz,
	created_at		timestamptz NOT NULL DEFAULT now(),
	updated_at		timestamptz NOT NULL DEFAULT now());
INSERT INTO postal.credentials (server_id, key, type, name)
SELECT 1 + g % 7, md5(g::text), CASE WHEN g % 3 = 0 THEN 'API' ELSE 'SMTP' END, 'credential ' || g
FROM generate_series(1, 2500) g;

CALL mailsync.ensure_uuid('postal.credentials', batch_size => 1000);
\d postal.credentials
SELECT count(*) AS total, count(uuid) AS with_uuid, count(DISTINCT uuid) AS distinct_uuids,
	   bool_and(substr(uuid::text, 15, 1) = '7') AS all_v7
FROM postal.credentials;

-- running it again changes nothing
CREATE TEMP TABLE snapshot AS SELECT id, uuid FROM postal.credentials;
CALL mailsync.ensure_uuid('postal.credentials', batch_size => 1000);
SELECT count(*) AS changed FROM postal.credentials c JOIN snapshot s USING (id)
WHERE c.uuid IS DISTINCT FROM s.uuid;

-- new rows get one from the default; NULL is refused from now on
INSERT INTO postal.credentials (server_id, key, type) VALUES (1, 'new', 'SMTP')
RETURNING uuid IS NOT NULL AS has_uuid;
SELECT try($$INSERT INTO postal.credentials (server_id, key, type, uuid) VALUES (1, 'null', 'SMTP', NULL)$$);

-- immutable => true: a uuid once given can no longer change
CALL mailsync.ensure_uuid('postal.credentials', immutable => true);
SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger
WHERE tgrelid = 'postal.credentials'::regclass AND NOT tgisinternal;
SELECT try($$UPDATE postal.credentials SET uuid = mailsync.uuid_v4() WHERE id = 1$$);
UPDATE postal.credentials SET name = 'renamed', hold = true WHERE id = 1;
SELECT count(*) AS changed FROM postal.credentials c JOIN snapshot s USING (id)
WHERE c.uuid IS DISTINCT FROM s.uuid;
CALL mailsync.ensure_uuid('postal.credentials', immutable => true);

--
-- restored with a varchar(36) uuid column that is NULL or blank in part:
-- the values it has are kept, the rest are filled, the type stays
--
CREATE TABLE postal.credentials_v2 (
	id			serial PRIMARY KEY,
	server_id	integer NOT NULL,
	key			varchar(255) NOT NULL,
	uuid		varchar(36));
INSERT INTO postal.credentials_v2 (server_id, key, uuid) VALUES
	(1, 'a', 'a3bb189e-8bf9-3888-9912-ace4e6543002'),
	(1, 'b', NULL),
	(1, 'c', ''),
	(2, 'd', '   '),
	(2, 'e', '5f2b1c1e-0d7b-4c9e-9c55-1f0e2b7c9a10'),
	(2, 'f', NULL);
INSERT INTO postal.credentials_v2 (server_id, key) SELECT 3, 'bulk' || g FROM generate_series(1, 50) g;
CALL mailsync.ensure_uuid('postal.credentials_v2', generator => 'v4', batch_size => 7);
SELECT key, uuid FROM postal.credentials_v2 WHERE key IN ('a', 'e');
SELECT count(*) AS filled,
	   count(*) FILTER (WHERE uuid ~ '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$') AS v4,
	   count(DISTINCT uuid) AS distinct_uuids
FROM postal.credentials_v2 WHERE key NOT IN ('a', 'e');
\d postal.credentials_v2
CALL mailsync.ensure_uuid('postal.credentials_v2', generator => 'v4');

--
-- inside a transaction block it runs in the caller's transaction
--
CREATE TABLE postal.routes (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO postal.routes (name) SELECT 'route ' || g FROM generate_series(1, 30) g;
BEGIN;
CALL mailsync.ensure_uuid('postal.routes', batch_size => 10);
SELECT count(uuid) AS with_uuid FROM postal.routes;
ROLLBACK;
SELECT count(*) AS uuid_columns FROM pg_attribute WHERE attrelid = 'postal.routes'::regclass AND attname = 'uuid';
DO $$ BEGIN CALL mailsync.ensure_uuid('postal.routes', batch_size => 10); END $$;
SELECT count(uuid) AS with_uuid FROM postal.routes;

--
-- on a linked table: filling the v2-only column writes nothing to v1
--
CREATE SCHEMA postal1;
CREATE TABLE postal1.servers (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE postal.servers (id integer PRIMARY KEY, name text NOT NULL);
SELECT mailsync.link('servers', 'postal1.servers', 'postal.servers', '{"id": "id", "name": "name"}');
INSERT INTO postal1.servers VALUES (1, 'mx1'), (2, 'mx2');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON postal1.servers
	FOR EACH ROW EXECUTE FUNCTION public.log_write();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON postal.servers
	FOR EACH ROW EXECUTE FUNCTION public.log_write();
TRUNCATE write_log;
CALL mailsync.ensure_uuid('postal.servers');
SELECT * FROM writes;
INSERT INTO postal1.servers VALUES (3, 'mx3');
SELECT id, name, uuid IS NOT NULL AS has_uuid FROM postal.servers ORDER BY id;
SELECT mailsync.unlink('servers');

--
-- bad inputs: each refused before anything changes
--
CREATE TABLE postal.bad_type (id integer PRIMARY KEY, uuid integer);
CREATE TABLE postal.too_short (id integer PRIMARY KEY, uuid varchar(20));
CREATE TABLE postal.dups (id integer PRIMARY KEY, uuid uuid);
INSERT INTO postal.dups VALUES (1, 'a3bb189e-8bf9-3888-9912-ace4e6543002'),
	(2, 'a3bb189e-8bf9-3888-9912-ace4e6543002'), (3, NULL);
CREATE VIEW postal.a_view AS SELECT 1 AS id;
CREATE TABLE postal.parted (id integer, uuid uuid) PARTITION BY RANGE (id);
CREATE ROLE regress_stranger;
GRANT USAGE ON SCHEMA postal TO regress_stranger;
\pset format unaligned
\pset tuples_only on
SELECT format(E'%s\n    %s', what, try(sql)) FROM (VALUES
('tbl is NULL', $$CALL mailsync.ensure_uuid(NULL)$$),
('col is NULL', $$CALL mailsync.ensure_uuid('postal.bad_type', NULL)$$),
('batch_size is NULL', $$CALL mailsync.ensure_uuid('postal.bad_type', batch_size => NULL)$$),
('immutable is NULL', $$CALL mailsync.ensure_uuid('postal.bad_type', immutable => NULL)$$),
('generator is NULL', $$CALL mailsync.ensure_uuid('postal.bad_type', generator => NULL)$$),
('batch_size is zero', $$CALL mailsync.ensure_uuid('postal.bad_type', batch_size => 0)$$),
('unknown generator', $$CALL mailsync.ensure_uuid('postal.bad_type', generator => 'v5')$$),
('table does not exist', $$CALL mailsync.ensure_uuid('postal.nope')$$),
('a view', $$CALL mailsync.ensure_uuid('postal.a_view')$$),
('a partitioned table', $$CALL mailsync.ensure_uuid('postal.parted')$$),
('a system column', $$CALL mailsync.ensure_uuid('postal.bad_type', 'ctid')$$),
('an integer column', $$CALL mailsync.ensure_uuid('postal.bad_type')$$),
('a varchar too short for a uuid', $$CALL mailsync.ensure_uuid('postal.too_short')$$),
('a uuid shared by two rows', $$CALL mailsync.ensure_uuid('postal.dups')$$)) AS c(what, sql);
SET ROLE regress_stranger;
SELECT format(E'%s\n    %s', 'not the owner', try($$CALL mailsync.ensure_uuid('postal.dups')$$));
RESET ROLE;
\pset format aligned
\pset tuples_only off
-- the duplicated value is kept, and nothing else changed either
SELECT * FROM postal.dups ORDER BY id;
SELECT count(*) AS dups_defaults FROM pg_attrdef WHERE adrelid = 'postal.dups'::regclass;
SELECT attname, atttypid::regtype FROM pg_attribute
WHERE attrelid IN ('postal.bad_type'::regclass, 'postal.too_short'::regclass) AND attnum > 0
ORDER BY attrelid::regclass::text, attnum;
REVOKE USAGE ON SCHEMA postal FROM regress_stranger;
DROP ROLE regress_stranger;
