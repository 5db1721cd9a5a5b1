--
-- verify and repair: find each kind of drift through the mapping, and make
-- one side match the other for exactly the keys that drifted.
--
CREATE SCHEMA va;	-- legacy
CREATE SCHEMA vb;	-- current
CREATE TABLE va.domains (id integer PRIMARY KEY, name text NOT NULL, quota_mb integer NOT NULL,
						 enabled boolean NOT NULL, note text);
CREATE TABLE vb.domains (id integer PRIMARY KEY, name text NOT NULL, quota bigint NOT NULL,
						 status text NOT NULL, created timestamptz NOT NULL DEFAULT '2024-01-01 00:00+00');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON va.domains
	FOR EACH ROW EXECUTE FUNCTION public.log_write();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON vb.domains
	FOR EACH ROW EXECUTE FUNCTION public.log_write();
SELECT mailsync.link('domains', 'va.domains', 'vb.domains', $${
	"id": "id", "name": "name",
	"quota": {"up": "legacy.quota_mb::bigint * 1024", "down": "(current.quota / 1024)::integer",
			  "to": "quota_mb"},
	"status": {"up": "CASE WHEN legacy.enabled THEN 'enabled' ELSE 'disabled' END",
			   "down": "current.status = 'enabled'", "to": "enabled"}}$$);
INSERT INTO va.domains SELECT g, 'd' || g || '.example', 10 * g, true, NULL FROM generate_series(1, 6) g;

-- in sync: nothing to report
SELECT * FROM mailsync.verify('domains');
SELECT missing_in_current, missing_in_legacy, differs, compared FROM mailsync.verify_summary('domains');

-- break the tables on purpose, with the triggers off for these statements
SET session_replication_role = replica;
DELETE FROM vb.domains WHERE id = 2;									-- missing in current
INSERT INTO vb.domains (id, name, quota, status) VALUES (7, 'd7.example', 70, 'enabled');	-- missing in legacy
UPDATE vb.domains SET status = 'disabled' WHERE id = 3;				-- one column differs
UPDATE vb.domains SET name = 'D4.EXAMPLE', quota = 1 WHERE id = 4;	-- two columns differ
UPDATE va.domains SET note = 'v1 only' WHERE id = 5;				-- no mapping reads it
UPDATE vb.domains SET created = '2025-01-01 00:00+00' WHERE id = 6;	-- no mapping writes it
SET session_replication_role = origin;

-- each drifted key, with what each side has through the mapping
SELECT * FROM mailsync.verify('domains');
SELECT missing_in_current, missing_in_legacy, differs, compared FROM mailsync.verify_summary('domains');
SELECT name, verified_at IS NOT NULL AS verified, drift FROM mailsync.status();
-- the other way round: legacy against current through the down mapping
SELECT * FROM mailsync.verify('domains', 'down');

-- repair from legacy: current gets the missing row, loses its own, and the
-- two drifted rows are rewritten; nothing echoes back to legacy
TRUNCATE write_log;
SELECT * FROM mailsync.repair('domains', 'legacy');
SELECT * FROM writes;
SELECT * FROM mailsync.verify('domains');
SELECT * FROM vb.domains ORDER BY id;

-- repair from current: legacy follows current
SET session_replication_role = replica;
UPDATE vb.domains SET quota = 99 * 1024 WHERE id = 1;
DELETE FROM va.domains WHERE id = 6;
INSERT INTO va.domains VALUES (8, 'd8.example', 80, false, NULL);
SET session_replication_role = origin;
SELECT * FROM mailsync.verify('domains', 'down');
TRUNCATE write_log;
SELECT * FROM mailsync.repair('domains', 'current');
SELECT * FROM writes;
SELECT count(*) AS drift_down FROM mailsync.verify('domains', 'down');
SELECT count(*) AS drift_up FROM mailsync.verify('domains', 'up');
SELECT id, name, quota_mb, enabled FROM va.domains ORDER BY id;

-- a one-way link verifies and repairs its own way only
CREATE TABLE va.flags (id integer PRIMARY KEY, flag boolean NOT NULL);
CREATE TABLE vb.flags (id integer PRIMARY KEY, flag text NOT NULL);
SELECT mailsync.link('flags', 'va.flags', 'vb.flags',
					 '{"id": "id", "flag": {"up": "legacy.flag::text"}}', direction => 'up');
INSERT INTO va.flags VALUES (1, true), (2, false);
SET session_replication_role = replica;
UPDATE vb.flags SET flag = 'maybe' WHERE id = 2;
SET session_replication_role = origin;
SELECT * FROM mailsync.verify('flags');
SELECT * FROM mailsync.repair('flags', 'legacy');
SELECT * FROM vb.flags ORDER BY id;

--
-- refused
--
CREATE ROLE regress_verifier;
GRANT USAGE ON SCHEMA va, vb TO regress_verifier;
GRANT SELECT ON va.domains, vb.domains TO regress_verifier;
\pset format unaligned
\pset tuples_only on
SELECT format(E'%s\n    %s', what, try(sql)) FROM (VALUES
('verify: name is NULL', $$SELECT * FROM mailsync.verify(NULL)$$),
('verify: unknown link', $$SELECT * FROM mailsync.verify('nope')$$),
('verify: unknown direction', $$SELECT * FROM mailsync.verify('domains', 'sideways')$$),
('verify: a direction the link does not sync', $$SELECT * FROM mailsync.verify('flags', 'down')$$),
('repair: source is NULL', $$SELECT * FROM mailsync.repair('domains', NULL)$$),
('repair: unknown source', $$SELECT * FROM mailsync.repair('domains', 'both')$$),
('repair: a source the link does not map from', $$SELECT * FROM mailsync.repair('flags', 'current')$$)) AS c(what, sql);
SET ROLE regress_verifier;
-- reading both tables is enough to verify; repairing takes owning them
SELECT format(E'%s\n    %s', 'verify as a reader', try($$SELECT * FROM mailsync.verify('domains')$$));
SELECT format(E'%s\n    %s', 'repair as a reader', try($$SELECT * FROM mailsync.repair('domains', 'legacy')$$));
RESET ROLE;
\pset format aligned
\pset tuples_only off
REVOKE ALL ON va.domains, vb.domains FROM regress_verifier;
REVOKE USAGE ON SCHEMA va, vb FROM regress_verifier;
DROP ROLE regress_verifier;
SELECT mailsync.unlink('flags');
