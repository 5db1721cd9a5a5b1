-- The mailsync demo: a Postal 1.x credentials table and its 2.x
-- successor, kept in sync while both versions of the application run.
\set ECHO none
\pset null '(null)'
\echo
\echo '=== A mail platform in the middle of an upgrade ==='
\echo 'Postal 1.x keeps SMTP/API credentials in v1.credentials. Postal 2.x'
\echo 'renamed "type" to "kind", turned the "hold" flag into a "status" and'
\echo 'addresses every credential by a uuid. Both versions run for a while.'
\echo
\set ECHO queries
CREATE SCHEMA v1;
CREATE SCHEMA v2;
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
\set ECHO none
\echo
\echo '=== 1. Link the two tables ==='
\echo 'The mapping: renames, an expression each way for kind and status, and'
\echo 'a uuid made for every row that arrives from v1. backfill copies the'
\echo 'three existing credentials now.'
\echo
\set ECHO queries
CREATE EXTENSION mailsync;
SELECT mailsync.link('credentials', 'v1.credentials', 'v2.credentials', $${
	"id": "id", "server_id": "server_id", "key": "key", "name": "name",
	"kind":   {"up": "lower(legacy.type)", "down": "upper(current.kind)", "to": "type"},
	"status": {"up": "CASE WHEN legacy.hold THEN 'hold' ELSE 'active' END",
			   "down": "current.status = 'hold'", "to": "hold"},
	"uuid":   {"up": "mailsync.uuid_v7()"},
	"created_at": "created_at", "updated_at": "updated_at"}$$,
	backfill => true);
SELECT id, uuid, server_id, kind, name, status FROM v2.credentials ORDER BY id;
\set ECHO none
\echo
\echo '=== 2. The old admin UI puts a credential on hold (writes v1) ==='
\echo
\set ECHO queries
UPDATE v1.credentials SET hold = true, updated_at = now() WHERE name = 'billing hook';
SELECT id, name, status FROM v2.credentials ORDER BY id;
\set ECHO none
\echo
\echo '=== 3. The new admin UI creates one and releases the hold (writes v2) ==='
\echo 'No id is given: both tables now draw ids from one sequence.'
\echo
\set ECHO queries
INSERT INTO v2.credentials (uuid, server_id, key, kind, name, created_at, updated_at)
VALUES (mailsync.uuid_v7(), 2, 'd8e8fca2dc0f896fd7cb4cb0031ba249', 'smtp', 'new MX', now(), now());
UPDATE v2.credentials SET status = 'active' WHERE name = 'billing hook';
SELECT id, server_id, type, name, hold FROM v1.credentials ORDER BY id;
\set ECHO none
\echo
\echo '=== 4. Deletes travel too, inside the writer''s transaction ==='
\echo
\set ECHO queries
BEGIN;
DELETE FROM v1.credentials WHERE name = 'support desk';
SELECT count(*) AS v2_rows_inside_the_transaction FROM v2.credentials;
ROLLBACK;
SELECT count(*) AS v2_rows_after_rollback FROM v2.credentials;
DELETE FROM v2.credentials WHERE name = 'support desk';
SELECT (SELECT count(*) FROM v1.credentials) AS v1_rows, (SELECT count(*) FROM v2.credentials) AS v2_rows;
\set ECHO none
\echo
\echo '=== 5. Is everything in place? ==='
\echo
\set ECHO queries
SELECT * FROM mailsync.status();
\set ECHO none
\echo
\echo '=== 6. A 1.x dump restored into 2.x without its migration ==='
\echo 'postal.credentials has no uuid column, and the 2.x credentials page'
\echo 'fails. One CALL adds it, fills it in batches, and makes it unique,'
\echo 'NOT NULL and, here, immutable.'
\echo
\set ECHO queries
CREATE SCHEMA postal;
CREATE TABLE postal.credentials (
	id			serial PRIMARY KEY,
	server_id	integer NOT NULL,
	key			varchar(255) NOT NULL,
	type		varchar(255) NOT NULL,
	name		varchar(255),
	hold		boolean NOT NULL DEFAULT false,
	created_at	timestamptz NOT NULL DEFAULT now(),
	updated_at	timestamptz NOT NULL DEFAULT now());
INSERT INTO postal.credentials (server_id, key, type, name)
SELECT 1 + g % 5, md5(g::text), CASE WHEN g % 4 = 0 THEN 'API' ELSE 'SMTP' END, 'credential ' || g
FROM generate_series(1, 25000) g;
CALL mailsync.ensure_uuid('postal.credentials', immutable => true);
SELECT count(*) AS rows, count(DISTINCT uuid) AS distinct_uuids,
	   min(mailsync.uuid_time(uuid)) <= now() AS stamped_now
FROM postal.credentials;
\d postal.credentials
\echo 'Running it again changes nothing:'
CALL mailsync.ensure_uuid('postal.credentials', immutable => true);
\echo 'And a uuid once given cannot change:'
\set ON_ERROR_STOP 0
UPDATE postal.credentials SET uuid = mailsync.uuid_v4() WHERE id = 1;
\set ON_ERROR_STOP 1
\set ECHO none
\echo
\echo '=== 7. A large table: carry 200,000 mailboxes over, then prove it ==='
\echo 'Modoboa 1.x keeps mailboxes with a quota in MB and an is_active flag;'
\echo '2.x wants bytes and a state. The 2.x table starts empty. The backfill'
\echo 'copies in batches of one transaction each, resumable, while the'
\echo 'triggers already keep new writes in sync.'
\echo
\set ECHO queries
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
SELECT mailsync.link('mailboxes', 'v1.mailboxes', 'v2.mailboxes', $${
	"id": "id", "email": "address",
	"quota_bytes": {"up": "legacy.quota::bigint * 1048576", "down": "(current.quota_bytes / 1048576)::integer",
					"to": "quota"},
	"state": {"up": "CASE WHEN legacy.is_active THEN 'active' ELSE 'disabled' END",
			  "down": "current.state = 'active'", "to": "is_active"}}$$);
SELECT missing_in_current, missing_in_legacy, differs FROM mailsync.verify_summary('mailboxes');
CALL mailsync.backfill('mailboxes', batch_size => 20000);
SELECT missing_in_current, missing_in_legacy, differs FROM mailsync.verify_summary('mailboxes');
SELECT name, backfill, backfill_percent, verified_at IS NOT NULL AS verified, drift, problem
FROM mailsync.status() WHERE name = 'mailboxes';
\set ECHO none
\echo
\echo 'A maintenance script with the triggers off (session_replication_role ='
\echo 'replica, as restore tools run) disables two mailboxes in 1.x and deletes'
\echo 'one in 2.x. verify names each drifted key; repair makes 2.x match 1.x.'
\echo
\set ECHO queries
SET session_replication_role = replica;
UPDATE v1.mailboxes SET quota = 100, is_active = false WHERE id IN (7, 8);
DELETE FROM v2.mailboxes WHERE id = 9;
SET session_replication_role = origin;
SELECT * FROM mailsync.verify('mailboxes');
SELECT * FROM mailsync.repair('mailboxes', 'legacy');
SELECT count(*) AS drifted_keys FROM mailsync.verify('mailboxes');
\set ECHO none
\echo
\echo 'Done. The cluster is removed now.'
