--
-- shapes: links whose rows do not pair one to one, on Modoboa-like tables.
-- A document link (one setting a legacy row <-> one jsonb document), with
-- and without a key; a list link (a delimited column <-> child rows) on a
-- table that also has a rows link; value maps; a column whose meaning
-- changed; values that do not fit on the way back; the rule against two
-- links writing one column; backfill and unlink of shape links.
--
SET jit = off;		-- the helpers' small queries would only wait for it
CREATE SCHEMA mb1;	-- Modoboa 1.x
CREATE SCHEMA mb2;	-- Modoboa 2.x

-- what a statement writes to a legacy table, row by row: the operation and
-- the row (the old one for a delete)
CREATE TABLE mb1.audit (tbl text, op text, row_text text);
CREATE FUNCTION mb1.audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO mb1.audit VALUES (TG_TABLE_NAME, TG_OP,
		CASE WHEN TG_OP = 'DELETE' THEN OLD::text ELSE NEW::text END);
	RETURN NULL;
END
$$;
-- shows what was written since the last call, and forgets it
CREATE FUNCTION mb1.written(OUT tbl text, OUT op text, OUT row_text text) RETURNS SETOF record
LANGUAGE plpgsql AS $$
BEGIN
	RETURN QUERY SELECT a.tbl, a.op, a.row_text FROM mb1.audit a ORDER BY 1, 2, 3;
	DELETE FROM mb1.audit;
END
$$;

--------------------------------------------------------------------------
-- 1. A document link without a key: v1's lib_parameter (one row a
-- setting) <-> the one row of v2's core_localconfig, whose _parameters
-- is {"app": {"key": value}}
--------------------------------------------------------------------------
CREATE TABLE mb1.lib_parameter (
	id		serial PRIMARY KEY,
	name	varchar(255) NOT NULL UNIQUE,
	value	varchar(255));
CREATE TABLE mb2.core_localconfig (
	id			serial PRIMARY KEY,
	api_pk		varchar(100),
	_parameters	jsonb NOT NULL DEFAULT '{}');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON mb1.lib_parameter
	FOR EACH ROW EXECUTE FUNCTION mb1.audit();

INSERT INTO mb1.lib_parameter (name, value) VALUES
	('core.ITEMS_PER_PAGE', '30'),			-- a canonical integer: a number
	('core.ENABLE_API_ACCESS', 'yes'),		-- the legacy true
	('core.AUTO_ACCOUNT_REMOVAL', 'no'),	-- the legacy false
	('core.HOSTNAME', NULL),				-- NULL: JSON null
	('core.DEFAULT_TOP_REDIRECTION', 'user'),	-- text: a string
	('core.PASSWORD_SCHEME', '007'),		-- a leading zero: a string
	('core.LOG_OFFSET', '-7'),				-- a negative integer
	('core.RATIO', '1.5'),					-- not an integer: a string
	('core.SECRET_KEY', 's3cr3t'),			-- legacy_only: stays in v1
	('admin.DEFAULT_DOMAIN_QUOTA', '0'),	-- renamed setting
	('admin.ENABLE_DNS_CHECKS', 'no'),		-- value map: "disabled"
	('imap_migration_v1.SERVER', 'imap.example.org'),	-- renamed application
	('core.Mixed', 'x'),					-- not upper case: not synced
	('nodot', 'x'),							-- no application: not synced
	('imap_migration.PORT', '993'),			-- maps back to imap_migration_v1: not synced
	('admin.DEFAULT_MAILBOX_QUOTA', '5');	-- maps back to the renamed setting: not synced
-- v2 has its row already, with entries only it has
INSERT INTO mb2.core_localconfig (api_pk, _parameters)
VALUES ('pk-1', '{"core": {"theme": "dark", "items_per_page": 10}, "ui": {"compact": true}, "version": 2}');

SELECT mailsync.link('settings', 'mb1.lib_parameter', 'mb2.core_localconfig', $${
	"_parameters": {"document": {
		"apps": {"imap_migration_v1": "imap_migration"},
		"keys": {"admin.DEFAULT_DOMAIN_QUOTA": "admin.default_mailbox_quota"},
		"values": {"admin.ENABLE_DNS_CHECKS": {"yes": "enabled", "no": "disabled"}},
		"legacy_only": ["core.SECRET_KEY"],
		"current_only": ["core.theme", "ui.*"]}}}$$,
	backfill => true);
-- stored as written; no key: one document for the whole table
SELECT name, legacy, current, direction, key, legacy_key, shared_sequence, jsonb_pretty(columns)
FROM mailsync.links WHERE name = 'settings';
SELECT tgrelid::regclass AS tbl, tgname, tgenabled FROM pg_trigger
WHERE tgname LIKE 'mailsync%' ORDER BY 1, 2;

-- the document, flattened (a top-level entry that is no object as it is)
CREATE VIEW mb2.settings_doc AS
SELECT c.id, a.key AS app, k.key, coalesce(k.value, a.value) AS value
FROM mb2.core_localconfig c
	 CROSS JOIN LATERAL jsonb_each(c._parameters) AS a
	 LEFT JOIN LATERAL jsonb_each(CASE jsonb_typeof(a.value) WHEN 'object' THEN a.value END) AS k ON true;
-- the backfill at link time: each synced legacy setting typed in the
-- document; v2's own entries kept (items_per_page is synced: v1 wins)
SELECT app, key, value, jsonb_typeof(value) AS type FROM mb2.settings_doc ORDER BY 1, 2;
SELECT * FROM mailsync.verify('settings');

-- what changed in the document since the last call
CREATE TABLE mb2.doc_seen AS SELECT * FROM mb2.settings_doc;
CREATE FUNCTION mb2.doc_changes(OUT path text, OUT before jsonb, OUT after jsonb) RETURNS SETOF record
LANGUAGE plpgsql AS $$
BEGIN
	RETURN QUERY
	SELECT coalesce(n.app, o.app) || coalesce('.' || coalesce(n.key, o.key), ''), o.value, n.value
	FROM mb2.doc_seen o FULL JOIN mb2.settings_doc n
		 ON n.id = o.id AND n.app = o.app AND n.key IS NOT DISTINCT FROM o.key
	WHERE o.app IS NULL OR n.app IS NULL OR o.value IS DISTINCT FROM n.value
	ORDER BY 1;
	DELETE FROM mb2.doc_seen;
	INSERT INTO mb2.doc_seen SELECT * FROM mb2.settings_doc;
END
$$;
TRUNCATE mb1.audit;

--
-- 1a. legacy writes: each changes only its own path
--
UPDATE mb1.lib_parameter SET value = '50' WHERE name = 'core.ITEMS_PER_PAGE';
SELECT * FROM mb2.doc_changes();
UPDATE mb1.lib_parameter SET value = 'yes' WHERE name = 'core.AUTO_ACCOUNT_REMOVAL';
SELECT * FROM mb2.doc_changes();
UPDATE mb1.lib_parameter SET value = 'mail.example.org' WHERE name = 'core.HOSTNAME';
SELECT * FROM mb2.doc_changes();
UPDATE mb1.lib_parameter SET value = NULL WHERE name = 'core.DEFAULT_TOP_REDIRECTION';
SELECT * FROM mb2.doc_changes();
-- the value map: 'yes' is "enabled" for this setting, not true
UPDATE mb1.lib_parameter SET value = 'yes' WHERE name = 'admin.ENABLE_DNS_CHECKS';
SELECT * FROM mb2.doc_changes();
-- renamed setting, renamed application
UPDATE mb1.lib_parameter SET value = '1024' WHERE name = 'admin.DEFAULT_DOMAIN_QUOTA';
UPDATE mb1.lib_parameter SET value = 'imap2.example.org' WHERE name = 'imap_migration_v1.SERVER';
SELECT * FROM mb2.doc_changes();
INSERT INTO mb1.lib_parameter (name, value) VALUES ('core.ROUNDCUBE_URL', 'https://webmail.example.org');
SELECT * FROM mb2.doc_changes();
INSERT INTO mb1.lib_parameter (name, value) VALUES ('imap_migration_v1.PORT', '993');
SELECT * FROM mb2.doc_changes();
DELETE FROM mb1.lib_parameter WHERE name = 'core.LOG_OFFSET';
SELECT * FROM mb2.doc_changes();
-- a rename of the setting moves its path
UPDATE mb1.lib_parameter SET name = 'core.WEBMAIL_URL' WHERE name = 'core.ROUNDCUBE_URL';
SELECT * FROM mb2.doc_changes();
-- several settings in one statement
UPDATE mb1.lib_parameter SET value = CASE name WHEN 'core.ITEMS_PER_PAGE' THEN '25' ELSE 'no' END
WHERE name IN ('core.ITEMS_PER_PAGE', 'core.ENABLE_API_ACCESS');
SELECT * FROM mb2.doc_changes();
-- names that are not synced change nothing: legacy_only, not upper case,
-- no application, one that maps back to another name
UPDATE mb1.lib_parameter SET value = value || '!'
WHERE name IN ('core.SECRET_KEY', 'core.Mixed', 'nodot', 'imap_migration.PORT', 'admin.DEFAULT_MAILBOX_QUOTA');
INSERT INTO mb1.lib_parameter (name, value) VALUES ('core.lower', '1'), ('core.', '1'), ('.X', '1');
DELETE FROM mb1.lib_parameter WHERE name IN ('core.lower', 'core.', '.X');
SELECT * FROM mb2.doc_changes();
SELECT * FROM mailsync.verify('settings');
-- none of these wrote back to v1 (only the statements above, one row each)
SELECT op, count(*) FROM mb1.written() GROUP BY op ORDER BY op;

--
-- 1b. v2 writes: exactly the legacy rows whose value changed
--
-- a v2 form re-saves the whole document with one value changed: one
-- legacy row is written
UPDATE mb2.core_localconfig SET _parameters =
	'{"ui": {"compact": true}, "core": {"ratio": "1.5", "theme": "dark", "hostname": "mail.example.org",
	  "webmail_url": "https://webmail.example.org", "items_per_page": 100, "password_scheme": "007",
	  "enable_api_access": false, "auto_account_removal": true, "default_top_redirection": null},
	  "admin": {"enable_dns_checks": "enabled", "default_mailbox_quota": 1024},
	  "version": 2, "imap_migration": {"port": 993, "server": "imap2.example.org"}}';
SELECT * FROM mb1.written();
SELECT * FROM mb2.doc_changes();
-- re-saved unchanged: nothing is written
UPDATE mb2.core_localconfig SET _parameters = _parameters;
UPDATE mb2.core_localconfig SET api_pk = 'pk-2';
SELECT * FROM mb1.written();
-- each JSON type back to legacy text
UPDATE mb2.core_localconfig SET _parameters = _parameters
	|| jsonb_build_object('core', _parameters->'core' || '{"enable_api_access": true, "hostname": null,
		"items_per_page": -3, "ratio": 2.25, "password_scheme": "sha512", "auto_account_removal": false}')
	|| jsonb_build_object('admin', _parameters->'admin' || '{"enable_dns_checks": "disabled"}');
SELECT * FROM mb1.written();
SELECT name, value FROM mb1.lib_parameter WHERE name LIKE 'core.%' OR name LIKE 'admin.%' ORDER BY name;
-- a new key: a new legacy row; an array or object as JSON text
UPDATE mb2.core_localconfig SET _parameters = jsonb_set(_parameters, '{core,allowed_hosts}', '["a.example", "b.example"]');
UPDATE mb2.core_localconfig SET _parameters = _parameters || '{"newapp": {"flag": true, "opts": {"a": 1}}}';
SELECT * FROM mb1.written();
-- a removed key: its legacy row is deleted
UPDATE mb2.core_localconfig SET _parameters = _parameters #- '{core,webmail_url}';
UPDATE mb2.core_localconfig SET _parameters = _parameters - 'newapp';
SELECT * FROM mb1.written();
-- the document after these v2 writes
SELECT * FROM mb2.doc_changes();
-- current_only entries, non-object entries and keys that do not map
-- back (not lower case) are never written to v1
UPDATE mb2.core_localconfig SET _parameters = _parameters
	|| '{"ui": {"compact": false, "menu": "left"}, "version": 3, "build": "x"}'
	|| jsonb_build_object('core', _parameters->'core' || '{"theme": "light", "Mixed": 1}');
SELECT * FROM mb1.written();
SELECT * FROM mb2.doc_changes();
SELECT * FROM mailsync.verify('settings');

--
-- 1c. TRUNCATE, each way
--
-- legacy: every synced entry leaves the document; the rest stays
TRUNCATE mb1.lib_parameter;
SELECT app, key, value FROM mb2.settings_doc ORDER BY 1, 2;
SELECT * FROM mailsync.verify('settings');
-- v2 writes the settings again: legacy rows come back
UPDATE mb2.core_localconfig SET _parameters = _parameters
	|| '{"admin": {"enable_dns_checks": "enabled"}}'
	|| jsonb_build_object('core', _parameters->'core' || '{"items_per_page": 30, "hostname": "mx.example.org"}');
SELECT name, value FROM mb1.lib_parameter ORDER BY name;
INSERT INTO mb1.lib_parameter (name, value) VALUES ('core.SECRET_KEY', 's3cr3t'), ('nodot', 'x');
TRUNCATE mb1.audit;
-- current: every synced legacy row is deleted; legacy_only and unsynced
-- names stay
TRUNCATE mb2.core_localconfig;
SELECT name, value FROM mb1.lib_parameter ORDER BY name;
SELECT * FROM mailsync.verify('settings');
-- a legacy write with no document row creates one, other columns at
-- their defaults
INSERT INTO mb1.lib_parameter (name, value) VALUES ('core.ITEMS_PER_PAGE', '40');
SELECT api_pk, _parameters FROM mb2.core_localconfig;
SELECT * FROM mailsync.verify('settings');
-- deleting the document row deletes the synced legacy rows
INSERT INTO mb1.lib_parameter (name, value) VALUES ('core.HOSTNAME', 'mx.example.org'), ('admin.ENABLE_DNS_CHECKS', 'yes');
DELETE FROM mb2.core_localconfig;
SELECT name, value FROM mb1.lib_parameter ORDER BY name;
-- inserting a document inserts its settings
INSERT INTO mb2.core_localconfig (api_pk, _parameters)
VALUES ('pk-3', '{"core": {"items_per_page": 30, "enable_api_access": true, "theme": "dark"},
				  "admin": {"enable_dns_checks": "disabled", "default_mailbox_quota": 0},
				  "imap_migration": {"server": "imap.example.org"}}');
SELECT name, value FROM mb1.lib_parameter ORDER BY name;
SELECT * FROM mailsync.verify('settings');
TRUNCATE mb1.audit;

--
-- 1d. drift made with the triggers off, shown by verify, repaired from
-- each side
--
SET session_replication_role = replica;
UPDATE mb1.lib_parameter SET value = '60' WHERE name = 'core.ITEMS_PER_PAGE';
INSERT INTO mb1.lib_parameter (name, value) VALUES ('core.DEFAULT_PASSWORD', 'changeme');
DELETE FROM mb1.lib_parameter WHERE name = 'imap_migration_v1.SERVER';
UPDATE mb2.core_localconfig SET _parameters = jsonb_set(_parameters, '{admin,enable_dns_checks}', '"enabled"');
RESET session_replication_role;
SELECT * FROM mailsync.verify('settings');
SELECT missing_in_current, missing_in_legacy, differs FROM mailsync.verify_summary('settings');
-- legacy is right
SELECT * FROM mailsync.repair('settings', 'legacy');
SELECT * FROM mailsync.verify('settings');
SELECT app, key, value FROM mb2.settings_doc ORDER BY 1, 2;
-- the same drift again, current is right
SET session_replication_role = replica;
UPDATE mb1.lib_parameter SET value = '70' WHERE name = 'core.ITEMS_PER_PAGE';
INSERT INTO mb1.lib_parameter (name, value) VALUES ('core.ONLY_IN_V1', 'x');
DELETE FROM mb1.lib_parameter WHERE name = 'core.DEFAULT_PASSWORD';
UPDATE mb2.core_localconfig SET _parameters = jsonb_set(_parameters, '{core,enable_api_access}', 'false');
RESET session_replication_role;
SELECT * FROM mailsync.verify('settings');
TRUNCATE mb1.audit;
SELECT * FROM mailsync.repair('settings', 'current');
SELECT * FROM mailsync.verify('settings');
SELECT name, value FROM mb1.lib_parameter ORDER BY name;
SELECT * FROM mb1.written();

--
-- 1e. the other options: column names, separator, case, booleans,
-- wildcards (legacy_only in legacy names, current_only in document paths)
--
CREATE TABLE mb1.ext_settings (param varchar(100) NOT NULL UNIQUE, val text);
CREATE TABLE mb2.ext_config (doc jsonb);
SELECT mailsync.link('ext', 'mb1.ext_settings', 'mb2.ext_config', $${"doc": {"document": {
	"name": "param", "value": "val", "separator": "__", "case": "same",
	"booleans": ["True", "False"], "legacy_only": ["internal__*"], "current_only": ["cache.*"]}}}$$);
INSERT INTO mb1.ext_settings VALUES
	('webmail__Theme', 'light'), ('webmail__flag', 'True'), ('webmail__yes', 'yes'),
	('internal__token', 'abc'), ('webmail.x', '1'), ('a.b__c', '2');
SELECT doc FROM mb2.ext_config;
UPDATE mb2.ext_config SET doc = '{"webmail": {"Theme": "dark", "flag": false, "yes": "yes", "new": true},
								  "a.b": {"c": 2}, "cache": {"ttl": 5}, "internal": {"token": "x"}}';
SELECT param, val FROM mb1.ext_settings ORDER BY param;
SELECT * FROM mailsync.verify('ext');
SELECT mailsync.unlink('ext');

SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name = 'settings';

--------------------------------------------------------------------------
-- 2. A document link with a key: v1's per-user settings, one row a user
-- and setting <-> one document a v2 user
--------------------------------------------------------------------------
CREATE TABLE mb1.user_params (
	id		serial PRIMARY KEY,
	user_id	integer NOT NULL,
	name	varchar(255) NOT NULL,
	value	text,
	UNIQUE (user_id, name));
CREATE TABLE mb2.users (
	id			integer PRIMARY KEY,
	username	varchar(254),
	_params		jsonb NOT NULL DEFAULT '{}');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON mb1.user_params
	FOR EACH ROW EXECUTE FUNCTION mb1.audit();
INSERT INTO mb1.user_params (user_id, name, value) VALUES
	(1, 'core.LANGUAGE', 'fr'), (1, 'webmail.MESSAGES_PER_PAGE', '40'), (2, 'core.LANGUAGE', 'de');
INSERT INTO mb2.users VALUES (1, 'alice', '{}'), (2, 'bob', '{"core": {"language": "en"}}');
SELECT mailsync.link('user_settings', 'mb1.user_params', 'mb2.users',
					 '{"id": "user_id", "_params": {"document": {}}}', key => '{id}');
SELECT key, legacy_key, columns FROM mailsync.links WHERE name = 'user_settings';
-- not backfilled yet: verify shows each setting by user and name
SELECT * FROM mailsync.verify('user_settings');
-- a document link's backfill is one statement; its state is recorded
\set VERBOSITY terse
CALL mailsync.backfill('user_settings');
\set VERBOSITY default
SELECT link, direction, state, position, stop_at, rows_done, rows_total, finished_at IS NOT NULL AS finished
FROM mailsync.backfills WHERE link = 'user_settings';
SELECT id, username, _params FROM mb2.users ORDER BY id;
SELECT * FROM mailsync.verify('user_settings');
TRUNCATE mb1.audit;

-- one statement writing the same setting for two users: each its own
INSERT INTO mb1.user_params (user_id, name, value) VALUES (1, 'core.TIMEZONE', 'Europe/Paris'), (2, 'core.TIMEZONE', 'UTC');
SELECT id, _params FROM mb2.users ORDER BY id;
UPDATE mb1.user_params SET value = 'it' WHERE user_id = 2 AND name = 'core.LANGUAGE';
SELECT id, _params FROM mb2.users ORDER BY id;
DELETE FROM mb1.user_params WHERE user_id = 1 AND name = 'core.TIMEZONE';
SELECT id, _params FROM mb2.users ORDER BY id;
TRUNCATE mb1.audit;
-- a v2 write of one user's document writes that user's rows only
UPDATE mb2.users SET _params = jsonb_set(_params, '{core,language}', '"es"') WHERE id = 2;
SELECT * FROM mb1.written();
-- one statement on two documents
UPDATE mb2.users SET _params = jsonb_set(_params, '{webmail}', coalesce(_params->'webmail', '{}') || '{"signature": "--"}');
SELECT * FROM mb1.written();
-- a setting of a user who has no document row yet creates that row,
-- its other columns at their defaults
INSERT INTO mb1.user_params (user_id, name, value) VALUES (3, 'core.LANGUAGE', 'pt'), (3, 'webmail.SIGNATURE', 'Bye');
SELECT id, username, _params FROM mb2.users ORDER BY id;
TRUNCATE mb1.audit;
-- deleting a v2 user deletes its legacy settings, and only those
DELETE FROM mb2.users WHERE id = 3;
SELECT * FROM mb1.written();
SELECT user_id, name, value FROM mb1.user_params ORDER BY user_id, name;
-- a v2 user inserted with settings
INSERT INTO mb2.users VALUES (4, 'dave', '{"core": {"language": "nl"}}');
SELECT * FROM mb1.written();
-- a key change on either side moves the settings
UPDATE mb2.users SET id = 5 WHERE id = 4;
SELECT * FROM mb1.written();
UPDATE mb1.user_params SET user_id = 6 WHERE user_id = 5;
SELECT id, username, _params FROM mb2.users ORDER BY id;
SELECT * FROM mailsync.verify('user_settings');
-- drift: the key of each row is the user and the setting
SET session_replication_role = replica;
UPDATE mb1.user_params SET value = 'en' WHERE user_id = 1 AND name = 'core.LANGUAGE';
UPDATE mb2.users SET _params = '{"core": {"language": "es", "timezone": "UTC"}, "extra": {"x": 1}}' WHERE id = 2;
RESET session_replication_role;
SELECT * FROM mailsync.verify('user_settings');
SELECT * FROM mailsync.repair('user_settings', 'current');
SELECT * FROM mailsync.verify('user_settings');
SELECT user_id, name, value FROM mb1.user_params ORDER BY user_id, name;
TRUNCATE mb1.audit;

--------------------------------------------------------------------------
-- 3. A list link beside a rows link: v1's aliases hold their recipients
-- in a comma-separated "goto"; v2 has alias rows (the rows link) and one
-- recipient row per address (the list link), whose foreign key cascades
--------------------------------------------------------------------------
CREATE TABLE mb1.aliases (
	id		serial PRIMARY KEY,
	address	varchar(254) NOT NULL UNIQUE,
	goto	text,
	enabled	boolean NOT NULL DEFAULT true);
CREATE TABLE mb2.alias (
	id			integer PRIMARY KEY,
	address		varchar(254) NOT NULL UNIQUE,
	enabled		boolean NOT NULL DEFAULT true,
	description	text NOT NULL DEFAULT '');
CREATE TABLE mb2.recipient (
	id			serial PRIMARY KEY,
	alias_id	integer NOT NULL REFERENCES mb2.alias ON DELETE CASCADE ON UPDATE CASCADE,
	address		varchar(254) NOT NULL,
	UNIQUE (alias_id, address));
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON mb1.aliases
	FOR EACH ROW EXECUTE FUNCTION mb1.audit();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON mb2.recipient
	FOR EACH ROW EXECUTE FUNCTION mb1.audit();
INSERT INTO mb1.aliases (address, goto) VALUES
	('postmaster@example.org', 'admin@example.org, ops@example.org'),
	('sales@example.org', 'bob@example.org'),
	('empty@example.org', NULL);
SELECT mailsync.link('aliases', 'mb1.aliases', 'mb2.alias',
					 '{"id": "id", "address": "address", "enabled": "enabled"}', backfill => true);
SELECT mailsync.link('alias_recipients', 'mb1.aliases', 'mb2.recipient',
					 '{"alias_id": "id", "address": {"list": "goto"}}', key => '{alias_id}');
-- the list link's triggers sort after the rows link's: the alias row is
-- there before its recipients
SELECT tgrelid::regclass AS tbl, tgname FROM pg_trigger
WHERE tgname LIKE 'mailsync%alias%' ORDER BY 1, 2;
SELECT name, key, legacy_key, shared_sequence, columns FROM mailsync.links
WHERE name IN ('aliases', 'alias_recipients') ORDER BY name;
-- the list link was not backfilled: verify says so, by parent key
SELECT * FROM mailsync.verify('alias_recipients');
\set VERBOSITY terse
CALL mailsync.backfill('alias_recipients');
\set VERBOSITY default
SELECT link, direction, state, position, stop_at, rows_done, rows_total, finished_at IS NOT NULL AS finished
FROM mailsync.backfills WHERE link = 'alias_recipients';
-- each element in list order
SELECT alias_id, id, address FROM mb2.recipient ORDER BY alias_id, id;
SELECT * FROM mailsync.verify('alias_recipients');
TRUNCATE mb1.audit;

-- v1 adds a recipient: one child row inserted, the others untouched
UPDATE mb1.aliases SET goto = goto || ', new@example.org' WHERE id = 1;
SELECT * FROM mb1.written();
-- v1 removes one: its child row deleted
UPDATE mb1.aliases SET goto = 'admin@example.org, new@example.org' WHERE id = 1;
SELECT * FROM mb1.written();
-- reordered, spaces, tabs and newlines, empty elements, duplicates: the
-- same set of elements, nothing written
UPDATE mb1.aliases SET goto = E' new@example.org ,,\tadmin@example.org,\n admin@example.org ,' WHERE id = 1;
SELECT * FROM mb1.written();
SELECT alias_id, id, address FROM mb2.recipient ORDER BY alias_id, id;
-- several parents in one statement, one of them without a list before
UPDATE mb1.aliases SET goto = CASE id WHEN 2 THEN 'bob@example.org,carol@example.org' ELSE 'x@example.org' END
WHERE id IN (2, 3);
SELECT * FROM mb1.written();
SELECT * FROM mailsync.verify('alias_recipients');

-- v2 deletes a child row: the list loses it, the others keep their
-- place and their text
DELETE FROM mb2.recipient WHERE alias_id = 1 AND address = 'new@example.org';
SELECT id, goto FROM mb1.aliases ORDER BY id;
-- v2 inserts child rows: appended, in the order of their addresses
INSERT INTO mb2.recipient (alias_id, address) VALUES (1, 'zed@example.org'), (1, 'amy@example.org');
SELECT id, goto FROM mb1.aliases ORDER BY id;
-- v2 updates a child's address: the old element leaves, the new one is
-- appended
UPDATE mb2.recipient SET address = 'admin2@example.org' WHERE alias_id = 1 AND address = 'admin@example.org';
SELECT id, goto FROM mb1.aliases ORDER BY id;
-- v2 moves a child to another parent
UPDATE mb2.recipient SET alias_id = 2 WHERE alias_id = 1 AND address = 'amy@example.org';
SELECT id, goto FROM mb1.aliases ORDER BY id;
-- a v2 write that leaves the set of elements as it is leaves the list
-- text byte for byte: the spaces and the duplicate stay
UPDATE mb1.aliases SET goto = 'bob@example.org , carol@example.org,bob@example.org, amy@example.org' WHERE id = 2;
TRUNCATE mb1.audit;
UPDATE mb2.recipient SET address = address WHERE alias_id = 2;
SELECT * FROM mb1.written();
SELECT id, goto FROM mb1.aliases ORDER BY id;
SELECT * FROM mailsync.verify('alias_recipients');

-- a new alias through v1, with its list: the alias row, then its
-- recipients
INSERT INTO mb1.aliases (address, goto) VALUES ('info@example.org', 'a@example.org, b@example.org');
SELECT id, address FROM mb2.alias ORDER BY id;
SELECT alias_id, id, address FROM mb2.recipient ORDER BY alias_id, id;
-- a new alias through v2, then its recipients
INSERT INTO mb2.alias (address) VALUES ('help@example.org');
INSERT INTO mb2.recipient (alias_id, address)
SELECT id, 'c@example.org' FROM mb2.alias WHERE address = 'help@example.org';
SELECT id, address, goto FROM mb1.aliases ORDER BY id;
SELECT * FROM mailsync.verify('alias_recipients');
SELECT * FROM mailsync.verify('aliases');

-- deleting a parent in v1: the alias and its recipients go
DELETE FROM mb1.aliases WHERE address = 'info@example.org';
-- deleting a parent in v2: the cascade deletes the recipients there
DELETE FROM mb2.alias WHERE address = 'help@example.org';
SELECT id, address, goto FROM mb1.aliases ORDER BY id;
SELECT alias_id, id, address FROM mb2.recipient ORDER BY alias_id, id;
-- a key change of the parent, through v1, then through v2: the
-- recipients follow, each row kept (the cascade moves them)
TRUNCATE mb1.audit;
UPDATE mb1.aliases SET id = 100 WHERE id = 1;
SELECT alias_id, id, address FROM mb2.recipient ORDER BY alias_id, id;
UPDATE mb2.alias SET id = 200 WHERE id = 100;
SELECT id, address, goto FROM mb1.aliases ORDER BY id;
SELECT alias_id, id, address FROM mb2.recipient ORDER BY alias_id, id;
SELECT * FROM mb1.written();
SELECT * FROM mailsync.verify('alias_recipients');
SELECT * FROM mailsync.verify('aliases');

-- drift, with the triggers off: lists that differ, a list emptied in v1
-- whose children v2 still has, a v1 alias v2 has neither as alias nor as
-- recipients, recipients in v2 of an alias v1 does not have
SET session_replication_role = replica;
UPDATE mb1.aliases SET goto = 'bob@example.org, dan@example.org' WHERE id = 2;
UPDATE mb1.aliases SET goto = ' , ' WHERE id = 3;
DELETE FROM mb2.recipient WHERE alias_id = 200 AND address = 'zed@example.org';
INSERT INTO mb1.aliases (id, address, goto) VALUES (50, 'new@example.org', 'n@example.org');
INSERT INTO mb2.alias (id, address) VALUES (60, 'v2only@example.org');
INSERT INTO mb2.recipient (alias_id, address) VALUES (60, 'w@example.org');
RESET session_replication_role;
SELECT * FROM mailsync.verify('alias_recipients');
-- v2 is right: each list becomes its children (kept elements in place);
-- the recipients of alias 60 have no list to go to
SELECT * FROM mailsync.repair('alias_recipients', 'current');
SELECT id, goto FROM mb1.aliases ORDER BY id;
SELECT * FROM mailsync.verify('alias_recipients');
-- v1 is right: recipients without a parent in v1 are deleted
SELECT * FROM mailsync.repair('alias_recipients', 'legacy');
SELECT * FROM mailsync.verify('alias_recipients');
SELECT * FROM mailsync.verify('aliases');
SELECT * FROM mailsync.repair('aliases', 'legacy');
SELECT * FROM mailsync.verify('aliases');
SELECT * FROM mailsync.verify('alias_recipients');
SELECT id, address, goto FROM mb1.aliases ORDER BY id;
SELECT alias_id, id, address FROM mb2.recipient ORDER BY alias_id, id;
-- once more, v1 is right: children inserted and deleted
SET session_replication_role = replica;
UPDATE mb1.aliases SET goto = 'bob@example.org, eve@example.org' WHERE id = 2;
DELETE FROM mb2.recipient WHERE alias_id = 3;
RESET session_replication_role;
SELECT * FROM mailsync.verify('alias_recipients');
SELECT * FROM mailsync.repair('alias_recipients', 'legacy');
SELECT * FROM mailsync.verify('alias_recipients');
SELECT alias_id, id, address FROM mb2.recipient ORDER BY alias_id, id;

-- TRUNCATE of the children: every list emptied
TRUNCATE mb2.recipient;
SELECT id, goto FROM mb1.aliases ORDER BY id;
SELECT * FROM mailsync.verify('alias_recipients');
-- TRUNCATE of v1's aliases alone cannot be mirrored: v2's recipient
-- references alias (TRUNCATE is mirrored without CASCADE); nothing changes
UPDATE mb1.aliases SET goto = 'bob@example.org' WHERE id = 2;
TRUNCATE mb1.aliases;
SELECT (SELECT count(*) FROM mb1.aliases) AS v1_aliases, (SELECT count(*) FROM mb2.alias) AS v2_alias,
	   (SELECT count(*) FROM mb2.recipient) AS v2_recipient;
-- all three at once
TRUNCATE mb1.aliases, mb2.alias, mb2.recipient;
SELECT (SELECT count(*) FROM mb1.aliases) AS v1_aliases, (SELECT count(*) FROM mb2.alias) AS v2_alias,
	   (SELECT count(*) FROM mb2.recipient) AS v2_recipient;
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name IN ('aliases', 'alias_recipients') ORDER BY name;
TRUNCATE mb1.audit;

-- a list link alone on its tables, with its own separator: v1 mailbox
-- forwards "a;b" <-> one v2 row per target
CREATE TABLE mb1.forwards (id integer PRIMARY KEY, dest varchar(1000));
CREATE TABLE mb2.forward_target (
	forward_id	integer NOT NULL,
	target		varchar(254) NOT NULL,
	PRIMARY KEY (forward_id, target));
SELECT mailsync.link('forwards', 'mb1.forwards', 'mb2.forward_target',
					 '{"forward_id": "id", "target": {"list": "dest", "separator": ";"}}', key => '{forward_id}');
-- (a comma is no separator here)
INSERT INTO mb1.forwards VALUES (1, 'a@example.org; b@example.org;;'), (2, 'c@example.org,d@example.org'), (3, NULL), (4, '');
SELECT * FROM mb2.forward_target ORDER BY 1, 2;
-- a v2 row of a forward v1 does not have is not mirrored
INSERT INTO mb2.forward_target VALUES (9, 'z@example.org'), (1, 'e@example.org');
SELECT * FROM mb1.forwards ORDER BY id;
SELECT * FROM mailsync.verify('forwards');
-- TRUNCATE of v1: every child row goes
TRUNCATE mb1.forwards;
SELECT count(*) AS v2_rows FROM mb2.forward_target;
SELECT * FROM mailsync.verify('forwards');
-- TRUNCATE of v2: lists with elements emptied, NULL stays NULL
INSERT INTO mb1.forwards VALUES (1, 'a@example.org;b@example.org'), (2, NULL), (3, ' ; ');
TRUNCATE mb2.forward_target;
SELECT id, dest, dest IS NULL AS is_null FROM mb1.forwards ORDER BY id;
SELECT * FROM mailsync.verify('forwards');
-- unlink: its triggers go, the rows stay and are no longer mirrored
UPDATE mb1.forwards SET dest = 'x@example.org' WHERE id = 2;
SELECT mailsync.unlink('forwards');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgname LIKE 'mailsync%forwards%';
SELECT count(*) AS links FROM mailsync.links WHERE name = 'forwards';
SELECT (SELECT count(*) FROM mb1.forwards) AS v1_rows, (SELECT count(*) FROM mb2.forward_target) AS v2_rows;
UPDATE mb1.forwards SET dest = 'y@example.org' WHERE id = 2;
SELECT * FROM mb2.forward_target ORDER BY 1, 2;

--------------------------------------------------------------------------
-- 4. Value maps, a column whose meaning changed, and values that do not
-- fit on the way back
--------------------------------------------------------------------------
-- v2 spells languages as BCP 47 tags, and widened the username
CREATE TABLE mb1.core_user (
	id			serial PRIMARY KEY,
	username	varchar(20) NOT NULL UNIQUE,
	language	varchar(10) NOT NULL DEFAULT 'en');
CREATE TABLE mb2.core_user (
	id			integer PRIMARY KEY,
	username	varchar(255) NOT NULL UNIQUE,
	language	varchar(10) NOT NULL DEFAULT 'en');
SELECT mailsync.link('users', 'mb1.core_user', 'mb2.core_user', $${
	"id": "id", "username": "username",
	"language": {"from": "language", "map": {"pt_BR": "pt-br", "zh_TW": "zh-hant"}}}$$);
-- stored as written
SELECT columns FROM mailsync.links WHERE name = 'users';
INSERT INTO mb1.core_user (username, language) VALUES ('ana', 'pt_BR'), ('wei', 'zh_TW'), ('tom', 'en'), ('jean', 'fr');
SELECT id, username, language FROM mb2.core_user ORDER BY id;
INSERT INTO mb2.core_user (id, username, language) VALUES (10, 'lin', 'zh-hant'), (11, 'rui', 'pt-br'), (12, 'max', 'de');
UPDATE mb2.core_user SET language = 'pt-br' WHERE username = 'tom';
UPDATE mb2.core_user SET language = 'en' WHERE username = 'wei';
UPDATE mb1.core_user SET language = 'zh_TW' WHERE username = 'jean';
SELECT 'v1' AS side, id, username, language FROM mb1.core_user
UNION ALL SELECT 'v2', id, username, language FROM mb2.core_user ORDER BY 1, 2;
SELECT * FROM mailsync.verify('users');
SELECT * FROM mailsync.verify('users', 'down');
-- drift: verify compares through the map, each way
SET session_replication_role = replica;
UPDATE mb2.core_user SET language = 'fr' WHERE username = 'ana';
UPDATE mb1.core_user SET language = 'pt_BR' WHERE username = 'max';
RESET session_replication_role;
SELECT * FROM mailsync.verify('users');
SELECT * FROM mailsync.verify('users', 'down');
SELECT * FROM mailsync.repair('users', 'legacy');
SELECT * FROM mailsync.verify('users');
SELECT id, username, language FROM mb2.core_user WHERE username IN ('ana', 'max') ORDER BY id;

-- a username too long for v1, written through v2: the writer's statement
-- fails with PostgreSQL's own error, in the context of the link; neither
-- table changes.  error_of(sql) shows the SQLSTATE, the message and the
-- lines of the context that name a link.
CREATE FUNCTION mb1.error_of(sql text, OUT state text, OUT message text, OUT context text)
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE sql;
	state := 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, context = PG_EXCEPTION_CONTEXT;
	SELECT string_agg(l, ' / ') INTO context
	FROM regexp_split_to_table(context, E'\n') AS l WHERE l LIKE 'mailsync link%';
END
$$;
CREATE VIEW mb1.both_users AS
SELECT md5(string_agg(u::text, ',' ORDER BY u.id)) AS v1, (SELECT md5(string_agg(u::text, ',' ORDER BY u.id)) FROM mb2.core_user u) AS v2
FROM mb1.core_user u;
CREATE TEMP TABLE users_before AS SELECT * FROM mb1.both_users;
SELECT * FROM mb1.error_of($$INSERT INTO mb2.core_user (id, username) VALUES (20, 'a-very-long-user-name@example.org')$$);
SELECT * FROM mb1.error_of($$UPDATE mb2.core_user SET username = 'jean.dupont@example.org' WHERE username = 'jean'$$);
-- a statement of several rows, one of which does not fit
SELECT * FROM mb1.error_of($$UPDATE mb2.core_user SET username = username || CASE WHEN id = 12 THEN '-with-a-long-suffix' ELSE '2' END$$);
SELECT n.v1 = b.v1 AS v1_unchanged, n.v2 = b.v2 AS v2_unchanged FROM mb1.both_users n, users_before b;
-- the same at the top level
\set VERBOSITY terse
UPDATE mb2.core_user SET username = 'jean.dupont@example.org' WHERE username = 'jean';
\set VERBOSITY default
SELECT n.v1 = b.v1 AS v1_unchanged, n.v2 = b.v2 AS v2_unchanged FROM mb1.both_users n, users_before b;
-- what fits, goes
UPDATE mb2.core_user SET username = 'jean.d' WHERE username = 'jean';
SELECT id, username FROM mb1.core_user WHERE id = 4;
-- the same for a document: a setting too long for v1's varchar(255)
CREATE TEMP TABLE settings_before AS
SELECT (SELECT md5(string_agg(p::text, ',' ORDER BY p.id)) FROM mb1.lib_parameter p) AS v1,
	   (SELECT md5(string_agg(c::text, ',' ORDER BY c.id)) FROM mb2.core_localconfig c) AS v2;
SELECT * FROM mb1.error_of($$UPDATE mb2.core_localconfig SET _parameters = jsonb_set(_parameters, '{core,hostname}', to_jsonb(repeat('h', 300)))$$);
SELECT (SELECT md5(string_agg(p::text, ',' ORDER BY p.id)) FROM mb1.lib_parameter p) = b.v1 AS v1_unchanged,
	   (SELECT md5(string_agg(c::text, ',' ORDER BY c.id)) FROM mb2.core_localconfig c) = b.v2 AS v2_unchanged
FROM settings_before b;

-- v1's domain quota became v2's default_mailbox_quota; v2's own quota
-- (the domain's total) has no v1 column and is never written to v1
CREATE TABLE mb1.admin_domain (
	id		serial PRIMARY KEY,
	name	varchar(100) NOT NULL UNIQUE,
	quota	integer NOT NULL DEFAULT 0);
CREATE TABLE mb2.admin_domain (
	id						integer PRIMARY KEY,
	name					varchar(100) NOT NULL UNIQUE,
	quota					integer NOT NULL DEFAULT 0,
	default_mailbox_quota	integer NOT NULL DEFAULT 0);
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON mb1.admin_domain
	FOR EACH ROW EXECUTE FUNCTION mb1.audit();
SELECT mailsync.link('domains', 'mb1.admin_domain', 'mb2.admin_domain',
					 '{"id": "id", "name": "name", "default_mailbox_quota": "quota"}');
INSERT INTO mb1.admin_domain (name, quota) VALUES ('example.org', 100), ('example.net', 0);
SELECT id, name, quota, default_mailbox_quota FROM mb2.admin_domain ORDER BY id;
TRUNCATE mb1.audit;
UPDATE mb2.admin_domain SET quota = 5000 WHERE name = 'example.org';
SELECT * FROM mb1.written();
UPDATE mb2.admin_domain SET default_mailbox_quota = 200 WHERE name = 'example.org';
SELECT * FROM mb1.written();
INSERT INTO mb2.admin_domain (id, name, quota, default_mailbox_quota) VALUES (30, 'example.com', 9000, 50);
SELECT id, name, quota FROM mb1.admin_domain ORDER BY id;
SELECT id, name, quota, default_mailbox_quota FROM mb2.admin_domain ORDER BY id;
SELECT * FROM mailsync.verify('domains');
TRUNCATE mb1.audit;

--------------------------------------------------------------------------
-- 5. One table in several links
--------------------------------------------------------------------------
-- mb1.aliases is in the rows link "aliases" and the list link
-- "alias_recipients" (above): each writes columns the other does not.
-- A third link that would write aliases.address one way only, which
-- "aliases" writes already, is refused, and leaves nothing behind
CREATE TABLE mb2.alias_import (id integer PRIMARY KEY, addr varchar(254) NOT NULL);
SELECT try($$SELECT mailsync.link('alias_import', 'mb1.aliases', 'mb2.alias_import',
		   '{"id": "id", "addr": {"down": "current.addr", "to": "address"}}', direction => 'down')$$);
-- the same with a rename, synced down only
SELECT try($$SELECT mailsync.link('alias_import', 'mb1.aliases', 'mb2.alias_import',
		   '{"id": "id", "addr": "address"}', direction => 'down')$$);
-- a list link writing aliases.goto from another child table, one way
CREATE TABLE mb2.recipient_import (alias_id integer NOT NULL, address text NOT NULL);
SELECT try($$SELECT mailsync.link('recipient_import', 'mb1.aliases', 'mb2.recipient_import',
		   '{"alias_id": "id", "address": {"list": "goto"}}', key => '{alias_id}', direction => 'down')$$);
SELECT count(*) AS triggers FROM pg_trigger WHERE tgname LIKE 'mailsync%import%';
SELECT count(*) AS links FROM mailsync.links WHERE name LIKE '%import';
SELECT pg_get_expr(adbin, adrelid) AS id_default FROM pg_attrdef WHERE adrelid = 'mb2.alias_import'::regclass;
-- allowed: a link that syncs aliases.address both ways, as "aliases" does
BEGIN;
SELECT mailsync.link('alias_import', 'mb1.aliases', 'mb2.alias_import', '{"id": "id", "addr": "address"}');
SELECT name FROM mailsync.links WHERE legacy = 'mb1.aliases'::regclass ORDER BY name;
ROLLBACK;

-- child rows written through v2 before their parent reached v1 (here: an
-- alias and its recipients written while the triggers were off) are kept
-- when the parent arrives: repair of the rows link inserts the v1 alias,
-- and the list link adds the waiting recipients to its list instead of
-- deleting them
SET session_replication_role = replica;
INSERT INTO mb2.alias (id, address) VALUES (900, 'late@example.org');
INSERT INTO mb2.recipient (alias_id, address) VALUES (900, 'w1@example.org'), (900, 'w2@example.org');
RESET session_replication_role;
SELECT problem, current FROM mailsync.verify('alias_recipients') WHERE key = '{"alias_id": 900}';
SELECT * FROM mailsync.repair('aliases', 'current');
SELECT id, address, goto FROM mb1.aliases WHERE id = 900;
SELECT alias_id, address FROM mb2.recipient WHERE alias_id = 900 ORDER BY address;
SELECT count(*) AS drift FROM mailsync.verify('alias_recipients');
SELECT count(*) AS drift FROM mailsync.verify('aliases');
-- a v1 alias inserted with a list of its own and a waiting recipient: both
SET session_replication_role = replica;
INSERT INTO mb2.alias (id, address) VALUES (901, 'later@example.org');
INSERT INTO mb2.recipient (alias_id, address) VALUES (901, 'w3@example.org');
RESET session_replication_role;
INSERT INTO mb1.aliases (id, address, goto) VALUES (901, 'later@example.org', 'x1@example.org, w3@example.org, x2@example.org');
INSERT INTO mb1.aliases (id, address, goto) VALUES (902, 'new@example.org', 'y@example.org');
SELECT id, goto FROM mb1.aliases WHERE id IN (901, 902) ORDER BY id;
SELECT alias_id, address FROM mb2.recipient WHERE alias_id IN (901, 902) ORDER BY alias_id, address;
SELECT count(*) AS drift FROM mailsync.verify('alias_recipients');
DELETE FROM mb1.aliases WHERE id IN (900, 901, 902);
SELECT count(*) AS left_over FROM mb2.recipient WHERE alias_id IN (900, 901, 902);

--------------------------------------------------------------------------
-- 6. Unlink of shape links: triggers gone, rows kept
--------------------------------------------------------------------------
SELECT name, triggers_ok, problem FROM mailsync.status() ORDER BY name;
SELECT mailsync.unlink('alias_recipients');
SELECT mailsync.unlink('settings');
SELECT mailsync.unlink('user_settings');
SELECT tgrelid::regclass AS tbl, tgname FROM pg_trigger WHERE tgname LIKE 'mailsync~%' ORDER BY 1, 2;
SELECT (SELECT count(*) FROM mb1.lib_parameter) AS settings, (SELECT count(*) FROM mb2.core_localconfig) AS documents,
	   (SELECT count(*) FROM mb1.user_params) AS user_settings, (SELECT count(*) FROM mb2.users) AS users;
SELECT mailsync.unlink('aliases');
SELECT mailsync.unlink('users');
SELECT mailsync.unlink('domains');
SELECT count(*) AS links FROM mailsync.links;
SELECT count(*) AS triggers FROM pg_trigger WHERE tgname LIKE 'mailsync%';
RESET jit;
SET client_min_messages = warning;
DROP SCHEMA mb1 CASCADE;
DROP SCHEMA mb2 CASCADE;
RESET client_min_messages;
