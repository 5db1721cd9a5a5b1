--
-- bad_inputs: what a DBA can get wrong calling backfill, verify,
-- verify_summary, repair, ensure_uuid, uuid_time and the internal
-- functions, and the mapping text given to link (link_errors has the rest
-- of link and unlink; backfill, verify and ensure_uuid their first
-- refusals).  Each is refused with its SQLSTATE, a message naming what is
-- wrong and, where mailsync raises it, a hint; none of them changes
-- anything.
--
CREATE SCHEMA bi_a;	-- legacy
CREATE SCHEMA bi_b;	-- current
CREATE TABLE bi_a.t (id integer PRIMARY KEY, name text, n integer);
CREATE TABLE bi_b.t (id integer PRIMARY KEY, name text, n integer);
SELECT mailsync.link('bi', 'bi_a.t', 'bi_b.t', '{"id": "id", "name": "name", "n": "n"}');
INSERT INTO bi_a.t VALUES (1, 'one', 1), (2, 'two', 2);
CREATE TABLE bi_a.down (id integer PRIMARY KEY);
CREATE TABLE bi_b.down (id integer PRIMARY KEY);
SELECT mailsync.link('bi_down', 'bi_a.down', 'bi_b.down', '{"id": "id"}', direction => 'down');
-- a link whose mapping no longer compiles: a column it reads was renamed
CREATE TABLE bi_a.broken (id integer PRIMARY KEY, note text);
CREATE TABLE bi_b.broken (id integer PRIMARY KEY, remark text);
SELECT mailsync.link('bi_broken', 'bi_a.broken', 'bi_b.broken',
					 '{"id": "id", "remark": {"up": "upper(legacy.note)", "down": "lower(current.remark)", "to": "note"}}');
INSERT INTO bi_a.broken VALUES (1, 'a');
ALTER TABLE bi_a.broken RENAME COLUMN note TO memo;
-- a pair not linked, for mappings
CREATE TABLE bi_a.u (id integer PRIMARY KEY, name text, n integer);
CREATE TABLE bi_b.u (id integer PRIMARY KEY, name text, n integer);
-- columns and relations ensure_uuid cannot use
CREATE DOMAIN bi_a.uuid_d AS uuid;
CREATE TABLE bi_a.e (
	id	integer PRIMARY KEY,
	us	uuid[],
	c	char(36),
	g	uuid GENERATED ALWAYS AS ('a3bb189e-8bf9-3888-9912-ace4e6543002'::uuid) STORED,
	ud	bi_a.uuid_d);
INSERT INTO bi_a.e (id) VALUES (1), (2);
CREATE MATERIALIZED VIEW bi_a.mv AS SELECT 1 AS id;
CREATE SEQUENCE bi_a.seq;

CREATE TEMP TABLE cases (n serial, what text, sql text);
-- what exists before the catalogue of mistakes
CREATE TEMP VIEW bi_rels AS
SELECT oid FROM pg_class
WHERE relnamespace IN ('bi_a'::regnamespace, 'bi_b'::regnamespace, 'mailsync'::regnamespace);
CREATE TEMP VIEW bi_state AS
SELECT (SELECT string_agg(l::text, '; ' ORDER BY l.name) FROM mailsync.links l) AS links,
	   (SELECT string_agg(b::text, '; ' ORDER BY b.link, b.direction) FROM mailsync.backfills b) AS backfills,
	   (SELECT string_agg(v.link || ' ' || v.verified_at, '; ' ORDER BY v.link) FROM mailsync.verifications v) AS verifications,
	   (SELECT string_agg(tgrelid::regclass || ' ' || tgname || ' ' || tgenabled::text, ', '
						  ORDER BY tgrelid::regclass::text, tgname)
		FROM pg_trigger WHERE NOT tgisinternal) AS triggers,
	   (SELECT string_agg(attrelid::regclass || '.' || attname || ' ' || format_type(atttypid, atttypmod) ||
						  CASE WHEN attnotnull THEN ' not null' ELSE '' END, ', '
						  ORDER BY attrelid::regclass::text, attnum)
		FROM pg_attribute
		WHERE attnum > 0 AND NOT attisdropped
		  AND attrelid IN (SELECT oid FROM bi_rels)) AS columns,
	   (SELECT string_agg(adrelid::regclass || '.' || adnum || ' ' || pg_get_expr(adbin, adrelid), ', '
						  ORDER BY adrelid::regclass::text, adnum)
		FROM pg_attrdef WHERE adrelid IN (SELECT oid FROM bi_rels)) AS defaults,
	   (SELECT string_agg(conrelid::regclass || ' ' || conname, ', ' ORDER BY conrelid::regclass::text, conname)
		FROM pg_constraint WHERE conrelid IN (SELECT oid FROM bi_rels)) AS constraints,
	   (SELECT string_agg(indexrelid::regclass::text, ', ' ORDER BY indexrelid::regclass::text)
		FROM pg_index WHERE indrelid IN (SELECT oid FROM bi_rels)) AS indexes,
	   (SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) FROM bi_a.t t) AS a_rows,
	   (SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) FROM bi_b.t t) AS b_rows,
	   (SELECT md5(string_agg(e::text, ',' ORDER BY e.id)) FROM bi_a.e e) AS e_rows;
CREATE TEMP TABLE bi_before AS SELECT * FROM bi_state;

INSERT INTO cases (what, sql) VALUES
-- backfill
('backfill: batch_size is NULL',
 $$CALL mailsync.backfill('bi', batch_size => NULL)$$),
('backfill: pause is NULL',
 $$CALL mailsync.backfill('bi', pause => NULL)$$),
('backfill: restart is NULL',
 $$CALL mailsync.backfill('bi', restart => NULL)$$),
('backfill: negative batch_size',
 $$CALL mailsync.backfill('bi', batch_size => -1)$$),
('backfill: direction in capitals',
 $$CALL mailsync.backfill('bi', 'UP')$$),
('backfill: direction "both"',
 $$CALL mailsync.backfill('bi', 'both')$$),
('backfill: empty direction',
 $$CALL mailsync.backfill('bi', '')$$),
('backfill: a source side word for a direction',
 $$CALL mailsync.backfill('bi', 'legacy')$$),
('backfill: empty link name',
 $$CALL mailsync.backfill('')$$),
('backfill: link name in other case',
 $$CALL mailsync.backfill('BI')$$),
('backfill: up on a link that syncs down only',
 $$CALL mailsync.backfill('bi_down', 'up')$$),
('backfill: restart of a direction the link does not sync',
 $$CALL mailsync.backfill('bi_down', 'up', restart => true)$$),
('backfill: a link whose mapping no longer compiles',
 $$CALL mailsync.backfill('bi_broken')$$),
('backfill: called with SELECT',
 $$SELECT mailsync.backfill('bi')$$),
-- verify and verify_summary
('verify_summary: name is NULL',
 $$SELECT * FROM mailsync.verify_summary(NULL)$$),
('verify_summary: unknown link',
 $$SELECT * FROM mailsync.verify_summary('nope')$$),
('verify_summary: unknown direction',
 $$SELECT * FROM mailsync.verify_summary('bi', 'sideways')$$),
('verify_summary: a direction the link does not sync',
 $$SELECT * FROM mailsync.verify_summary('bi_down', 'up')$$),
('verify_summary: a link whose mapping no longer compiles',
 $$SELECT * FROM mailsync.verify_summary('bi_broken')$$),
('verify: direction "both"',
 $$SELECT * FROM mailsync.verify('bi', 'both')$$),
('verify: a source side word for a direction',
 $$SELECT * FROM mailsync.verify('bi', 'legacy')$$),
('verify: empty direction',
 $$SELECT * FROM mailsync.verify('bi', '')$$),
('verify: a link whose mapping no longer compiles',
 $$SELECT * FROM mailsync.verify('bi_broken', 'down')$$),
-- repair
('repair: name is NULL',
 $$SELECT * FROM mailsync.repair(NULL, 'legacy')$$),
('repair: unknown link',
 $$SELECT * FROM mailsync.repair('nope', 'legacy')$$),
('repair: a direction word for a source',
 $$SELECT * FROM mailsync.repair('bi', 'up')$$),
('repair: source in capitals',
 $$SELECT * FROM mailsync.repair('bi', 'LEGACY')$$),
('repair: a source a link that syncs down only does not map from',
 $$SELECT * FROM mailsync.repair('bi_down', 'legacy')$$),
('repair: no source',
 $$SELECT * FROM mailsync.repair('bi')$$),
('repair: a link whose mapping no longer compiles',
 $$SELECT * FROM mailsync.repair('bi_broken', 'current')$$),
-- ensure_uuid
('ensure_uuid: negative batch_size',
 $$CALL mailsync.ensure_uuid('bi_a.e', batch_size => -5)$$),
('ensure_uuid: generator in capitals',
 $$CALL mailsync.ensure_uuid('bi_a.e', generator => 'V7')$$),
('ensure_uuid: a generator mailsync does not have',
 $$CALL mailsync.ensure_uuid('bi_a.e', generator => 'v1')$$),
('ensure_uuid: empty column name',
 $$CALL mailsync.ensure_uuid('bi_a.e', '')$$),
('ensure_uuid: a uuid[] column',
 $$CALL mailsync.ensure_uuid('bi_a.e', 'us')$$),
('ensure_uuid: a char(36) column',
 $$CALL mailsync.ensure_uuid('bi_a.e', 'c')$$),
('ensure_uuid: a generated column',
 $$CALL mailsync.ensure_uuid('bi_a.e', 'g')$$),
('ensure_uuid: a column of a domain over uuid',
 $$CALL mailsync.ensure_uuid('bi_a.e', 'ud')$$),
('ensure_uuid: the integer key',
 $$CALL mailsync.ensure_uuid('bi_a.e', 'id')$$),
('ensure_uuid: a materialized view',
 $$CALL mailsync.ensure_uuid('bi_a.mv')$$),
('ensure_uuid: a sequence',
 $$CALL mailsync.ensure_uuid('bi_a.seq')$$),
('ensure_uuid: an index',
 $$CALL mailsync.ensure_uuid('bi_a.e_pkey')$$),
('ensure_uuid: a system catalog',
 $$CALL mailsync.ensure_uuid('pg_catalog.pg_class')$$),
('ensure_uuid: an OID that is no table',
 $$CALL mailsync.ensure_uuid(4242424)$$),
('ensure_uuid: called with SELECT',
 $$SELECT mailsync.ensure_uuid('bi_a.e')$$),
-- uuid_time
('uuid_time: text that is no uuid',
 $$SELECT mailsync.uuid_time('not a uuid')$$),
('uuid_time: a uuid with a brace too many',
 $$SELECT mailsync.uuid_time('{017f22e2-79b0-7cc3-98c4-dc0c0c07398f')$$),
-- internal functions called by hand
('_check_link: name is NULL',
 $$SELECT mailsync._check_link(NULL)$$),
('_check_link: unknown link',
 $$SELECT mailsync._check_link('nope')$$),
('_check_link: a link whose mapping no longer compiles',
 $$SELECT mailsync._check_link('bi_broken')$$),
('uuid_immutable called directly',
 $$SELECT mailsync.uuid_immutable()$$),
-- the mapping text given to link
('columns is malformed JSON',
 $$SELECT mailsync.link('x', 'bi_a.u', 'bi_b.u', '{"id": "id",}')$$),
('columns is a JSON string',
 $$SELECT mailsync.link('x', 'bi_a.u', 'bi_b.u', '"id"')$$),
('columns is JSON null',
 $$SELECT mailsync.link('x', 'bi_a.u', 'bi_b.u', 'null')$$),
('a mapping is JSON null',
 $$SELECT mailsync.link('x', 'bi_a.u', 'bi_b.u', '{"id": null}')$$),
('"up" is JSON null',
 $$SELECT mailsync.link('x', 'bi_a.u', 'bi_b.u', '{"id": "id", "name": {"up": null}}')$$),
('"to" is a number',
 $$SELECT mailsync.link('x', 'bi_a.u', 'bi_b.u', '{"id": "id", "name": {"up": "legacy.name", "down": "current.name", "to": 5}}')$$),
('a rename to an empty name',
 $$SELECT mailsync.link('x', 'bi_a.u', 'bi_b.u', '{"id": "id", "name": ""}')$$),
('an empty current column name',
 $$SELECT mailsync.link('x', 'bi_a.u', 'bi_b.u', '{"id": "id", "": "name"}')$$),
('a rename in the wrong case',
 $$SELECT mailsync.link('x', 'bi_a.u', 'bi_b.u', '{"id": "id", "name": "Name"}')$$),
('an expression with a parameter',
 $$SELECT mailsync.link('x', 'bi_a.u', 'bi_b.u', '{"id": "id", "n": {"up": "$1"}}')$$),
('an expression calling a function that does not exist',
 $$SELECT mailsync.link('x', 'bi_a.u', 'bi_b.u', '{"id": "id", "n": {"up": "no_such_function(legacy.n)"}}')$$),
('key is malformed array text',
 $$SELECT mailsync.link('x', 'bi_a.u', 'bi_b.u', '{"id": "id"}', key => '{id')$$),
('key in the wrong case',
 $$SELECT mailsync.link('x', 'bi_a.u', 'bi_b.u', '{"id": "id"}', key => '{ID}')$$),
('legacy name with a stray word',
 $$SELECT mailsync.link('x', 'bi_a.u extra', 'bi_b.u', '{"id": "id"}')$$),
('link name with a leading space',
 $$SELECT mailsync.link(' x', 'bi_a.u', 'bi_b.u', '{"id": "id"}')$$),
('direction in capitals',
 $$SELECT mailsync.link('x', 'bi_a.u', 'bi_b.u', '{"id": "id"}', direction => 'UP')$$);
\pset format unaligned
\pset tuples_only on
SELECT format(E'%s. %s\n    %s', n, what, try(sql)) FROM cases ORDER BY n;
\pset format aligned
\pset tuples_only off

-- nothing changed: catalog rows, triggers, columns, defaults, constraints,
-- indexes, rows
SELECT s.links = b.links AS same_links, s.backfills IS NOT DISTINCT FROM b.backfills AS same_backfills,
	   s.verifications IS NOT DISTINCT FROM b.verifications AS same_verifications,
	   s.triggers = b.triggers AS same_triggers, s.columns = b.columns AS same_columns,
	   s.defaults = b.defaults AS same_defaults, s.constraints = b.constraints AS same_constraints,
	   s.indexes = b.indexes AS same_indexes,
	   s.a_rows = b.a_rows AND s.b_rows = b.b_rows AND s.e_rows = b.e_rows AS same_rows
FROM bi_state s, bi_before b;

-- how such an error looks in psql
SELECT * FROM mailsync.verify('bi_broken');

--
-- ensure_uuid on mailsync's own catalog is refused like link (the catalog
-- of links must not get a column, a default or a unique index from it);
-- inside a transaction block, so that a failure here cannot spoil what
-- follows
--
BEGIN;
SELECT try($$CALL mailsync.ensure_uuid('mailsync.links')$$) <> 'ok' AS links_refused,
	   try($$CALL mailsync.ensure_uuid('mailsync.backfills', 'link')$$) <> 'ok' AS backfills_refused,
	   try($$CALL mailsync.ensure_uuid('mailsync.verifications', 'link')$$) <> 'ok' AS verifications_refused;
SELECT s.columns = b.columns AS same_columns, s.defaults = b.defaults AS same_defaults,
	   s.indexes = b.indexes AS same_indexes
FROM bi_state s, bi_before b;
ROLLBACK;

--
-- uuid_time at the edges: no error, a time for versions 1, 6 and 7 with
-- the RFC variant, NULL for anything else
--
SELECT u, mailsync.uuid_time(u::uuid) AT TIME ZONE 'UTC' AS utc FROM (VALUES
	('00000000-0000-1000-8000-000000000000'),	-- v1, the Gregorian epoch
	('ffffffff-ffff-1fff-bfff-ffffffffffff'),	-- v1, its last 100 ns tick
	('00000000-0000-6000-8000-000000000000'),	-- v6, the Gregorian epoch
	('ffffffff-ffff-6fff-bfff-ffffffffffff'),	-- v6, its last tick
	('00000000-0000-7000-8000-000000000000'),	-- v7, the Unix epoch
	('ffffffff-ffff-7fff-bfff-ffffffffffff'),	-- v7, its last millisecond
	('017f22e2-79b0-7cc3-18c4-dc0c0c07398f'),	-- v7, NCS variant
	('c232ab00-9414-11ec-e3c8-9f6bdeced846'),	-- v1, reserved variant
	('017f22e2-79b0-8cc3-98c4-dc0c0c07398f'),	-- v8
	('ffffffff-ffff-ffff-ffff-ffffffffffff')	-- the max UUID
) AS v(u);

SELECT mailsync.unlink('bi');
SELECT mailsync.unlink('bi_down');
SELECT mailsync.unlink('bi_broken');
DROP VIEW bi_state, bi_rels;
SET client_min_messages = warning;
DROP SCHEMA bi_a CASCADE;
DROP SCHEMA bi_b CASCADE;
RESET client_min_messages;
