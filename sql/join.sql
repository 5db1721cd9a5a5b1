--
-- join: a link whose current columns live, on the legacy side, in a row of
-- a third table that the legacy row references.  Modoboa 1.x keeps a
-- domain's creation and last_modification in objectdates, referenced by
-- domains.dates_id; Modoboa 2.x keeps them on the domain.  Each write is
-- followed by a look at the three tables and by verify (empty: no drift).
-- Then drift and repair, status, triggers, unlink, and the refusals.
--
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
CREATE SCHEMA jn1;	-- legacy
CREATE SCHEMA jn2;	-- current
CREATE TABLE jn1.objectdates (
	id					serial PRIMARY KEY,
	creation			timestamptz NOT NULL,
	last_modification	timestamptz NOT NULL);
CREATE TABLE jn1.domains (
	id			integer PRIMARY KEY,
	name		text NOT NULL,
	quota		integer,
	dates_id	integer NOT NULL REFERENCES jn1.objectdates);
CREATE TABLE jn2.domains (
	id						integer PRIMARY KEY,
	name					text NOT NULL,
	default_mailbox_quota	integer,
	creation				timestamptz NOT NULL,
	last_modification		timestamptz NOT NULL);

-- the three tables at once, and the mapping of the link
CREATE TEMP VIEW look AS
SELECT 'jn1.objectdates' AS tbl, id, NULL::text AS name, NULL::integer AS quota,
	   NULL::integer AS dates_id, creation, last_modification
FROM jn1.objectdates
UNION ALL
SELECT 'jn1.domains', id, name, quota, dates_id, NULL, NULL FROM jn1.domains
UNION ALL
SELECT 'jn2.domains', id, name, default_mailbox_quota, NULL, creation, last_modification
FROM jn2.domains;
\set mapping '{"id": "id", "name": "name", "default_mailbox_quota": "quota", "creation": {"join": "jn1.objectdates", "via": "dates_id"}, "last_modification": {"join": "jn1.objectdates", "via": "dates_id"}}'

-- before the link: domains 3 and 4 share objectdates row 3; v2 has a stale
-- copy of domain 2 and a domain v1 does not have
INSERT INTO jn1.objectdates (creation, last_modification) VALUES
	('2020-01-01', '2020-01-02'), ('2020-02-01', '2020-02-02'), ('2020-03-01', '2020-03-02');
INSERT INTO jn1.domains VALUES
	(1, 'a.example', 100, 1), (2, 'b.example', NULL, 2), (3, 'c.example', 300, 3), (4, 'd.example', 400, 3);
INSERT INTO jn2.domains VALUES
	(2, 'stale.example', 5, '2000-01-01', '2000-01-01'),
	(50, 'v2-only.example', 50, '2021-05-01', '2021-05-02');

--
-- link with backfill => true: v2 made to match v1 in one statement (1, 3
-- and 4 inserted with their joined dates, 2 updated, 50 deleted)
--
SELECT mailsync.link('dom', 'jn1.domains', 'jn2.domains', :'mapping', backfill => true);
SELECT name, legacy, current, direction, key, legacy_key, shared_sequence FROM mailsync.links;
SELECT jsonb_pretty(columns) FROM mailsync.links WHERE name = 'dom';
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');

--
-- up: writes through v1
--
-- an insert, with its own objectdates row first (as Django saves them)
INSERT INTO jn1.objectdates (creation, last_modification) VALUES ('2020-05-01', '2020-05-02');
INSERT INTO jn1.domains VALUES (5, 'e.example', 500, currval('jn1.objectdates_id_seq'));
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');

-- an update of the domain row
UPDATE jn1.domains SET name = 'a2.example', quota = 150 WHERE id = 1;
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');

-- pointing a domain at another objectdates row brings that row's dates
UPDATE jn1.domains SET dates_id = 4 WHERE id = 2;
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');

-- an UPDATE of objectdates alone reaches v2
UPDATE jn1.objectdates SET last_modification = '2020-01-15' WHERE id = 1;
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');

-- domains 3 and 4 share objectdates row 3: both get its update
UPDATE jn1.objectdates SET creation = '2020-03-10', last_modification = '2020-03-20' WHERE id = 3;
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');

-- a delete through v1 deletes the v2 row (objectdates 4 stays, 2 uses it)
DELETE FROM jn1.domains WHERE id = 5;
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');

--
-- down: writes through v2
--
-- an insert creates a new objectdates row (id 5, from its sequence) and the
-- v1 domain referencing it
INSERT INTO jn2.domains VALUES (6, 'f.example', 600, '2022-06-01', '2022-06-02');
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');

-- an update of name and dates rewrites the v1 domain and its objectdates row
UPDATE jn2.domains SET name = 'f2.example', creation = '2022-06-05', last_modification = '2022-07-01'
WHERE id = 6;
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');

-- a delete deletes the v1 domain and leaves objectdates row 5
DELETE FROM jn2.domains WHERE id = 6;
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');

-- an update through v2 of a domain that shares its objectdates row: the
-- shared row changes, so the other domain's v2 row must follow (as it does
-- when objectdates is updated directly)
BEGIN;
UPDATE jn2.domains SET last_modification = '2024-01-01' WHERE id = 3;
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');
ROLLBACK;

--
-- key changes
--
-- through v1: the v2 row keeps its values under the new key
UPDATE jn1.domains SET id = 10 WHERE id = 1;
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');

-- through v2: the v1 row keeps its objectdates row
UPDATE jn2.domains SET id = 20 WHERE id = 2;
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');

-- two rows in one statement, through v1
UPDATE jn1.domains SET id = id + 100 WHERE id IN (3, 4);
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');

-- two rows in one statement, through v2: each v1 row keeps its own
-- objectdates row (10 keeps 1, 20 keeps 4) under its new key
UPDATE jn2.domains SET id = id + 100 WHERE id IN (10, 20);
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');

--
-- several rows in one INSERT through v2: one new objectdates row each, each
-- v1 domain referencing its own
--
INSERT INTO jn2.domains VALUES
	(7, 'g.example', 700, '2023-07-01', '2023-07-02'),
	(8, 'h.example', NULL, '2023-08-01', '2023-08-02'),
	(9, 'i.example', 900, '2023-09-01', '2023-09-02');
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');

--
-- a legacy row whose dates_id is NULL (another link, on tables where the
-- reference is nullable, sharing objectdates): v1 has no dates for it, v2
-- has; an update through v2 gives it a new objectdates row
--
CREATE TABLE jn1.mailboxes (
	id			integer PRIMARY KEY,
	address		text NOT NULL,
	dates_id	integer REFERENCES jn1.objectdates);
CREATE TABLE jn2.mailboxes (
	id					integer PRIMARY KEY,
	address				text NOT NULL,
	creation			timestamptz NOT NULL,
	last_modification	timestamptz NOT NULL);
INSERT INTO jn1.mailboxes VALUES (1, 'old@a.example', NULL);
INSERT INTO jn2.mailboxes VALUES (1, 'old@a.example', '2019-01-01', '2019-01-02');
SELECT mailsync.link('mbox', 'jn1.mailboxes', 'jn2.mailboxes', $${"id": "id", "address": "address",
	"creation": {"join": "jn1.objectdates", "via": "dates_id"},
	"last_modification": {"join": "jn1.objectdates", "via": "dates_id"}}$$);
SELECT * FROM mailsync.verify('mbox');
UPDATE jn2.mailboxes SET last_modification = '2019-06-01' WHERE id = 1;
SELECT * FROM jn1.objectdates ORDER BY id;
SELECT * FROM jn1.mailboxes ORDER BY id;
SELECT * FROM jn2.mailboxes ORDER BY id;
SELECT * FROM mailsync.verify('mbox');
SELECT * FROM mailsync.verify('dom');

-- objectdates holds the dates of every kind of object: a mailbox pointed at
-- the row of domain 110 gets its dates, and an update through v2 mailboxes
-- rewrites that row, which reaches v2 domains through the other link
UPDATE jn1.mailboxes SET dates_id = 1 WHERE id = 1;
UPDATE jn2.mailboxes SET creation = '2018-01-01' WHERE id = 1;
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM jn1.mailboxes ORDER BY id;
SELECT * FROM jn2.mailboxes ORDER BY id;
SELECT * FROM mailsync.verify('mbox');
SELECT * FROM mailsync.verify('dom');

--
-- TRUNCATE of v2 domains deletes the v1 domains; objectdates rows stay
--
TRUNCATE jn2.domains;
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');

-- several rows in one INSERT through v1 fill v2 again
INSERT INTO jn1.domains VALUES
	(1, 'a.example', 100, 1), (2, 'b.example', NULL, 2), (3, 'c.example', 300, 3), (4, 'd.example', 400, 3);
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');

-- TRUNCATE of v1 domains empties v2 domains
BEGIN;
TRUNCATE jn1.domains;
SELECT (SELECT count(*) FROM jn2.domains) AS v2_domains, (SELECT count(*) FROM jn1.objectdates) AS objectdates;
ROLLBACK;

--
-- drift, made with the triggers off, and repair from each side
--
SET session_replication_role = replica;
UPDATE jn2.domains SET name = 'drifted.example' WHERE id = 1;		-- 1 differs
UPDATE jn1.objectdates SET creation = '1999-01-01' WHERE id = 2;	-- 2 differs
DELETE FROM jn2.domains WHERE id = 3;								-- 3 missing in current
INSERT INTO jn2.domains VALUES (30, 'v2-drift.example', 30, '2025-01-01', '2025-01-02');	-- 30 missing in legacy
RESET session_replication_role;
SELECT * FROM mailsync.verify('dom');
-- v1 wins: v2 rows rewritten, inserted, deleted
SELECT * FROM mailsync.repair('dom', 'legacy');
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');

SET session_replication_role = replica;
UPDATE jn1.domains SET name = 'drifted.example' WHERE id = 1;		-- 1 differs
UPDATE jn2.domains SET creation = '2001-01-01' WHERE id = 2;		-- 2 differs
DELETE FROM jn2.domains WHERE id = 3;								-- 3 missing in current
INSERT INTO jn2.domains VALUES (30, 'v2-drift.example', 30, '2025-01-01', '2025-01-02');	-- 30 missing in legacy
RESET session_replication_role;
SELECT * FROM mailsync.verify('dom');
-- v2 wins: domain 1 renamed, objectdates 2 rewritten, domain 3 deleted, and
-- domain 30 inserted with a new objectdates row
SELECT * FROM mailsync.repair('dom', 'current');
SELECT * FROM look ORDER BY 1, 2;
SELECT * FROM mailsync.verify('dom');
-- the mailbox, on objectdates 1, was never touched
SELECT * FROM mailsync.verify('mbox');

--
-- status, triggers, unlink
--
SELECT name, legacy, current, direction, triggers_ok, drift, problem FROM mailsync.status() ORDER BY name;
-- CALL backfill of a join link: one statement, the state recorded as done
\set VERBOSITY terse
CALL mailsync.backfill('dom', 'up');
\set VERBOSITY default
SELECT link, direction, state, rows_done FROM mailsync.backfills WHERE link = 'dom';
SELECT count(*) AS drift FROM mailsync.verify('dom');
-- the triggers of both links: on each link's two tables, and one UPDATE
-- trigger each on objectdates
SELECT tgrelid::regclass AS tbl, tgname, tgenabled FROM pg_trigger
WHERE tgname LIKE 'mailsync%' ORDER BY tgrelid::regclass::text, tgname;
SELECT mailsync.unlink('dom');
SELECT tgrelid::regclass AS tbl, tgname, tgenabled FROM pg_trigger
WHERE tgname LIKE 'mailsync%' ORDER BY tgrelid::regclass::text, tgname;
SELECT mailsync.unlink('mbox');
SELECT tgrelid::regclass AS tbl, tgname FROM pg_trigger WHERE tgname LIKE 'mailsync%';
SELECT name FROM mailsync.links;
-- the rows stay, and writes are no longer mirrored
SELECT * FROM look ORDER BY 1, 2;
UPDATE jn1.objectdates SET last_modification = '2030-01-01' WHERE id = 1;
INSERT INTO jn2.domains VALUES (40, 'unlinked.example', 40, '2030-01-01', '2030-01-02');
SELECT (SELECT last_modification FROM jn2.domains WHERE id = 1) AS v2_domain_1,
	   (SELECT count(*) FROM jn1.domains WHERE id = 40) AS v1_domain_40;

--
-- refusals: each with its SQLSTATE, message and hint, and no link row and no
-- trigger left behind
--
CREATE TABLE jn1.dates_nopk (id serial, creation timestamptz, last_modification timestamptz);
CREATE TABLE jn1.dates_pk2 (id serial, part integer, creation timestamptz, last_modification timestamptz,
							PRIMARY KEY (id, part));
CREATE TABLE jn1.dates_noseq (id integer PRIMARY KEY, creation timestamptz, last_modification timestamptz);
CREATE FUNCTION pg_temp.refused(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	r text := public.try(sql);
	nlinks bigint;
	ntriggers bigint;
BEGIN
	SELECT count(*) INTO nlinks FROM mailsync.links;
	SELECT count(*) INTO ntriggers FROM pg_trigger WHERE tgname LIKE 'mailsync%';
	RETURN r || E'\n    links: ' || nlinks || ', triggers: ' || ntriggers;
END
$$;
CREATE TEMP TABLE cases (n serial, what text, columns text);
INSERT INTO cases (what, columns) VALUES
('joined table missing',
 $${"id": "id", "creation": {"join": "jn1.nodates", "via": "dates_id"}}$$),
('joined table is the legacy table',
 $${"id": "id", "creation": {"join": "jn1.domains", "via": "dates_id"}}$$),
('joined table is the current table',
 $${"id": "id", "creation": {"join": "jn2.domains", "via": "dates_id"}}$$),
('joined table without a primary key',
 $${"id": "id", "creation": {"join": "jn1.dates_nopk", "via": "dates_id"}}$$),
('joined table with a primary key of two columns',
 $${"id": "id", "creation": {"join": "jn1.dates_pk2", "via": "dates_id"}}$$),
('joined key without a sequence',
 $${"id": "id", "creation": {"join": "jn1.dates_noseq", "via": "dates_id"}}$$),
('no "via"',
 $${"id": "id", "creation": {"join": "jn1.objectdates"}}$$),
('two joined columns from different tables',
 $${"id": "id", "creation": {"join": "jn1.objectdates", "via": "dates_id"},
	"last_modification": {"join": "jn1.dates_noseq", "via": "dates_id"}}$$),
('two joined columns through different "via"',
 $${"id": "id", "creation": {"join": "jn1.objectdates", "via": "dates_id"},
	"last_modification": {"join": "jn1.objectdates", "via": "quota"}}$$),
('unknown joined column',
 $${"id": "id", "creation": {"join": "jn1.objectdates", "via": "dates_id", "column": "created"}}$$),
('"via" names no legacy column',
 $${"id": "id", "creation": {"join": "jn1.objectdates", "via": "date_id"}}$$),
('unknown field in a joined column',
 $${"id": "id", "creation": {"join": "jn1.objectdates", "via": "dates_id", "table": "x"}}$$),
('an expression mapping beside a join',
 $${"id": "id", "name": {"up": "upper(legacy.name)", "down": "lower(current.name)", "to": "name"},
	"creation": {"join": "jn1.objectdates", "via": "dates_id"}}$$),
('a value map beside a join',
 $${"id": "id", "name": {"from": "name", "map": {"a.example": "x.example"}},
	"creation": {"join": "jn1.objectdates", "via": "dates_id"}}$$);
\pset format unaligned
\pset tuples_only on
SELECT format(E'%s. %s\n    %s', n, what,
			  pg_temp.refused(format('SELECT mailsync.link(%L, %L, %L, %L)', 'bad', 'jn1.domains', 'jn2.domains', columns)))
FROM cases ORDER BY n;
\pset format aligned
\pset tuples_only off

-- a caller who owns both domains tables but not objectdates
CREATE ROLE regress_jn_owner;
GRANT USAGE ON SCHEMA jn1, jn2 TO regress_jn_owner;
CREATE TABLE jn1.aliases (id integer PRIMARY KEY, address text NOT NULL, dates_id integer REFERENCES jn1.objectdates);
CREATE TABLE jn2.aliases (id integer PRIMARY KEY, address text NOT NULL, creation timestamptz, last_modification timestamptz);
ALTER TABLE jn1.aliases OWNER TO regress_jn_owner;
ALTER TABLE jn2.aliases OWNER TO regress_jn_owner;
SET ROLE regress_jn_owner;
SELECT pg_temp.refused($$SELECT mailsync.link('bad', 'jn1.aliases', 'jn2.aliases', '{"id": "id", "address": "address",
	"creation": {"join": "jn1.objectdates", "via": "dates_id"},
	"last_modification": {"join": "jn1.objectdates", "via": "dates_id"}}')$$) AS non_owner;
RESET ROLE;

DROP TABLE jn1.aliases, jn2.aliases;

-- a key column named twice, and a key column that allows NULL
SELECT pg_temp.refused($$SELECT mailsync.link('bad', 'jn1.domains', 'jn2.domains', '{"id": "id", "name": "name",
	"creation": {"join": "jn1.objectdates", "via": "dates_id"},
	"last_modification": {"join": "jn1.objectdates", "via": "dates_id"}}', key => '{id,id}')$$) AS key_twice;
CREATE TABLE jn1.nk (code text UNIQUE, dates_id integer REFERENCES jn1.objectdates);
CREATE TABLE jn2.nk (code text UNIQUE, creation timestamptz, last_modification timestamptz);
SELECT pg_temp.refused($$SELECT mailsync.link('bad', 'jn1.nk', 'jn2.nk', '{"code": "code",
	"creation": {"join": "jn1.objectdates", "via": "dates_id"},
	"last_modification": {"join": "jn1.objectdates", "via": "dates_id"}}', key => '{code}')$$) AS nullable_key;
DROP TABLE jn1.nk, jn2.nk;
REVOKE USAGE ON SCHEMA jn1, jn2 FROM regress_jn_owner;
DROP ROLE regress_jn_owner;
SET client_min_messages = warning;
DROP SCHEMA jn1 CASCADE;
DROP SCHEMA jn2 CASCADE;
RESET client_min_messages;
RESET datestyle;
RESET timezone;
