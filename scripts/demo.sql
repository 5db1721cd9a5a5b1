-- The mailsync demo, run by scripts/demo.sh (psql -q, ON_ERROR_STOP, no
-- pager): a mail platform half-way through an upgrade, where the old (v1)
-- and the new (v2) application write to one database at once.  Tables and
-- their first rows are created silently; the statements that tell the
-- story are echoed, with a few lines of narration per chapter.
\set ECHO none
\set VERBOSITY terse
\pset null '(null)'
\pset footer off
CREATE EXTENSION mailsync;
CREATE SCHEMA v1;
CREATE SCHEMA v2;

\echo
\echo '###  mailsync: one database, two versions of a mail platform  ###'
\echo
\echo 'Upgrade week. The old application (v1: Postal 1.x, Modoboa 1.x) still'
\echo 'serves the users; the new one (v2) runs beside it, on its own refactored'
\echo 'tables. Both write all day. mailsync links each v1 table to its v2 table,'
\echo 'and every write reaches the other side in the writer''s own transaction.'

-----------------------------------------------------------------------------
-- 1. Postal credentials: renames, transforms, uuid_v7; ensure_uuid.
-----------------------------------------------------------------------------
\echo
\echo '=== 1. Credentials: renames, two transforms, and uuids ==='
\echo
\echo 'Postal 2.x renamed "type" to "kind" (smtp, not SMTP), turned the "hold"'
\echo 'flag into a "status", and addresses each credential by a uuid. v1 has'
\echo 'three credentials, v2 none yet. One call links the tables and copies'
\echo 'the rows, giving each one from v1 a time-ordered uuid (version 7):'
\echo
CREATE TABLE v1.credentials (
	id			serial PRIMARY KEY,
	server_id	integer NOT NULL,
	key			varchar(255) NOT NULL,
	type		varchar(255) NOT NULL,
	name		varchar(255),
	hold		boolean NOT NULL DEFAULT false,
	created_at	timestamptz NOT NULL DEFAULT now(),
	updated_at	timestamptz NOT NULL DEFAULT now());
CREATE TABLE v2.credentials (
	id			integer PRIMARY KEY,
	uuid		uuid NOT NULL UNIQUE,
	server_id	integer NOT NULL,
	key			text NOT NULL,
	kind		text NOT NULL,
	name		text,
	status		text NOT NULL DEFAULT 'active',
	created_at	timestamptz NOT NULL,
	updated_at	timestamptz NOT NULL);
INSERT INTO v1.credentials (server_id, key, type, name) VALUES
	(1, 'b1946ac92492d2347c6235b4d2611184', 'SMTP', 'newsletter relay'),
	(1, '591785b794601e212b260e25925636fd', 'API',  'billing hook'),
	(2, 'c157a79031e1c40f85931829bc5fc552', 'SMTP', 'support desk');
\set ECHO queries
SELECT mailsync.link('credentials', 'v1.credentials', 'v2.credentials', $${
	"id": "id", "server_id": "server_id", "key": "key", "name": "name",
	"kind":   {"up": "lower(legacy.type)", "down": "upper(current.kind)", "to": "type"},
	"status": {"up": "CASE WHEN legacy.hold THEN 'hold' ELSE 'active' END",
	           "down": "current.status = 'hold'", "to": "hold"},
	"uuid":   {"up": "mailsync.uuid_v7()"},
	"created_at": "created_at", "updated_at": "updated_at"}$$,
	backfill => true) \gset
SELECT id, uuid, kind, name, status FROM v2.credentials ORDER BY id;
\set ECHO none
\echo 'The old admin UI (v1) puts "billing hook" on hold. The new one (v2)'
\echo 'creates a credential without giving an id: both tables now draw their'
\echo 'ids from one sequence.'
\echo
\set ECHO queries
UPDATE v1.credentials SET hold = true WHERE name = 'billing hook';
INSERT INTO v2.credentials (uuid, server_id, key, kind, name, created_at, updated_at)
VALUES (mailsync.uuid_v7(), 2, 'd8e8fca2dc0f896fd7cb4cb0031ba249', 'api', 'new MX', now(), now());
SELECT id, type, name, hold FROM v1.credentials ORDER BY id;
SELECT id, kind, name, status FROM v2.credentials ORDER BY id;
\set ECHO none
\echo 'Meanwhile, on staging, 2.x was started on a restored 1.x dump:'
\echo 'restored.credentials (25,000 rows) has no uuid column, and the 2.x'
\echo 'credentials page fails:'
\echo
CREATE SCHEMA restored;
CREATE TABLE restored.credentials (
	id			serial PRIMARY KEY,
	server_id	integer NOT NULL,
	key			varchar(255) NOT NULL,
	type		varchar(255) NOT NULL,
	name		varchar(255),
	hold		boolean NOT NULL DEFAULT false,
	created_at	timestamptz NOT NULL DEFAULT now(),
	updated_at	timestamptz NOT NULL DEFAULT now());
INSERT INTO restored.credentials (server_id, key, type, name)
SELECT 1 + g % 5, md5(g::text), CASE WHEN g % 4 = 0 THEN 'API' ELSE 'SMTP' END, 'credential ' || g
FROM generate_series(1, 25000) g;
\set VERBOSITY default
\set ON_ERROR_STOP 0
\set ECHO queries
SELECT uuid, name FROM restored.credentials WHERE id = 1;
\set ECHO none
\set ON_ERROR_STOP 1
\echo
\echo 'One command adds the column (or fills the NULLs of one that is there),'
\echo 'in batches, and makes it NOT NULL, unique and (here) immutable. Run'
\echo 'again, it has nothing to do:'
\echo
\set ECHO queries
CALL mailsync.ensure_uuid('restored.credentials', immutable => true);
CALL mailsync.ensure_uuid('restored.credentials', immutable => true);
SELECT count(*) AS rows, count(DISTINCT uuid) AS distinct_uuids FROM restored.credentials;
\set ECHO none
\echo 'The page works again, and a uuid once given never changes:'
\echo
\set ON_ERROR_STOP 0
\set ECHO queries
SELECT uuid, name FROM restored.credentials WHERE id = 1;
UPDATE restored.credentials SET uuid = mailsync.uuid_v4() WHERE id = 1;
\set ECHO none
\set ON_ERROR_STOP 1
\set VERBOSITY terse

-----------------------------------------------------------------------------
-- 2. Modoboa settings: rows <-> one JSON document.
-----------------------------------------------------------------------------
\echo
\echo '=== 2. Settings: one row per setting <-> one JSON document ==='
\echo
\echo 'Modoboa 1.x keeps each setting in a row of lib_parameter; 2.x keeps'
\echo 'them all in one document, core_localconfig._parameters, shaped'
\echo '{"app": {"key": value}}. On the way, the IMAP migration app was renamed,'
\echo 'its ENABLED flag became a "state" the 2.x form writes as "enabled" or'
\echo '"disabled", DEFAULT_TOP_REDIRECTION was dropped, and a theme was added.'
\echo 'The v1 settings:'
\echo
CREATE TABLE v1.lib_parameter (
	id			serial PRIMARY KEY,
	name		varchar(255) NOT NULL UNIQUE,
	value		text NOT NULL);
CREATE TABLE v2.core_localconfig (
	id			serial PRIMARY KEY,
	_parameters	jsonb NOT NULL DEFAULT '{}');
INSERT INTO v1.lib_parameter (name, value) VALUES
	('core.ITEMS_PER_PAGE', '30'),
	('core.SENDER_ADDRESS', 'noreply@example.org'),
	('core.ENABLE_DNS_CHECKS', 'yes'),
	('core.DEFAULT_TOP_REDIRECTION', 'user'),
	('modoboa_imap_migration.ENABLED', 'no'),
	('modoboa_imap_migration.MAX_SYNC_ACCOUNTS', '10');
\set ECHO queries
SELECT name, value FROM v1.lib_parameter ORDER BY id;
\set ECHO none
\echo 'A document link says all that. By default, app.KEY is {"app": {"key"}},'
\echo '"yes"/"no" are true/false, integers are numbers, the rest strings:'
\echo
\set ECHO queries
SELECT mailsync.link('settings', 'v1.lib_parameter', 'v2.core_localconfig', $${
	"_parameters": {"document": {
		"apps":   {"modoboa_imap_migration": "imap_migration"},
		"keys":   {"modoboa_imap_migration.ENABLED": "imap_migration.state"},
		"values": {"modoboa_imap_migration.ENABLED": {"yes": "enabled", "no": "disabled"}},
		"legacy_only":  ["core.DEFAULT_TOP_REDIRECTION"],
		"current_only": ["core.theme"]}}}$$,
	backfill => true) \gset
SELECT app.key AS app, s.key, s.value
FROM v2.core_localconfig, jsonb_each(_parameters) app, jsonb_each(app.value) s ORDER BY 1, 2;
\set ECHO none
\echo 'An admin enables IMAP migration, and picks a theme, in the 2.x UI.'
\echo 'Another sets 50 items per page in the 1.x UI:'
\echo
\set ECHO queries
UPDATE v2.core_localconfig
SET _parameters = jsonb_set(jsonb_set(_parameters, '{imap_migration,state}', '"enabled"'),
                            '{core,theme}', '"dark"');
UPDATE v1.lib_parameter SET value = '50' WHERE name = 'core.ITEMS_PER_PAGE';
SELECT name, value FROM v1.lib_parameter ORDER BY id;
SELECT app.key AS app, s.key, s.value
FROM v2.core_localconfig, jsonb_each(_parameters) app, jsonb_each(app.value) s ORDER BY 1, 2;
\set ECHO none
\echo 'v1 reads "yes", v2 the number 50; the theme stays in v2 and'
\echo 'DEFAULT_TOP_REDIRECTION in v1.'
\echo
\echo 'The 2.x settings form saves the whole document, every field, with one'
\echo 'change (the sender address). Which v1 rows did that transaction write?'
\echo
\set ECHO queries
BEGIN;
UPDATE v2.core_localconfig SET _parameters = '{
	"core": {"theme": "dark", "items_per_page": 50, "sender_address": "postmaster@example.org",
	         "enable_dns_checks": true},
	"imap_migration": {"state": "enabled", "max_sync_accounts": 10}}';
SELECT name, value FROM v1.lib_parameter WHERE xmin = pg_current_xact_id()::xid;
COMMIT;
\set ECHO none
\echo 'Just the one that changed.'

-----------------------------------------------------------------------------
-- 3. Domains: dates in a joined table, a column whose meaning changed;
--    users: a value map.
-----------------------------------------------------------------------------
\echo
\echo '=== 3. Domains and users: a joined table, a new meaning, a value map ==='
\echo
\echo 'Modoboa 1.x keeps the creation and modification dates of a domain in a'
\echo 'row of objectdates that domains.dates_id references; 2.x keeps them on'
\echo 'the domain. 1.x domains.quota is the quota of each new mailbox: 2.x'
\echo 'calls it default_mailbox_quota, and has a new "quota" of its own (the'
\echo 'whole domain''s: it has no 1.x column, so it stays in v2).'
\echo
CREATE TABLE v1.objectdates (
	id			serial PRIMARY KEY,
	creation	timestamptz NOT NULL DEFAULT now(),
	last_modification timestamptz NOT NULL DEFAULT now());
CREATE TABLE v1.domains (
	id			serial PRIMARY KEY,
	name		varchar(100) NOT NULL UNIQUE,
	quota		integer NOT NULL DEFAULT 0,
	dates_id	integer NOT NULL REFERENCES v1.objectdates);
CREATE TABLE v2.domains (
	id			integer PRIMARY KEY,
	name		text NOT NULL UNIQUE,
	default_mailbox_quota integer NOT NULL DEFAULT 0,
	quota		integer NOT NULL DEFAULT 0,
	creation	timestamptz NOT NULL,
	last_modification timestamptz NOT NULL);
INSERT INTO v1.objectdates (creation, last_modification) VALUES
	('2019-03-01 10:00+00', '2024-06-01 09:30+00'), ('2021-11-15 08:00+00', '2021-11-15 08:00+00');
INSERT INTO v1.domains (name, quota, dates_id) VALUES ('example.org', 1024, 1), ('exemplo.com.br', 2048, 2);
\set ECHO queries
SELECT mailsync.link('domains', 'v1.domains', 'v2.domains', $${
	"id": "id", "name": "name", "default_mailbox_quota": "quota",
	"creation":          {"join": "v1.objectdates", "via": "dates_id"},
	"last_modification": {"join": "v1.objectdates", "via": "dates_id"}}$$,
	backfill => true) \gset
SELECT id, name, default_mailbox_quota, quota, creation, last_modification FROM v2.domains ORDER BY id;
\set ECHO none
\echo 'The 1.x UI touches example.org (only its objectdates row changes); the'
\echo '2.x UI gives it a 50 GB domain quota and creates a domain, with its dates:'
\echo
\set ECHO queries
UPDATE v1.objectdates SET last_modification = '2026-11-23 12:00+00' WHERE id = 1;
UPDATE v2.domains SET quota = 51200 WHERE name = 'example.org';
INSERT INTO v2.domains (name, default_mailbox_quota, creation, last_modification)
VALUES ('example.hk', 512, '2026-11-23 12:05+00', '2026-11-23 12:05+00');
SELECT d.id, d.name, d.quota, d.dates_id, o.creation, o.last_modification
FROM v1.domains d JOIN v1.objectdates o ON o.id = d.dates_id ORDER BY d.id;
SELECT id, name, default_mailbox_quota, quota, last_modification FROM v2.domains ORDER BY id;
\set ECHO none
\echo 'v2''s domain quota stayed in v2; the new domain got objectdates row 3.'
\echo
\echo 'Users: 1.x writes languages pt_BR, zh_TW; 2.x writes pt-br, zh-hant.'
\echo 'A value map, no CASE expression to write:'
\echo
CREATE TABLE v1.users (id serial PRIMARY KEY, username varchar(254) NOT NULL, language varchar(10) NOT NULL DEFAULT 'en');
CREATE TABLE v2.users (id integer PRIMARY KEY, username text NOT NULL, language text NOT NULL DEFAULT 'en');
INSERT INTO v1.users (username, language) VALUES ('ana@exemplo.com.br', 'pt_BR'), ('bob@example.org', 'en');
\set ECHO queries
SELECT mailsync.link('users', 'v1.users', 'v2.users', $${
	"id": "id", "username": "username",
	"language": {"from": "language", "map": {"pt_BR": "pt-br", "zh_TW": "zh-hant"}}}$$,
	backfill => true) \gset
UPDATE v2.users SET language = 'zh-hant' WHERE username = 'bob@example.org';
SELECT v1.id, v1.language AS v1_language, v2.language AS v2_language
FROM v1.users v1 JOIN v2.users v2 USING (id) ORDER BY id;
\set ECHO none

-----------------------------------------------------------------------------
-- 4. Aliases: one v1 table in two links (rows and list).
-----------------------------------------------------------------------------
\echo '=== 4. Aliases: one v1 table, two v2 tables ==='
\echo
\echo 'Modoboa 1.x keeps an alias''s recipients in one text column, goto;'
\echo '2.x has an alias table and one recipient row per address. Two links'
\echo 'share v1.aliases: a rows link to v2.alias, and a list link from goto to'
\echo 'v2.recipient (whose alias_id references v2.alias):'
\echo
CREATE TABLE v1.aliases (
	id			serial PRIMARY KEY,
	address		varchar(254) NOT NULL UNIQUE,
	goto		text NOT NULL DEFAULT '',
	enabled		boolean NOT NULL DEFAULT true);
CREATE TABLE v2.alias (
	id			integer PRIMARY KEY,
	address		text NOT NULL UNIQUE,
	enabled		boolean NOT NULL DEFAULT true);
CREATE TABLE v2.recipient (
	id			serial PRIMARY KEY,
	alias_id	integer NOT NULL REFERENCES v2.alias ON DELETE CASCADE,
	address		text NOT NULL,
	UNIQUE (alias_id, address));
INSERT INTO v1.aliases (address, goto) VALUES
	('postmaster@example.org', 'alice@example.org, bob@example.org'),
	('sales@example.org', 'carol@example.org');
\set ECHO queries
SELECT mailsync.link('aliases', 'v1.aliases', 'v2.alias',
	'{"id": "id", "address": "address", "enabled": "enabled"}', backfill => true) \gset
SELECT mailsync.link('alias_recipients', 'v1.aliases', 'v2.recipient',
	'{"alias_id": "id", "address": {"list": "goto"}}', key => '{alias_id}', backfill => true) \gset
SELECT alias_id, address FROM v2.recipient ORDER BY id;
\set ECHO none
\echo 'The 2.x UI adds a recipient; the 1.x list grows (rewritten with the'
\echo 'link''s separator, ","):'
\echo
\set ECHO queries
INSERT INTO v2.recipient (alias_id, address) VALUES (1, 'dave@example.org');
SELECT id, address, goto FROM v1.aliases ORDER BY id;
\set ECHO none
\echo 'The 1.x UI edits that list (bob out, erin in) and creates an alias; v2'
\echo 'gets the alias row first, then its recipients:'
\echo
\set ECHO queries
UPDATE v1.aliases SET goto = 'alice@example.org, dave@example.org, erin@example.org'
WHERE address = 'postmaster@example.org';
INSERT INTO v1.aliases (address, goto) VALUES ('support@example.org', 'frank@example.org,grace@example.org');
SELECT id, address FROM v2.alias ORDER BY id;
SELECT alias_id, address FROM v2.recipient ORDER BY alias_id, id;
\set ECHO none

-----------------------------------------------------------------------------
-- 5. Mailboxes: a large backfill while another session writes.
-----------------------------------------------------------------------------
\echo '=== 5. Mailboxes: 200,000 rows carried over while both sides write ==='
\echo
\echo 'Modoboa 1.x keeps a quota in MB and an is_active flag; 2.x wants bytes'
\echo 'and a state. v2.mailboxes starts empty. From the moment of the link, new'
\echo 'writes are mirrored; the backfill copies the existing rows in batches,'
\echo 'one transaction each (resumable), pausing between batches to leave room'
\echo 'for the applications. A progress line every 5 seconds:'
\echo
\set VERBOSITY default
CREATE TABLE v1.mailboxes (
	id			serial PRIMARY KEY,
	address		varchar(254) NOT NULL,
	quota		integer NOT NULL,
	is_active	boolean NOT NULL DEFAULT true);
CREATE TABLE v2.mailboxes (
	id			integer PRIMARY KEY,
	email		text NOT NULL UNIQUE,
	quota_bytes	bigint NOT NULL,
	state		text NOT NULL);
INSERT INTO v1.mailboxes (address, quota, is_active)
SELECT 'user' || g || '@example.org', 512 * (1 + g % 4), g % 50 <> 0 FROM generate_series(1, 200000) g;
SET client_min_messages = warning;
SELECT mailsync.link('mailboxes', 'v1.mailboxes', 'v2.mailboxes', $${
	"id": "id", "email": "address",
	"quota_bytes": {"up": "legacy.quota::bigint * 1048576",
	                "down": "(current.quota_bytes / 1048576)::integer", "to": "quota"},
	"state": {"up": "CASE WHEN legacy.is_active THEN 'active' ELSE 'disabled' END",
	          "down": "current.state = 'active'", "to": "is_active"}}$$) \gset
RESET client_min_messages;
-- The applications: another session, two seconds into the backfill (its
-- output is indented).
\setenv PGHOST :HOST
\setenv PGPORT :PORT
\setenv PGDATABASE :DBNAME
\setenv PGUSER :USER
\! (sleep 2; psql -X -q -e -P pager=off -P footer=off -v ON_ERROR_STOP=1 -c "UPDATE v1.mailboxes SET quota = 8192 WHERE id = 150001" -c "INSERT INTO v2.mailboxes (email, quota_bytes, state) VALUES ('new.hire@example.org', 2147483648, 'active')" -c "DELETE FROM v1.mailboxes WHERE id = 10" -c "SELECT name, backfill, backfill_position, backfill_percent, problem FROM mailsync.status() WHERE name = 'mailboxes'" 2>&1 | sed -e '/^$/d' -e 's/^/    | /') &
\set ECHO queries
CALL mailsync.backfill('mailboxes', batch_size => 8000, pause => '0.45s');
\set ECHO none
\echo
\echo 'Indented above: the applications, in another session, two seconds in.'
\echo 'They updated a mailbox the backfill had not reached yet, created one in'
\echo 'v2 and deleted one the backfill had copied already. (The backfill found'
\echo 'the updated one in v2 already, identical: 199,999 rows written.) All'
\echo 'three are right, on both sides:'
\echo
\set ECHO queries
SELECT id, address, quota, is_active FROM v1.mailboxes WHERE id IN (10, 150001, 200001);
SELECT id, email, quota_bytes, state FROM v2.mailboxes WHERE id IN (10, 150001, 200001);
\set ECHO none
\echo 'A maintenance script ran with the triggers off (session_replication_role'
\echo '= replica, as restore tools do): it disabled two mailboxes in v1 and'
\echo 'deleted one in v2. verify names each drifted key; repair makes v2 match'
\echo 'v1:'
\echo
SET session_replication_role = replica;
UPDATE v1.mailboxes SET quota = 100, is_active = false WHERE id IN (7, 8);
DELETE FROM v2.mailboxes WHERE id = 9;
SET session_replication_role = origin;
\set ECHO queries
SELECT * FROM mailsync.verify('mailboxes');
SELECT * FROM mailsync.repair('mailboxes', 'legacy');
\set ECHO none

-----------------------------------------------------------------------------
-- 6. The end: verify every link, and status().
-----------------------------------------------------------------------------
\echo '=== 6. End of the day: is everything in sync? ==='
\echo
\echo 'verify compares both tables of every link in full, through its mapping;'
\echo 'status() is the one view to watch:'
\echo
\set ECHO queries
SELECT l.name, count(v.*) AS drifted_keys
FROM mailsync.links l LEFT JOIN LATERAL mailsync.verify(l.name) v ON true
GROUP BY 1 ORDER BY 1;
SELECT name, triggers_ok, backfill, drift, problem FROM mailsync.status();
\set ECHO none
\echo 'No drift, no problem. The cluster is removed now.'
