/* mailsync--1.0.sql: install script of mailsync 1.0 */

\echo Use "CREATE EXTENSION mailsync" to load this file. \quit

-- Every name below is schema-qualified: CREATE EXTENSION runs with the
-- installer's search_path, and nothing planted there may be picked up.

------------------------------------------------------------------------
-- The schema: CREATE EXTENSION uses a schema "mailsync" that exists
-- already.  Whoever could create objects in it could plant an overload
-- of a mailsync function that a superuser's call would then run, so the
-- schema must be owned by a superuser, grant CREATE to no one else, and
-- hold nothing yet.
------------------------------------------------------------------------

DO $check$
DECLARE
	nsp			pg_catalog.oid;
	owner		pg_catalog.name;
	creators	pg_catalog.text;
BEGIN
	SELECT n.oid, r.rolname INTO nsp, owner
	FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
	WHERE n.nspname OPERATOR(pg_catalog.=) 'mailsync';
	IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) owner) THEN
		RAISE EXCEPTION 'schema "mailsync" is owned by role "%", who is not a superuser', owner
			USING ERRCODE = '42501',
				  HINT = 'Drop that schema (after checking what it holds), or make a superuser its owner, then install mailsync.';
	END IF;
	SELECT pg_catalog.string_agg(coalesce(r.rolname, 'PUBLIC'), ', ') INTO creators
	FROM pg_catalog.pg_namespace n
		 CROSS JOIN pg_catalog.aclexplode(n.nspacl) a
		 LEFT JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) a.grantee
	WHERE n.oid OPERATOR(pg_catalog.=) nsp AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
	  AND NOT coalesce(r.rolsuper, false);
	IF creators IS NOT NULL THEN
		RAISE EXCEPTION 'schema "mailsync" grants CREATE to %, not a superuser', creators
			USING ERRCODE = '42501',
				  HINT = 'REVOKE CREATE ON SCHEMA mailsync FROM that role, then install mailsync.';
	END IF;
	IF EXISTS (SELECT FROM pg_catalog.pg_class WHERE relnamespace OPERATOR(pg_catalog.=) nsp)
	   OR EXISTS (SELECT FROM pg_catalog.pg_proc WHERE pronamespace OPERATOR(pg_catalog.=) nsp)
	   OR EXISTS (SELECT FROM pg_catalog.pg_type WHERE typnamespace OPERATOR(pg_catalog.=) nsp)
	   OR EXISTS (SELECT FROM pg_catalog.pg_operator WHERE oprnamespace OPERATOR(pg_catalog.=) nsp)
	   OR EXISTS (SELECT FROM pg_catalog.pg_collation WHERE collnamespace OPERATOR(pg_catalog.=) nsp)
	   OR EXISTS (SELECT FROM pg_catalog.pg_conversion WHERE connamespace OPERATOR(pg_catalog.=) nsp)
	   OR EXISTS (SELECT FROM pg_catalog.pg_opfamily WHERE opfnamespace OPERATOR(pg_catalog.=) nsp)
	   OR EXISTS (SELECT FROM pg_catalog.pg_ts_config WHERE cfgnamespace OPERATOR(pg_catalog.=) nsp)
	   OR EXISTS (SELECT FROM pg_catalog.pg_ts_dict WHERE dictnamespace OPERATOR(pg_catalog.=) nsp)
	   OR EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extnamespace OPERATOR(pg_catalog.=) nsp
				  AND extname OPERATOR(pg_catalog.<>) 'mailsync') THEN
		RAISE EXCEPTION 'schema "mailsync" already holds objects'
			USING ERRCODE = '42P06',
				  HINT = 'mailsync installs into a schema of its own; move or drop what is in schema mailsync first.';
	END IF;
END
$check$;

------------------------------------------------------------------------
-- The link catalog
------------------------------------------------------------------------

CREATE TABLE mailsync.links (
	name				text PRIMARY KEY
						CHECK (name OPERATOR(pg_catalog.~) '^[A-Za-z0-9_]{1,40}$'),
	legacy				pg_catalog.regclass NOT NULL,
	current				pg_catalog.regclass NOT NULL,
	direction			text NOT NULL
						CHECK (direction OPERATOR(pg_catalog.=) ANY (ARRAY['both', 'up', 'down'])),
	columns				pg_catalog.jsonb NOT NULL,
	key					text[] NOT NULL,
	legacy_key			text[] NOT NULL,
	shared_sequence		pg_catalog.regclass,
	replaced_default	pg_catalog.jsonb,
	created_at			timestamptz NOT NULL DEFAULT pg_catalog.now(),
	created_by			name NOT NULL,
	replica				boolean NOT NULL DEFAULT false
);

COMMENT ON TABLE mailsync.links IS
	'One row a link: a legacy and a current table kept in sync by mailsync triggers';
COMMENT ON COLUMN mailsync.links.columns IS
	'The mapping, keyed by current-table column, with expressions normalised to schema-qualified SQL';
COMMENT ON COLUMN mailsync.links.key IS
	'Current-table key columns; legacy_key holds the legacy columns they map to';
COMMENT ON COLUMN mailsync.links.shared_sequence IS
	'The sequence both key columns draw from, when the key has one';
COMMENT ON COLUMN mailsync.links.replaced_default IS
	'The key default that link replaced, restored by unlink';
COMMENT ON COLUMN mailsync.links.replica IS
	'Whether the link also mirrors the rows logical replication applies (link(..., replica => true))';

-- Where each backfill is: one row a link and direction.
CREATE TABLE mailsync.backfills (
	link			text NOT NULL,
	direction		text NOT NULL
					CHECK (direction OPERATOR(pg_catalog.=) ANY (ARRAY['up', 'down'])),
	state			text NOT NULL
					CHECK (state OPERATOR(pg_catalog.=) ANY (ARRAY['running', 'done'])),
	position		text[],
	stop_at			text[],
	rows_done		bigint NOT NULL,
	rows_total		bigint NOT NULL,
	batch_size		integer NOT NULL,
	started_at		timestamptz NOT NULL,
	updated_at		timestamptz NOT NULL,
	finished_at		timestamptz,
	PRIMARY KEY (link, direction)
);

COMMENT ON TABLE mailsync.backfills IS
	'One row a backfill: its position (the last key copied, as text), where it stops, and its progress';

-- The last verification of each link.
CREATE TABLE mailsync.verifications (
	link				text PRIMARY KEY,
	direction			text NOT NULL,
	verified_at			timestamptz NOT NULL,
	missing_in_current	bigint NOT NULL,
	missing_in_legacy	bigint NOT NULL,
	differs				bigint NOT NULL,
	duration			interval NOT NULL
);

COMMENT ON TABLE mailsync.verifications IS
	'The result of the last mailsync.verify or verify_summary of each link';

-- pg_dump carries the links and the state of their backfills; the
-- triggers come with the tables they are on.
SELECT pg_catalog.pg_extension_config_dump('mailsync.links', '');
SELECT pg_catalog.pg_extension_config_dump('mailsync.backfills', '');
SELECT pg_catalog.pg_extension_config_dump('mailsync.verifications', '');

-- Everyone may call mailsync's functions (each checks what it must) and
-- read the catalog; the sync triggers read it in the writer's session.
GRANT USAGE ON SCHEMA mailsync TO PUBLIC;

-- Table owners link through mailsync.link, which writes this table as the
-- extension's owner; nobody else may change it.
REVOKE ALL ON mailsync.links, mailsync.backfills, mailsync.verifications FROM PUBLIC;
GRANT SELECT ON mailsync.links, mailsync.backfills, mailsync.verifications TO PUBLIC;

CREATE FUNCTION mailsync._links_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'mailsync_links_changed'
LANGUAGE C;

COMMENT ON FUNCTION mailsync._links_changed() IS
	'Internal: tells every backend to rebuild its cached links';

CREATE TRIGGER links_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON mailsync.links
	FOR EACH STATEMENT EXECUTE FUNCTION mailsync._links_changed();

------------------------------------------------------------------------
-- Linking
------------------------------------------------------------------------

CREATE FUNCTION mailsync.sync_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'mailsync_sync_trigger'
LANGUAGE C;

COMMENT ON FUNCTION mailsync.sync_trigger() IS
	'The trigger mailsync.link puts on linked tables: mirrors each write on the other table';

CREATE FUNCTION mailsync.link(
	name			text,
	legacy			pg_catalog.regclass,
	current			pg_catalog.regclass,
	columns			pg_catalog.jsonb,
	key				text[] DEFAULT NULL,
	direction		text DEFAULT 'both',
	backfill		boolean DEFAULT false,
	share_sequence	boolean DEFAULT true,
	replica			boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'mailsync_link'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION mailsync.link(text, pg_catalog.regclass, pg_catalog.regclass, pg_catalog.jsonb, text[], text, boolean, boolean, boolean) IS
	'Link a legacy and a current table: validate the mapping, install the sync triggers, record the link';

CREATE FUNCTION mailsync.unlink(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'mailsync_unlink'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION mailsync.unlink(text) IS
	'Remove a link and its triggers; the rows of both tables stay as they are';

CREATE FUNCTION mailsync._check_link(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'mailsync_check_link'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION mailsync._check_link(text) IS
	'Internal: raise the first problem of a link''s stored definition';

------------------------------------------------------------------------
-- Shapes: what the statements of list and document links call.  They
-- read only their arguments; the link's options are passed as "cfg", the
-- normalised form _doc_config returns.  The SQL functions have no SET
-- search_path, so that the planner can inline them: mailsync calls them
-- only from statements it runs under its pinned search path (pg_catalog),
-- where their bodies resolve the same way.
------------------------------------------------------------------------

CREATE FUNCTION mailsync._list_elements(list text, sep text, OUT elem text, OUT ord bigint)
RETURNS SETOF record
LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 5
AS $$
	SELECT s.e, min(s.o)
	FROM (SELECT btrim(u.x, E' \t\r\n') AS e, u.o
		  FROM unnest(string_to_array(list, sep)) WITH ORDINALITY AS u(x, o)) AS s
	WHERE s.e <> ''
	GROUP BY s.e
$$;

COMMENT ON FUNCTION mailsync._list_elements(text, text) IS
	'Internal: the elements of a delimited list, trimmed, non-empty, each once, with the position of its first occurrence';

CREATE FUNCTION mailsync._list_merge(list text, sep text, elems text[])
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
	WITH cur AS (SELECT c.elem, c.ord FROM mailsync._list_elements(list, sep) AS c),
		 want AS (SELECT w.e, min(w.o) AS o
				  FROM (SELECT btrim(u.x, E' \t\r\n') AS e, u.o FROM unnest(elems) WITH ORDINALITY AS u(x, o)) AS w
				  WHERE w.e <> '' GROUP BY w.e)
	SELECT CASE
		WHEN (SELECT count(*) FROM cur) = (SELECT count(*) FROM want)
			 AND NOT EXISTS (SELECT FROM want WHERE NOT EXISTS (SELECT FROM cur WHERE cur.elem = want.e))
		THEN list
		ELSE (SELECT coalesce(string_agg(x.e, sep ORDER BY x.k1, x.k2), '')
			  FROM (SELECT cur.elem AS e, 0 AS k1, cur.ord AS k2 FROM cur
					WHERE EXISTS (SELECT FROM want WHERE want.e = cur.elem)
					UNION ALL
					SELECT want.e, 1, want.o FROM want
					WHERE NOT EXISTS (SELECT FROM cur WHERE cur.elem = want.e)) AS x)
	END
$$;

COMMENT ON FUNCTION mailsync._list_merge(text, text, text[]) IS
	'Internal: a list rewritten to hold exactly elems; kept elements stay in place, new ones follow; unchanged when it holds them already';

-- Document options, checked and completed: separator, case, booleans,
-- apps, keys, values, legacy_only, current_only; the maps reversed.
CREATE FUNCTION mailsync._doc_config(options pg_catalog.jsonb)
RETURNS pg_catalog.jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	k	text;
	opt	text;
	v	jsonb;
	cfg	jsonb;
	back jsonb;
BEGIN
	FOR k IN SELECT jsonb_object_keys(options) LOOP
		IF k NOT IN ('name', 'value', 'separator', 'case', 'booleans', 'apps', 'keys',
					 'values', 'legacy_only', 'current_only') THEN
			RAISE EXCEPTION 'document mapping has unknown option "%"', k
				USING ERRCODE = '22023',
					  HINT = 'The options are name, value, separator, case, booleans, apps, keys, values, legacy_only and current_only.';
		END IF;
	END LOOP;
	cfg := jsonb_build_object(
		'separator', coalesce(options->'separator', '"."'),
		'case', coalesce(options->'case', '"upper"'),
		'booleans', coalesce(options->'booleans', '["yes", "no"]'),
		'apps', coalesce(options->'apps', '{}'),
		'keys', coalesce(options->'keys', '{}'),
		'values', coalesce(options->'values', '{}'),
		'legacy_only', coalesce(options->'legacy_only', '[]'),
		'current_only', coalesce(options->'current_only', '[]'));
	IF jsonb_typeof(cfg->'separator') <> 'string' OR cfg->>'separator' = '' THEN
		RAISE EXCEPTION 'document option "separator" must be a non-empty string, not %', cfg->'separator'
			USING ERRCODE = '22023', HINT = 'It separates the application from the key in a legacy name, as "." in core.ITEMS_PER_PAGE.';
	END IF;
	IF cfg->>'case' IS NULL OR cfg->>'case' NOT IN ('upper', 'same') THEN
		RAISE EXCEPTION 'document option "case" must be "upper" or "same", not %', cfg->'case'
			USING ERRCODE = '22023', HINT = '"upper": legacy keys are upper case, document keys lower case; "same": both alike.';
	END IF;
	IF jsonb_typeof(cfg->'booleans') <> 'array' OR jsonb_array_length(cfg->'booleans') <> 2
	   OR jsonb_typeof(cfg->'booleans'->0) <> 'string' OR jsonb_typeof(cfg->'booleans'->1) <> 'string'
	   OR cfg->'booleans'->0 = cfg->'booleans'->1 THEN
		RAISE EXCEPTION 'document option "booleans" must be two different strings, not %', cfg->'booleans'
			USING ERRCODE = '22023', HINT = 'Write the legacy spelling of true, then of false: ["yes", "no"].';
	END IF;
	FOREACH k IN ARRAY ARRAY['apps', 'keys', 'values'] LOOP
		IF jsonb_typeof(cfg->k) <> 'object' THEN
			RAISE EXCEPTION 'document option "%" must be a JSON object', k
				USING ERRCODE = '22023', HINT = 'Write "' || k || '": {"legacy": "current", ...}.';
		END IF;
	END LOOP;
	FOREACH k IN ARRAY ARRAY['legacy_only', 'current_only'] LOOP
		IF jsonb_typeof(cfg->k) <> 'array'
		   OR EXISTS (SELECT FROM jsonb_array_elements(cfg->k) e WHERE jsonb_typeof(e) <> 'string') THEN
			RAISE EXCEPTION 'document option "%" must be an array of names', k
				USING ERRCODE = '22023', HINT = 'Write "' || k || '": ["app.NAME", "app.*"].';
		END IF;
	END LOOP;
	-- renames go one to one, and both ways
	SELECT e.key INTO k FROM jsonb_each(cfg->'apps') e
	WHERE jsonb_typeof(e.value) <> 'string' OR e.value #>> '{}' = '' LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'document option "apps" renames application "%" to something that is not a name', k
			USING ERRCODE = '22023', HINT = 'Write "apps": {"legacy_app": "current_app"}.';
	END IF;
	SELECT e.key INTO k FROM jsonb_each(cfg->'keys') e
	WHERE jsonb_typeof(e.value) <> 'string' OR strpos(e.value #>> '{}', '.') < 2
	   OR strpos(e.key, cfg->>'separator') < 2 LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'document option "keys" has an entry for "%" that is not "legacy_app<separator>KEY": "app.key"', k
			USING ERRCODE = '22023', HINT = 'Write "keys": {"admin.OLD_NAME": "core.new_name"}: full names on both sides.';
	END IF;
	FOR opt IN SELECT unnest(ARRAY['apps', 'keys']) LOOP
		SELECT e.value #>> '{}' INTO k FROM jsonb_each(cfg->opt) e
		GROUP BY e.value #>> '{}' HAVING count(*) > 1 LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION 'document option "%" renames two % to "%"', opt,
				CASE opt WHEN 'apps' THEN 'applications' ELSE 'settings' END, k
				USING ERRCODE = '22023', HINT = 'Each current name comes from one legacy name.';
		END IF;
	END LOOP;
	FOR k, v IN SELECT e.key, e.value FROM jsonb_each(cfg->'values') e LOOP
		IF jsonb_typeof(v) <> 'object' THEN
			RAISE EXCEPTION 'document option "values" for setting "%" must be a JSON object', k
				USING ERRCODE = '22023', HINT = 'Write "values": {"app.NAME": {"legacy text": <JSON value>}}.';
		END IF;
		IF EXISTS (SELECT FROM jsonb_each(v) e GROUP BY e.value HAVING count(*) > 1) THEN
			RAISE EXCEPTION 'document option "values" for setting "%" maps two legacy values to one JSON value', k
				USING ERRCODE = '22023', HINT = 'A value map must pair values one to one, so that each finds its way back.';
		END IF;
	END LOOP;
	SELECT coalesce(jsonb_object_agg(e.value #>> '{}', e.key), '{}') INTO back FROM jsonb_each(cfg->'apps') e;
	cfg := cfg || jsonb_build_object('apps_back', back);
	SELECT coalesce(jsonb_object_agg(e.value #>> '{}', e.key), '{}') INTO back FROM jsonb_each(cfg->'keys') e;
	RETURN cfg || jsonb_build_object('keys_back', back);
END
$$;

COMMENT ON FUNCTION mailsync._doc_config(pg_catalog.jsonb) IS
	'Internal: check a document mapping''s options and complete them with defaults and reverse maps';

-- Where a legacy name goes, and which legacy name a path comes from, by
-- the rules alone; _doc_path and _doc_name keep only the pairs that go
-- both ways, so that a name and a path always map to each other.
CREATE FUNCTION mailsync._doc_path_raw(cfg pg_catalog.jsonb, name text)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
	SELECT CASE
		WHEN cfg->'keys' ? name
			THEN ARRAY[split_part(cfg->'keys'->>name, '.', 1),
					   substr(cfg->'keys'->>name, strpos(cfg->'keys'->>name, '.') + 1)]
		WHEN strpos(name, cfg->>'separator') < 2 THEN NULL
		WHEN cfg->'legacy_only' ? name OR cfg->'legacy_only' ? (x.app || (cfg->>'separator') || '*') THEN NULL
		ELSE ARRAY[coalesce(cfg->'apps'->>x.app, x.app),
				   CASE WHEN cfg->>'case' = 'upper' THEN lower(x.key) ELSE x.key END]
	END
	FROM (SELECT split_part(name, cfg->>'separator', 1) AS app,
				 substr(name, strpos(name, cfg->>'separator') + length(cfg->>'separator')) AS key) AS x
$$;

CREATE FUNCTION mailsync._doc_name_raw(cfg pg_catalog.jsonb, app text, key text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
	SELECT CASE
		WHEN cfg->'keys_back' ? (app || '.' || key) THEN cfg->'keys_back'->>(app || '.' || key)
		WHEN cfg->'current_only' ? (app || '.' || key) OR cfg->'current_only' ? (app || '.*') THEN NULL
		ELSE coalesce(cfg->'apps_back'->>app, app) || (cfg->>'separator')
			 || CASE WHEN cfg->>'case' = 'upper' THEN upper(key) ELSE key END
	END
$$;

CREATE FUNCTION mailsync._doc_path(cfg pg_catalog.jsonb, name text)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
	SELECT p FROM (SELECT mailsync._doc_path_raw(cfg, name) AS p) AS x
	WHERE mailsync._doc_name_raw(cfg, x.p[1], x.p[2]) = name
$$;

COMMENT ON FUNCTION mailsync._doc_path(pg_catalog.jsonb, text) IS
	'Internal: the document path {app,key} of a legacy setting name, NULL when the setting is not synced';

CREATE FUNCTION mailsync._doc_name(cfg pg_catalog.jsonb, app text, key text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
	SELECT n FROM (SELECT mailsync._doc_name_raw(cfg, app, key) AS n) AS x
	WHERE mailsync._doc_path_raw(cfg, x.n) = ARRAY[app, key]
$$;

COMMENT ON FUNCTION mailsync._doc_name(pg_catalog.jsonb, text, text) IS
	'Internal: the legacy setting name of a document entry, NULL when the entry is not synced';

CREATE FUNCTION mailsync._doc_decode(cfg pg_catalog.jsonb, name text, value text)
RETURNS pg_catalog.jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
	SELECT CASE
		WHEN value IS NULL THEN 'null'::jsonb
		WHEN cfg->'values'->name ? value THEN cfg->'values'->name->value
		WHEN value = cfg->'booleans'->>0 THEN 'true'::jsonb
		WHEN value = cfg->'booleans'->>1 THEN 'false'::jsonb
		WHEN value ~ '^-?(0|[1-9][0-9]{0,17})$' THEN to_jsonb(value::numeric)
		ELSE to_jsonb(value)
	END
$$;

COMMENT ON FUNCTION mailsync._doc_decode(pg_catalog.jsonb, text, text) IS
	'Internal: the JSON value of a legacy setting''s text: its value map, a boolean, an integer, else a string';

CREATE FUNCTION mailsync._doc_encode(cfg pg_catalog.jsonb, name text, value pg_catalog.jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
	SELECT CASE
		WHEN m.legacy IS NOT NULL THEN m.legacy
		WHEN value IS NULL OR jsonb_typeof(value) = 'null' THEN NULL
		WHEN jsonb_typeof(value) = 'boolean'
			THEN cfg->'booleans'->>(CASE WHEN value = 'true'::jsonb THEN 0 ELSE 1 END)
		WHEN jsonb_typeof(value) = 'string' THEN value #>> '{}'
		ELSE value::text
	END
	FROM (SELECT (SELECT e.key FROM jsonb_each(cfg->'values'->name) AS e
				  WHERE e.value = $3 LIMIT 1) AS legacy) AS m
$$;

COMMENT ON FUNCTION mailsync._doc_encode(pg_catalog.jsonb, text, pg_catalog.jsonb) IS
	'Internal: the legacy text of a document value: its value map, the legacy booleans, numbers and strings as text';

CREATE FUNCTION mailsync._doc_flatten(cfg pg_catalog.jsonb, doc pg_catalog.jsonb,
									  OUT name text, OUT value text, OUT raw pg_catalog.jsonb)
RETURNS SETOF record
LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 20
AS $$
	SELECT n.name, mailsync._doc_encode(cfg, n.name, k.value), k.value
	FROM jsonb_each(CASE WHEN jsonb_typeof(doc) = 'object' THEN doc ELSE '{}' END) AS a
		 CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(a.value) = 'object' THEN a.value ELSE '{}' END) AS k
		 CROSS JOIN LATERAL (SELECT mailsync._doc_name(cfg, a.key, k.key) AS name) AS n
	WHERE n.name IS NOT NULL
$$;

COMMENT ON FUNCTION mailsync._doc_flatten(pg_catalog.jsonb, pg_catalog.jsonb) IS
	'Internal: the synced entries of a document as legacy rows: name, value as text, and the JSON value';

CREATE FUNCTION mailsync._doc_patch(cfg pg_catalog.jsonb, doc pg_catalog.jsonb, sets pg_catalog.jsonb, dels text[])
RETURNS pg_catalog.jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	result	jsonb := CASE WHEN jsonb_typeof(doc) = 'object' THEN doc ELSE '{}' END;
	p		text[];
	r		record;
	changed	boolean := false;
BEGIN
	FOR r IN SELECT d.n FROM unnest(dels) AS d(n) LOOP
		p := mailsync._doc_path(cfg, r.n);
		IF p IS NOT NULL AND result #> p IS NOT NULL THEN
			result := result #- p;
			changed := true;
		END IF;
	END LOOP;
	FOR r IN SELECT e.key AS n, e.value AS v FROM jsonb_each_text(coalesce(sets, '{}')) AS e LOOP
		p := mailsync._doc_path(cfg, r.n);
		CONTINUE WHEN p IS NULL;
		IF jsonb_typeof(result->p[1]) IS DISTINCT FROM 'object' THEN
			result := jsonb_set(result, p[1:1], '{}');
		END IF;
		result := jsonb_set(result, p, mailsync._doc_decode(cfg, r.n, r.v));
		changed := true;
	END LOOP;
	RETURN CASE WHEN changed THEN result ELSE doc END;
END
$$;

COMMENT ON FUNCTION mailsync._doc_patch(pg_catalog.jsonb, pg_catalog.jsonb, pg_catalog.jsonb, text[]) IS
	'Internal: a document with the legacy settings in sets (name -> text) set and those in dels removed';

CREATE FUNCTION mailsync._doc_strip(cfg pg_catalog.jsonb, doc pg_catalog.jsonb)
RETURNS pg_catalog.jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
	SELECT CASE
		WHEN doc IS NULL OR jsonb_typeof(doc) <> 'object' THEN doc
		ELSE coalesce((SELECT jsonb_object_agg(a.key, CASE
							WHEN jsonb_typeof(a.value) = 'object'
							THEN (SELECT coalesce(jsonb_object_agg(k.key, k.value), '{}')
								  FROM jsonb_each(a.value) AS k
								  WHERE mailsync._doc_name(cfg, a.key, k.key) IS NULL)
							ELSE a.value END)
					   FROM jsonb_each(doc) AS a), '{}')
	END
$$;

COMMENT ON FUNCTION mailsync._doc_strip(pg_catalog.jsonb, pg_catalog.jsonb) IS
	'Internal: a document without its synced entries';

CREATE FUNCTION mailsync._doc_merge(doc pg_catalog.jsonb, other pg_catalog.jsonb)
RETURNS pg_catalog.jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
	SELECT CASE WHEN jsonb_typeof(doc) IS DISTINCT FROM 'object' THEN other
		ELSE doc || coalesce((SELECT jsonb_object_agg(o.key, CASE
							WHEN jsonb_typeof(doc->o.key) = 'object' AND jsonb_typeof(o.value) = 'object'
							THEN (doc->o.key) || o.value ELSE o.value END)
					   FROM jsonb_each(other) AS o), '{}')
	END
$$;

COMMENT ON FUNCTION mailsync._doc_merge(pg_catalog.jsonb, pg_catalog.jsonb) IS
	'Internal: a document with the applications of other merged in, key by key';

CREATE FUNCTION mailsync.status()
RETURNS TABLE (
	name				text,
	legacy				pg_catalog.regclass,
	current				pg_catalog.regclass,
	direction			text,
	triggers_ok			boolean,
	backfill			text,
	backfill_position	text,
	backfill_percent	numeric,
	backfill_rate		numeric,
	backfill_eta		interval,
	verified_at			timestamptz,
	drift				bigint,
	problem				text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	l			record;
	t			record;
	b			record;
	v			record;
	enabled		"char";
	problems	text[];
	context		text;
BEGIN
	FOR l IN SELECT * FROM mailsync.links ORDER BY links.name LOOP
		problems := '{}';
		IF NOT EXISTS (SELECT FROM pg_class WHERE oid = l.legacy) THEN
			problems := problems || format('legacy table (OID %s) no longer exists', l.legacy::oid);
		END IF;
		IF NOT EXISTS (SELECT FROM pg_class WHERE oid = l.current) THEN
			problems := problems || format('current table (OID %s) no longer exists', l.current::oid);
		END IF;

		-- each trigger the link needs, and how it must be enabled: O fires
		-- in ordinary sessions, R only where logical replication applies
		-- rows, A in both
		FOR t IN
			SELECT s.role, s.tbl,
				   -- a list or document link's triggers fire after a rows link's
				   CASE WHEN EXISTS (SELECT FROM jsonb_each(l.columns) AS m
									 WHERE jsonb_typeof(m.value) = 'object'
									   AND (m.value ? 'list' OR m.value ? 'document' OR m.value ? 'join'))
						THEN 'mailsync~' ELSE 'mailsync_' END || l.name || n.suffix AS tgname,
				   CASE WHEN n.apply THEN 'R'
						WHEN l.replica AND n.suffix = '_truncate' THEN 'A'
						ELSE 'O' END AS want
			FROM (VALUES ('legacy', l.legacy, l.direction IN ('both', 'up')),
						 ('current', l.current, l.direction IN ('both', 'down')))
				 AS s(role, tbl, needed),
				 (VALUES ('_insert', false), ('_update', false), ('_delete', false),
						 ('_truncate', false), ('_apply_insert', true),
						 ('_apply_update', true), ('_apply_delete', true)) AS n(suffix, apply)
			WHERE s.needed AND (l.replica OR NOT n.apply)
			  AND EXISTS (SELECT FROM pg_class WHERE oid = s.tbl)
		LOOP
			SELECT tg.tgenabled INTO enabled
			FROM pg_trigger tg
			WHERE tg.tgrelid = t.tbl AND tg.tgname = t.tgname
			  AND tg.tgfoid = 'mailsync.sync_trigger()'::regprocedure;
			IF NOT FOUND THEN
				problems := problems || format('trigger %s on %s table %s is missing', t.tgname, t.role, t.tbl);
			ELSIF enabled = 'D' THEN
				problems := problems || format('trigger %s on %s table %s is disabled', t.tgname, t.role, t.tbl);
			ELSIF enabled <> t.want THEN
				problems := problems || format('trigger %s on %s table %s fires %s, it must fire %s',
					t.tgname, t.role, t.tbl,
					CASE enabled WHEN 'R' THEN 'only for replication' WHEN 'A' THEN 'always'
						ELSE 'only outside replication' END,
					CASE t.want WHEN 'R' THEN 'only for replication' WHEN 'A' THEN 'always'
						ELSE 'outside replication' END);
			END IF;
		END LOOP;

		name := l.name;
		legacy := l.legacy;
		current := l.current;
		direction := l.direction;
		triggers_ok := cardinality(problems) = 0;

		IF triggers_ok THEN
			BEGIN
				PERFORM mailsync._check_link(l.name);
			EXCEPTION WHEN OTHERS THEN
				-- the message, and which mapping it is about
				GET STACKED DIAGNOSTICS context = PG_EXCEPTION_CONTEXT;
				context := split_part(context, E'\n', 1);
				problems := problems || (SQLERRM ||
					CASE WHEN context LIKE 'mapping for column %' THEN ' (' || context || ')' ELSE '' END);
			END;
		END IF;

		-- the latest backfill; a running one that no session holds was interrupted
		SELECT bf.* INTO b FROM mailsync.backfills bf
		WHERE bf.link = l.name ORDER BY bf.updated_at DESC LIMIT 1;
		IF FOUND THEN
			backfill := b.direction || ': ' ||
				CASE WHEN b.state = 'running' AND NOT EXISTS (
						SELECT FROM pg_locks k
						WHERE k.locktype = 'advisory' AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
						  AND k.classid = 43110
						  AND k.objid = ((hashtext(l.name)::bigint) & 4294967295)::oid
						  AND k.objsubid = 2 AND k.granted)
					 THEN 'interrupted' ELSE b.state END;
			backfill_position := b.position::text;
			-- rows_total is counted at the start; rows deleted since keep
			-- a finished backfill from reaching it
			backfill_percent := CASE WHEN b.state = 'done' OR b.rows_total = 0 THEN 100.0
				ELSE least(round(100.0 * b.rows_done / b.rows_total, 1), 99.9) END;
			backfill_rate := CASE WHEN b.updated_at > b.started_at
				THEN round(b.rows_done / extract(epoch FROM b.updated_at - b.started_at)) END;
			backfill_eta := CASE WHEN backfill LIKE '%: running' AND backfill_rate > 0
				THEN make_interval(secs => round(greatest(b.rows_total - b.rows_done, 0) / backfill_rate)) END;
			IF backfill LIKE '%interrupted' THEN
				problems := problems || format('the %s backfill was interrupted at key %s; CALL mailsync.backfill(%L) resumes it',
											   b.direction, coalesce(b.position::text, '(start)'), l.name);
			END IF;
		ELSE
			backfill := NULL;
			backfill_position := NULL;
			backfill_percent := NULL;
			backfill_rate := NULL;
			backfill_eta := NULL;
		END IF;

		SELECT vf.* INTO v FROM mailsync.verifications vf WHERE vf.link = l.name;
		IF FOUND THEN
			verified_at := v.verified_at;
			drift := v.missing_in_current + v.missing_in_legacy + v.differs;
		ELSE
			verified_at := NULL;
			drift := NULL;
		END IF;

		problem := NULLIF(array_to_string(problems, '; '), '');
		RETURN NEXT;
	END LOOP;
END
$$;

COMMENT ON FUNCTION mailsync.status() IS
	'One row a link: its tables, direction, triggers, backfill and last verification, and what is broken';

------------------------------------------------------------------------
-- Backfill, verify, repair
------------------------------------------------------------------------

CREATE PROCEDURE mailsync.backfill(
	name		text,
	direction	text DEFAULT NULL,
	batch_size	integer DEFAULT 5000,
	pause		interval DEFAULT '0',
	restart		boolean DEFAULT false)
AS 'MODULE_PATHNAME', 'mailsync_backfill'
LANGUAGE C;

COMMENT ON PROCEDURE mailsync.backfill(text, text, integer, interval, boolean) IS
	'Copy the rows one side has and the other lacks or has different, in resumable keyset batches, one transaction each';

CREATE FUNCTION mailsync.verify(
	name		text,
	direction	text DEFAULT NULL)
RETURNS TABLE (key pg_catalog.jsonb, problem text, legacy pg_catalog.jsonb, current pg_catalog.jsonb)
AS 'MODULE_PATHNAME', 'mailsync_verify'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION mailsync.verify(text, text) IS
	'One row a key on which the tables of a link disagree through its mapping';

CREATE FUNCTION mailsync.verify_summary(
	name		text,
	direction	text DEFAULT NULL,
	OUT missing_in_current bigint,
	OUT missing_in_legacy bigint,
	OUT differs bigint,
	OUT compared text,
	OUT verified_at timestamptz)
AS 'MODULE_PATHNAME', 'mailsync_verify_summary'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION mailsync.verify_summary(text, text) IS
	'How many keys of a link drifted, by kind';

CREATE FUNCTION mailsync.repair(
	name		text,
	source		text,
	OUT inserted bigint,
	OUT updated bigint,
	OUT deleted bigint)
AS 'MODULE_PATHNAME', 'mailsync_repair'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION mailsync.repair(text, text) IS
	'Make the other table of a link match source for exactly the keys verify reports';

------------------------------------------------------------------------
-- UUIDs for credential rows
------------------------------------------------------------------------

CREATE FUNCTION mailsync.uuid_v4()
RETURNS uuid
AS 'MODULE_PATHNAME', 'mailsync_uuid_v4'
LANGUAGE C VOLATILE PARALLEL SAFE;

COMMENT ON FUNCTION mailsync.uuid_v4() IS
	'A random (version 4) UUID from the kernel''s random bytes';

CREATE FUNCTION mailsync.uuid_v7()
RETURNS uuid
AS 'MODULE_PATHNAME', 'mailsync_uuid_v7'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION mailsync.uuid_v7() IS
	'A time-ordered (version 7, RFC 9562) UUID, increasing within a session';

CREATE FUNCTION mailsync.uuid_time(uuid)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'mailsync_uuid_time'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION mailsync.uuid_time(uuid) IS
	'The time stamp inside a version 1, 6 or 7 UUID; NULL for other versions';

CREATE FUNCTION mailsync.uuid_immutable()
RETURNS trigger
AS 'MODULE_PATHNAME', 'mailsync_uuid_immutable'
LANGUAGE C;

COMMENT ON FUNCTION mailsync.uuid_immutable() IS
	'The trigger ensure_uuid(..., immutable => true) adds: rejects a change of a uuid once given';

CREATE PROCEDURE mailsync.ensure_uuid(
	tbl			pg_catalog.regclass,
	col			name DEFAULT 'uuid',
	batch_size	integer DEFAULT 10000,
	immutable	boolean DEFAULT false,
	generator	text DEFAULT 'v7')
AS 'MODULE_PATHNAME', 'mailsync_ensure_uuid'
LANGUAGE C;

COMMENT ON PROCEDURE mailsync.ensure_uuid(pg_catalog.regclass, name, integer, boolean, text) IS
	'Give every row of a table a uuid: add the column, default, fill in batches, NOT NULL, unique, optionally immutable';
