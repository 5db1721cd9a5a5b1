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
			SELECT s.role, s.tbl, 'mailsync_' || l.name || n.suffix AS tgname,
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
