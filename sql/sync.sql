--
-- sync: what each write on one side becomes on the other, inside the
-- writer's transaction, and that mailsync's own writes never come back.
--
CREATE SCHEMA sa;	-- legacy
CREATE SCHEMA sb;	-- current
CREATE TABLE sa.users (
	id		integer PRIMARY KEY,
	email	text NOT NULL,
	active	boolean NOT NULL DEFAULT true,
	quota	integer);
CREATE TABLE sb.users (
	id			integer PRIMARY KEY,
	email		text NOT NULL,
	enabled		boolean NOT NULL,
	quota_mb	integer CHECK (quota_mb IS NULL OR quota_mb >= 0));
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON sa.users
	FOR EACH ROW EXECUTE FUNCTION public.log_write();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON sb.users
	FOR EACH ROW EXECUTE FUNCTION public.log_write();

SELECT mailsync.link('users', 'sa.users', 'sb.users',
					 '{"id": "id", "email": "email", "enabled": "active", "quota_mb": "quota"}');

-- drift: rows on one side that the other does not have, through the mapping
CREATE VIEW users_drift AS
(SELECT 'only in sa' AS side, id, email, active, quota FROM sa.users
 EXCEPT SELECT 'only in sa', id, email, enabled, quota_mb FROM sb.users)
UNION ALL
(SELECT 'only in sb', id, email, enabled, quota_mb FROM sb.users
 EXCEPT SELECT 'only in sb', id, email, active, quota FROM sa.users);

-- multi-row inserts on both sides, and COPY
INSERT INTO sa.users SELECT g, 'u' || g || '@example.org', true, g * 10 FROM generate_series(1, 4) g;
INSERT INTO sb.users VALUES (5, 'u5@example.org', false, NULL), (6, 'u6@example.org', true, 60);
COPY sa.users (id, email, quota) FROM stdin;
7	u7@example.org	70
\.
SELECT * FROM sa.users ORDER BY id;
SELECT * FROM users_drift;

-- one write, one write on the other side, and nothing echoed back
TRUNCATE write_log;
UPDATE sa.users SET quota = 11 WHERE id = 1;
SELECT * FROM writes;

-- an update that changes nothing mapped writes nothing on the other side
TRUNCATE write_log;
UPDATE sa.users SET email = email WHERE id <= 2;
SELECT * FROM writes;

-- NULL travels like any value
UPDATE sb.users SET quota_mb = NULL WHERE id = 1;
SELECT id, quota FROM sa.users WHERE id = 1;

-- a changed key moves the row on the other side, both ways
UPDATE sa.users SET id = 100 WHERE id = 1;
UPDATE sb.users SET id = 200 WHERE id = 2;
SELECT id FROM sa.users ORDER BY id;
SELECT * FROM users_drift;

-- an insert whose key the other side already has updates that row there
-- (the v2 row is made here with the triggers off, as drift would make it)
SET session_replication_role = replica;
INSERT INTO sb.users VALUES (8, 'stale@example.org', false, 0);
SET session_replication_role = origin;
INSERT INTO sa.users VALUES (8, 'u8@example.org', true, 80);
SELECT * FROM sb.users WHERE id = 8;

-- an update of a row the other side lacks creates it there
SET session_replication_role = replica;
DELETE FROM sb.users WHERE id = 3;
SET session_replication_role = origin;
UPDATE sa.users SET quota = 33 WHERE id = 3;
SELECT * FROM sb.users WHERE id = 3;

-- deletes, both ways; a delete of a row the other side lacks is a no-op
DELETE FROM sa.users WHERE id = 100;
DELETE FROM sb.users WHERE id = 200;
SET session_replication_role = replica;
DELETE FROM sb.users WHERE id = 4;
SET session_replication_role = origin;
DELETE FROM sa.users WHERE id = 4;
SELECT id FROM sa.users ORDER BY id;
SELECT * FROM users_drift;

-- INSERT ... ON CONFLICT on one side
INSERT INTO sa.users VALUES (8, 'eight@example.org', true, 88)
	ON CONFLICT (id) DO UPDATE SET email = excluded.email, quota = excluded.quota;
INSERT INTO sb.users VALUES (9, 'u9@example.org', true, 90) ON CONFLICT DO NOTHING;
SELECT * FROM users_drift;

-- the other side sees the row as the writer's BEFORE triggers left it
CREATE FUNCTION sa.lower_email() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.email := lower(NEW.email); RETURN NEW; END $$;
CREATE TRIGGER lower_email BEFORE INSERT OR UPDATE ON sa.users
	FOR EACH ROW EXECUTE FUNCTION sa.lower_email();
INSERT INTO sa.users VALUES (10, 'MiXeD@Example.ORG', true, 100);
SELECT id, email FROM sb.users WHERE id = 10;

--
-- transactions: the two sides commit or roll back together
--
BEGIN;
INSERT INTO sa.users VALUES (11, 'u11@example.org', true, 110);
ROLLBACK;
SELECT count(*) FROM sb.users WHERE id = 11;

BEGIN;
INSERT INTO sa.users VALUES (12, 'u12@example.org', true, 120);
SAVEPOINT s;
UPDATE sb.users SET email = 'changed@example.org' WHERE id = 12;
ROLLBACK TO s;
COMMIT;
SELECT 'sa' AS side, email FROM sa.users WHERE id = 12 UNION ALL
SELECT 'sb', email FROM sb.users WHERE id = 12;

-- a write the other side refuses fails the writer's statement; nothing changes
-- (the context line, which shows mailsync's statement, is left out: it
-- differs between the set-based and the row-by-row path)
\set SHOW_CONTEXT never
UPDATE sa.users SET quota = -1 WHERE id = 3;
\set SHOW_CONTEXT errors
SELECT 'sa' AS side, quota FROM sa.users WHERE id = 3 UNION ALL
SELECT 'sb', quota_mb FROM sb.users WHERE id = 3;

-- an error caught by the application leaves the link working
DO $$
BEGIN
	BEGIN
		UPDATE sa.users SET quota = -1 WHERE id = 3;
	EXCEPTION WHEN check_violation THEN
		RAISE NOTICE 'caught: %', SQLERRM;
	END;
	UPDATE sa.users SET quota = 34 WHERE id = 3;
END
$$;
SELECT quota_mb FROM sb.users WHERE id = 3;
SELECT * FROM users_drift;

--
-- statements of many rows (set-based when mailsync.set_based is on or auto)
--
INSERT INTO sa.users SELECT g, 'bulk' || g || '@example.org', true, g FROM generate_series(100, 139) g;
SELECT count(*) FROM sb.users WHERE id >= 100;

-- some rows change what the mapping reads, some do not: only the first are written
TRUNCATE write_log;
UPDATE sa.users SET quota = CASE WHEN id % 2 = 0 THEN quota + 1 ELSE quota END WHERE id >= 100;
SELECT tbl, op, count(*) FROM write_log GROUP BY 1, 2 ORDER BY 1, 2;
SELECT * FROM users_drift;

-- every key of the statement changes: each row on the other side follows its key
UPDATE sa.users SET id = id + 1000 WHERE id >= 100;
SELECT count(*) AS moved FROM sb.users WHERE id >= 1100;
SELECT * FROM users_drift;

-- rows missing on the other side are created by a many-row update too
SET session_replication_role = replica;
DELETE FROM sb.users WHERE id >= 1120;
SET session_replication_role = origin;
UPDATE sa.users SET active = false WHERE id >= 1100;
SELECT count(*) AS disabled FROM sb.users WHERE id >= 1100 AND NOT enabled;
SELECT * FROM users_drift;

DELETE FROM sb.users WHERE id >= 1100;
SELECT count(*) AS left_over FROM sa.users WHERE id >= 1100;

--
-- a table with statement triggers of its own: they fire for mailsync's
-- writes too (such a table is written with prepared statements, not
-- directly; see src/direct.c)
--
CREATE TABLE sb.statements (op text);
CREATE FUNCTION sb.note_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO sb.statements VALUES (TG_OP); RETURN NULL; END $$;
CREATE TRIGGER note_statements AFTER INSERT OR UPDATE OR DELETE ON sb.users
	FOR EACH STATEMENT EXECUTE FUNCTION sb.note_statement();
INSERT INTO sa.users VALUES (20, 'u20@example.org', true, 200);
UPDATE sa.users SET quota = 201 WHERE id = 20;
UPDATE sa.users SET id = 21 WHERE id = 20;
SELECT * FROM users_drift;
DELETE FROM sa.users WHERE id = 21;
SELECT bool_or(op = 'INSERT') AS insert_fired, bool_or(op = 'UPDATE') AS update_fired,
	   bool_or(op = 'DELETE') AS delete_fired
FROM sb.statements;
SELECT * FROM users_drift;
DROP TRIGGER note_statements ON sb.users;

--
-- TRUNCATE
--
TRUNCATE sb.users;
SELECT count(*) FROM sa.users;
INSERT INTO sa.users VALUES (1, 'again@example.org', true, 1);
TRUNCATE sa.users, sb.users;
SELECT (SELECT count(*) FROM sa.users) AS sa_rows, (SELECT count(*) FROM sb.users) AS sb_rows;

--
-- a chain of links, closed into a cycle: a write goes round once and stops
--
CREATE SCHEMA sc;
CREATE TABLE sa.chain (id integer PRIMARY KEY, v text);
CREATE TABLE sb.chain (id integer PRIMARY KEY, v text);
CREATE TABLE sc.chain (id integer PRIMARY KEY, v text);
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON sa.chain FOR EACH ROW EXECUTE FUNCTION public.log_write();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON sb.chain FOR EACH ROW EXECUTE FUNCTION public.log_write();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON sc.chain FOR EACH ROW EXECUTE FUNCTION public.log_write();
SELECT mailsync.link('chain_ab', 'sa.chain', 'sb.chain', '{"id": "id", "v": "v"}');
SELECT mailsync.link('chain_bc', 'sb.chain', 'sc.chain', '{"id": "id", "v": "v"}');
SELECT mailsync.link('chain_ca', 'sc.chain', 'sa.chain', '{"id": "id", "v": "v"}');
TRUNCATE write_log;
INSERT INTO sa.chain VALUES (1, 'one');
SELECT * FROM writes;
TRUNCATE write_log;
UPDATE sc.chain SET v = 'uno' WHERE id = 1;
SELECT * FROM writes;
SELECT 'sa' AS t, * FROM sa.chain UNION ALL SELECT 'sb', * FROM sb.chain
UNION ALL SELECT 'sc', * FROM sc.chain ORDER BY 1;

SELECT mailsync.unlink('chain_ab');
SELECT mailsync.unlink('chain_bc');
SELECT mailsync.unlink('chain_ca');
SELECT mailsync.unlink('users');
