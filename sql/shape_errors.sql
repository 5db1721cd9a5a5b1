--
-- shape_errors: every bad input of the list, document and value map
-- mappings given to link.  Each is refused with its SQLSTATE, a message
-- naming what is wrong and, where mailsync gives one, a hint; after each,
-- no link row and no trigger is left.
--
CREATE SCHEMA se1;	-- legacy
CREATE SCHEMA se2;	-- current

-- settings, per user (document with a key) and for the whole site (no key)
CREATE TABLE se1.params (
	id		serial PRIMARY KEY,
	user_id	integer NOT NULL,
	name	varchar(255) NOT NULL,
	value	text,
	n		integer,
	UNIQUE (user_id, name));
CREATE TABLE se1.site_params (name text NOT NULL UNIQUE, value varchar(100), n integer, j jsonb);
CREATE TABLE se1.params_by_name (user_id integer NOT NULL, name text NOT NULL UNIQUE, value text);
CREATE TABLE se1.params_no_index (name text NOT NULL, value text);
CREATE TABLE se1.params_null_name (name text UNIQUE, value text);
CREATE TABLE se2.users (
	id			integer PRIMARY KEY,
	_params		jsonb NOT NULL DEFAULT '{}',
	j			json,
	t			text,
	n			integer);
CREATE TABLE se2.users_no_index (id integer NOT NULL, _params jsonb);
CREATE TABLE se1.site_params_must (name text NOT NULL UNIQUE, value text, must integer NOT NULL);
CREATE TABLE se2.config (_params jsonb, other jsonb, must integer NOT NULL);
CREATE TABLE se2.config_ok (_params jsonb, other jsonb);
-- lists
CREATE TABLE se1.aliases (id integer PRIMARY KEY, goto text, n integer, address text);
CREATE TABLE se1.aliases_no_index (id integer NOT NULL, goto text);
CREATE TABLE se2.recipient (alias_id integer NOT NULL, address text NOT NULL, n integer, other text);
CREATE TABLE se2.recipient_must (alias_id integer NOT NULL, address text NOT NULL, must integer NOT NULL);
-- value maps
CREATE TABLE se1.users (id integer PRIMARY KEY, language varchar(10), n integer);
CREATE TABLE se2.core_user (id integer PRIMARY KEY, language varchar(10), n integer);

-- what a case may leave behind
CREATE TEMP VIEW se_left AS
SELECT (SELECT count(*) FROM mailsync.links) AS links,
	   (SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal
		AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace IN ('se1'::regnamespace, 'se2'::regnamespace))) AS triggers;

CREATE TEMP TABLE cases (n serial, what text, sql text);
INSERT INTO cases (what, sql) VALUES
-- document options
('document: an unknown option',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"sep": "."}}}')$$),
('document: "document" is not an object',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": true}}')$$),
('document: a key beside "document"',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {}, "separator": "."}}')$$),
('document: separator is a number',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"separator": 1}}}')$$),
('document: separator is empty',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"separator": ""}}}')$$),
('document: case is neither upper nor same',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"case": "lower"}}}')$$),
('document: case is not a string',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"case": true}}}')$$),
('document: booleans is a string',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"booleans": "yes"}}}')$$),
('document: booleans has one string',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"booleans": ["yes"]}}}')$$),
('document: booleans are two numbers',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"booleans": [1, 0]}}}')$$),
('document: booleans are the same string twice',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"booleans": ["y", "y"]}}}')$$),
('document: apps is not an object',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"apps": ["admin", "core"]}}}')$$),
('document: apps renames to a number',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"apps": {"admin": 1}}}}')$$),
('document: apps renames to an empty name',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"apps": {"admin": ""}}}}')$$),
('document: apps renames two applications to one',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"apps": {"admin": "core", "general": "core"}}}}')$$),
('document: keys is not an object',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"keys": "admin.X"}}}')$$),
('document: a keys entry whose legacy name has no separator',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"keys": {"QUOTA": "admin.quota"}}}}')$$),
('document: a keys entry whose document path has no dot',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"keys": {"admin.QUOTA": "quota"}}}}')$$),
('document: a keys entry whose document path starts with the dot',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"keys": {"admin.QUOTA": ".quota"}}}}')$$),
('document: a keys entry renaming to a number',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"keys": {"admin.QUOTA": 5}}}}')$$),
('document: keys renames two settings to one',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"keys": {"admin.QUOTA": "core.quota", "admin.MAX_QUOTA": "core.quota"}}}}')$$),
('document: values is not an object',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"values": ["yes", "no"]}}}')$$),
('document: the value map of a setting is not an object',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"values": {"admin.DNS": "enabled"}}}}')$$),
('document: the value map of a setting is not one to one',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"values": {"admin.DNS": {"yes": "on", "1": "on"}}}}}')$$),
('document: legacy_only is a string',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"legacy_only": "core.SECRET_KEY"}}}')$$),
('document: legacy_only holds a number',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"legacy_only": ["core.SECRET_KEY", 1]}}}')$$),
('document: current_only is an object',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"current_only": {"ui": "*"}}}}')$$),
('document: current_only holds null',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"current_only": [null]}}}')$$),
-- document columns
('document: the name column does not exist',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"name": "param"}}}')$$),
('document: the value column does not exist',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"value": "val"}}}')$$),
('document: name is an empty string',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"name": ""}}}')$$),
('document: value is a number',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"value": 2}}}')$$),
('document: the name column is an integer',
 $$SELECT mailsync.link('x', 'se1.params', 'se2.users', '{"id": "user_id", "_params": {"document": {"name": "n"}}}', key => '{id}')$$),
('document: the value column is an integer',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"value": "n"}}}')$$),
('document: the value column is jsonb',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"value": "j"}}}')$$),
('document: one column as name and value',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {"value": "name"}}}')$$),
('document: the document column does not exist',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config_ok', '{"params": {"document": {}}}')$$),
('document: the document column is json, not jsonb',
 $$SELECT mailsync.link('x', 'se1.params', 'se2.users', '{"id": "user_id", "j": {"document": {}}}', key => '{id}')$$),
('document: the document column is text',
 $$SELECT mailsync.link('x', 'se1.params', 'se2.users', '{"id": "user_id", "t": {"document": {}}}', key => '{id}')$$),
('document: the name column allows NULL',
 $$SELECT mailsync.link('x', 'se1.params_null_name', 'se2.config_ok', '{"_params": {"document": {}}}')$$),
('document: legacy has no unique index on the name',
 $$SELECT mailsync.link('x', 'se1.params_no_index', 'se2.config_ok', '{"_params": {"document": {}}}')$$),
('document: legacy''s unique index is on the name alone, not (key, name)',
 $$SELECT mailsync.link('x', 'se1.params_by_name', 'se2.users', '{"id": "user_id", "_params": {"document": {}}}', key => '{id}')$$),
('document: legacy''s unique index is on (key, name), the link has no key',
 $$SELECT mailsync.link('x', 'se1.params', 'se2.config_ok', '{"_params": {"document": {}}}')$$),
('document: current has no unique index on the key',
 $$SELECT mailsync.link('x', 'se1.params', 'se2.users_no_index', '{"id": "user_id", "_params": {"document": {}}}', key => '{id}')$$),
('document: the key is not mapped',
 $$SELECT mailsync.link('x', 'se1.params', 'se2.users', '{"_params": {"document": {}}}', key => '{id}')$$),
('document: the key is the document column',
 $$SELECT mailsync.link('x', 'se1.params', 'se2.users', '{"_params": {"document": {}}}', key => '{_params}')$$),
('document: the key is the legacy name column',
 $$SELECT mailsync.link('x', 'se1.params', 'se2.users', '{"id": "name", "_params": {"document": {}}}', key => '{id}')$$),
('document: a NOT NULL current column without default the link does not write',
 $$SELECT mailsync.link('x', 'se1.site_params', 'se2.config', '{"_params": {"document": {}}}')$$),
('document: a NOT NULL legacy column without default the link does not write',
 $$SELECT mailsync.link('x', 'se1.site_params_must', 'se2.config_ok', '{"_params": {"document": {}}}')$$),
-- lists
('list: no key',
 $$SELECT mailsync.link('x', 'se1.aliases', 'se2.recipient', '{"address": {"list": "goto"}}')$$),
('list: the list column does not exist',
 $$SELECT mailsync.link('x', 'se1.aliases', 'se2.recipient', '{"alias_id": "id", "address": {"list": "recipients"}}', key => '{alias_id}')$$),
('list: the list column is an integer',
 $$SELECT mailsync.link('x', 'se1.aliases', 'se2.recipient', '{"alias_id": "id", "address": {"list": "n"}}', key => '{alias_id}')$$),
('list: "list" is not a string',
 $$SELECT mailsync.link('x', 'se1.aliases', 'se2.recipient', '{"alias_id": "id", "address": {"list": ["goto"]}}', key => '{alias_id}')$$),
('list: the element column does not exist',
 $$SELECT mailsync.link('x', 'se1.aliases', 'se2.recipient', '{"alias_id": "id", "addr": {"list": "goto"}}', key => '{alias_id}')$$),
('list: the element column is an integer',
 $$SELECT mailsync.link('x', 'se1.aliases', 'se2.recipient', '{"alias_id": "id", "n": {"list": "goto"}}', key => '{alias_id}')$$),
('list: separator is empty',
 $$SELECT mailsync.link('x', 'se1.aliases', 'se2.recipient', '{"alias_id": "id", "address": {"list": "goto", "separator": ""}}', key => '{alias_id}')$$),
('list: separator is a number',
 $$SELECT mailsync.link('x', 'se1.aliases', 'se2.recipient', '{"alias_id": "id", "address": {"list": "goto", "separator": 1}}', key => '{alias_id}')$$),
('list: an unknown key beside "list"',
 $$SELECT mailsync.link('x', 'se1.aliases', 'se2.recipient', '{"alias_id": "id", "address": {"list": "goto", "trim": true}}', key => '{alias_id}')$$),
('list: the parent key has no unique index in legacy',
 $$SELECT mailsync.link('x', 'se1.aliases_no_index', 'se2.recipient', '{"alias_id": "id", "address": {"list": "goto"}}', key => '{alias_id}')$$),
('list: the key is the element column',
 $$SELECT mailsync.link('x', 'se1.aliases', 'se2.recipient', '{"address": {"list": "goto"}}', key => '{address}')$$),
('list: the key maps to the list column',
 $$SELECT mailsync.link('x', 'se1.aliases', 'se2.recipient', '{"alias_id": "goto", "address": {"list": "goto"}}', key => '{alias_id}')$$),
('list: a NOT NULL child column without default the link does not write',
 $$SELECT mailsync.link('x', 'se1.aliases', 'se2.recipient_must', '{"alias_id": "id", "address": {"list": "goto"}}', key => '{alias_id}')$$),
-- a shape and other mappings
('two shapes in one link: two lists',
 $$SELECT mailsync.link('x', 'se1.aliases', 'se2.recipient', '{"alias_id": "id", "address": {"list": "goto"}, "other": {"list": "address"}}', key => '{alias_id}')$$),
('two shapes in one link: a list and a document',
 $$SELECT mailsync.link('x', 'se1.params', 'se2.users', '{"id": "user_id", "_params": {"document": {}}, "t": {"list": "value"}}', key => '{id}')$$),
('an expression mapping beside a list',
 $$SELECT mailsync.link('x', 'se1.aliases', 'se2.recipient', '{"alias_id": "id", "address": {"list": "goto"}, "n": {"up": "legacy.n", "down": "current.n", "to": "n"}}', key => '{alias_id}')$$),
('a one-way expression beside a document',
 $$SELECT mailsync.link('x', 'se1.params', 'se2.users', '{"id": "user_id", "_params": {"document": {}}, "n": {"up": "1"}}', key => '{id}')$$),
('a value map beside a document',
 $$SELECT mailsync.link('x', 'se1.params', 'se2.users', '{"id": "user_id", "_params": {"document": {}}, "n": {"from": "n", "map": {"1": 2}}}', key => '{id}')$$),
('a rename of a column that is not the key beside a list',
 $$SELECT mailsync.link('x', 'se1.aliases', 'se2.recipient', '{"alias_id": "id", "address": {"list": "goto"}, "n": "n"}', key => '{alias_id}')$$),
('a rename of a column that is not the key beside a document',
 $$SELECT mailsync.link('x', 'se1.params', 'se2.users', '{"id": "user_id", "_params": {"document": {}}, "n": "n"}', key => '{id}')$$),
-- value maps
('value map: no "from"',
 $$SELECT mailsync.link('x', 'se1.users', 'se2.core_user', '{"id": "id", "language": {"map": {"pt_BR": "pt-br"}}}')$$),
('value map: no "map"',
 $$SELECT mailsync.link('x', 'se1.users', 'se2.core_user', '{"id": "id", "language": {"from": "language"}}')$$),
('value map: "map" is an array',
 $$SELECT mailsync.link('x', 'se1.users', 'se2.core_user', '{"id": "id", "language": {"from": "language", "map": ["pt_BR", "pt-br"]}}')$$),
('value map: "from" is a number',
 $$SELECT mailsync.link('x', 'se1.users', 'se2.core_user', '{"id": "id", "language": {"from": 1, "map": {"pt_BR": "pt-br"}}}')$$),
('value map: an empty map',
 $$SELECT mailsync.link('x', 'se1.users', 'se2.core_user', '{"id": "id", "language": {"from": "language", "map": {}}}')$$),
('value map: two legacy values to one current value',
 $$SELECT mailsync.link('x', 'se1.users', 'se2.core_user', '{"id": "id", "language": {"from": "language", "map": {"pt_BR": "pt", "pt_PT": "pt"}}}')$$),
('value map: a value that is an object',
 $$SELECT mailsync.link('x', 'se1.users', 'se2.core_user', '{"id": "id", "language": {"from": "language", "map": {"pt_BR": {"tag": "pt-br"}}}}')$$),
('value map: a value that is an array',
 $$SELECT mailsync.link('x', 'se1.users', 'se2.core_user', '{"id": "id", "language": {"from": "language", "map": {"pt_BR": ["pt-br"]}}}')$$),
('value map: a value that is null',
 $$SELECT mailsync.link('x', 'se1.users', 'se2.core_user', '{"id": "id", "language": {"from": "language", "map": {"pt_BR": null}}}')$$),
('value map: with "up" and "down"',
 $$SELECT mailsync.link('x', 'se1.users', 'se2.core_user', '{"id": "id", "language": {"from": "language", "map": {"pt_BR": "pt-br"}, "up": "lower(legacy.language)", "down": "current.language"}}')$$),
('value map: with "to"',
 $$SELECT mailsync.link('x', 'se1.users', 'se2.core_user', '{"id": "id", "language": {"from": "language", "map": {"pt_BR": "pt-br"}, "to": "language"}}')$$),
('value map: "from" names no legacy column',
 $$SELECT mailsync.link('x', 'se1.users', 'se2.core_user', '{"id": "id", "language": {"from": "lang", "map": {"pt_BR": "pt-br"}}}')$$),
('value map: a map value that does not fit the column type',
 $$SELECT mailsync.link('x', 'se1.users', 'se2.core_user', '{"id": "id", "n": {"from": "n", "map": {"1": "one"}}}')$$),
('value map: on the key',
 $$SELECT mailsync.link('x', 'se1.users', 'se2.core_user', '{"id": {"from": "id", "map": {"1": 2}}}')$$);

CREATE FUNCTION pg_temp.run_cases(OUT n integer, OUT what text, OUT result text, OUT left_behind text)
RETURNS SETOF record LANGUAGE plpgsql AS $$
DECLARE
	c record;
BEGIN
	FOR c IN SELECT * FROM cases ORDER BY cases.n LOOP
		n := c.n;
		what := c.what;
		result := try(c.sql);
		SELECT CASE WHEN l.links = 0 AND l.triggers = 0 THEN 'nothing'
					ELSE format('%s links, %s triggers', l.links, l.triggers) END
		INTO left_behind FROM se_left l;
		RETURN NEXT;
	END LOOP;
END
$$;
\pset format unaligned
\pset tuples_only on
SELECT format(E'%s. %s\n    %s\n    left behind: %s', n, what, result, left_behind) FROM pg_temp.run_cases();
\pset format aligned
\pset tuples_only off

-- the same mappings, written right, are accepted (so each case above
-- fails for the reason it names)
SELECT mailsync.link('ok_doc', 'se1.params', 'se2.users', $${"id": "user_id", "_params": {"document": {
	"separator": ".", "case": "same", "booleans": ["1", "0"], "apps": {"admin": "core"},
	"keys": {"admin.QUOTA": "core.quota"}, "values": {"admin.DNS": {"yes": "on", "no": "off"}},
	"legacy_only": ["core.SECRET_KEY"], "current_only": ["ui.*"]}}}$$, key => '{id}');
SELECT mailsync.link('ok_site', 'se1.site_params', 'se2.config_ok', '{"_params": {"document": {}}}');
SELECT mailsync.link('ok_list', 'se1.aliases', 'se2.recipient',
					 '{"alias_id": "id", "address": {"list": "goto", "separator": ";"}}', key => '{alias_id}');
SELECT mailsync.link('ok_map', 'se1.users', 'se2.core_user',
					 '{"id": "id", "language": {"from": "language", "map": {"pt_BR": "pt-br"}}, "n": {"from": "n", "map": {"1": 10, "2": 20}}}');
SELECT name, key, legacy_key, columns FROM mailsync.links ORDER BY name;
SELECT * FROM se_left;
SELECT mailsync.unlink(name) FROM mailsync.links ORDER BY name;
SELECT * FROM se_left;

SET client_min_messages = warning;
DROP SCHEMA se1 CASCADE;
DROP SCHEMA se2 CASCADE;
RESET client_min_messages;
