--
-- roles: the write on the other table runs as that table's owner, so an
-- application role that may write only the legacy table still keeps the
-- current table in sync; and nothing lets it make mailsync write anything
-- else.
--
CREATE ROLE regress_owner;
CREATE ROLE regress_app_v1;		-- the old application: writes v1 only
CREATE ROLE regress_app_v2;		-- the new application: writes v2 only
CREATE SCHEMA ra AUTHORIZATION regress_owner;
CREATE SCHEMA rb AUTHORIZATION regress_owner;
CREATE SCHEMA rapp AUTHORIZATION regress_app_v1;

-- a table owner who is no superuser links its tables
SET ROLE regress_owner;
CREATE TABLE ra.accounts (id serial PRIMARY KEY, login text NOT NULL, kind varchar(10) NOT NULL);
CREATE TABLE rb.accounts (id integer PRIMARY KEY, login text NOT NULL, kind text NOT NULL,
						  written_by name NOT NULL DEFAULT current_user);
SELECT mailsync.link('accounts', 'ra.accounts', 'rb.accounts', $${
	"id": "id", "login": "login",
	"kind": {"up": "lower(legacy.kind)", "down": "upper(current.kind)", "to": "kind"}}$$);
GRANT USAGE ON SCHEMA ra TO regress_app_v1;
GRANT SELECT, INSERT, UPDATE, DELETE ON ra.accounts TO regress_app_v1;
GRANT USAGE ON SEQUENCE ra.accounts_id_seq TO regress_app_v1, regress_app_v2;
GRANT USAGE ON SCHEMA rb TO regress_app_v2;
GRANT SELECT, INSERT, UPDATE, DELETE ON rb.accounts TO regress_app_v2;
RESET ROLE;
SELECT name, created_by FROM mailsync.links WHERE name = 'accounts';

-- allowed: the old application writes v1, and v2 follows, written as its owner
SET ROLE regress_app_v1;
INSERT INTO ra.accounts (login, kind) VALUES ('alice', 'IMAP'), ('bob', 'POP');
UPDATE ra.accounts SET login = 'robert' WHERE login = 'bob';
RESET ROLE;
SELECT * FROM rb.accounts ORDER BY id;

-- refused: v2 itself stays out of its reach
SET ROLE regress_app_v1;
SELECT try($$INSERT INTO rb.accounts (id, login, kind) VALUES (99, 'mallory', 'imap')$$);
SELECT try($$SELECT * FROM rb.accounts$$);
SELECT try($$UPDATE rb.accounts SET login = 'mallory'$$);
-- and so do links: it may not link a table it does not own to one it owns
CREATE TABLE rapp.mine (id integer PRIMARY KEY);
SELECT try($$SELECT mailsync.link('mine', 'ra.accounts', 'rapp.mine', '{"id": "id"}')$$);
SELECT try($$SELECT mailsync.unlink('accounts')$$);
SELECT try($$UPDATE mailsync.links SET columns = '{}'$$);
RESET ROLE;

-- the new application writes v2 only, and v1 follows
SET ROLE regress_app_v2;
INSERT INTO rb.accounts (login, kind) VALUES ('carol', 'smtp');
DELETE FROM rb.accounts WHERE login = 'alice';
SELECT try($$SELECT * FROM ra.accounts$$);
RESET ROLE;
SELECT * FROM ra.accounts ORDER BY id;

--
-- attempts to make mailsync write elsewhere, as the old application
--
SET ROLE regress_app_v1;
CREATE TABLE rapp.canary (note text);
GRANT INSERT ON rapp.canary TO PUBLIC;

-- its own table, with a trigger that calls mailsync's trigger function
-- under the link's trigger name: refused, nothing written to v2
CREATE TABLE rapp.evil (id integer PRIMARY KEY, login text, kind text);
CREATE TRIGGER mailsync_accounts_insert AFTER INSERT ON rapp.evil
	REFERENCING NEW TABLE AS mailsync_new
	FOR EACH STATEMENT EXECUTE FUNCTION mailsync.sync_trigger('accounts');
SELECT try($$INSERT INTO rapp.evil VALUES (42, 'mallory', 'imap')$$);
DROP TRIGGER mailsync_accounts_insert ON rapp.evil;
CREATE TRIGGER mailsync_accounts AFTER INSERT ON rapp.evil
	FOR EACH ROW EXECUTE FUNCTION mailsync.sync_trigger('accounts');
SELECT try($$INSERT INTO rapp.evil VALUES (42, 'mallory', 'imap')$$);

-- a search_path that puts its own lower(text) and = before pg_catalog's:
-- the link's statements were parsed with a pinned path and do not see them
CREATE FUNCTION rapp.lower(text) RETURNS text LANGUAGE sql AS $$
	INSERT INTO rapp.canary VALUES ('lower called by ' || current_user);
	SELECT 'pwned'::text
$$;
CREATE FUNCTION rapp.int_eq(integer, integer) RETURNS boolean LANGUAGE sql AS $$
	INSERT INTO rapp.canary VALUES ('= called by ' || current_user);
	SELECT $1 OPERATOR(pg_catalog.=) $2
$$;
CREATE OPERATOR rapp.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = rapp.int_eq);
SET search_path = rapp, pg_catalog, public;
SELECT lower('X') AS lower_here_is_planted;
TRUNCATE rapp.canary;
INSERT INTO ra.accounts (login, kind) VALUES ('dave', 'IMAP');
UPDATE ra.accounts SET kind = 'POP' WHERE login = 'dave';
DELETE FROM ra.accounts WHERE login = 'robert';
RESET search_path;
SELECT count(*) AS canary_rows FROM rapp.canary;
RESET ROLE;
SELECT * FROM rb.accounts ORDER BY id;

-- row security forced on v2 does not hide rows from the sync
SET ROLE regress_owner;
ALTER TABLE rb.accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE rb.accounts FORCE ROW LEVEL SECURITY;
CREATE POLICY nothing ON rb.accounts USING (false);
RESET ROLE;
SET ROLE regress_app_v1;
INSERT INTO ra.accounts (login, kind) VALUES ('erin', 'IMAP');
UPDATE ra.accounts SET login = 'erin2' WHERE login = 'erin';
RESET ROLE;
SELECT login, kind FROM rb.accounts WHERE login LIKE 'erin%';

-- clean up
SET ROLE regress_owner;
SELECT mailsync.unlink('accounts');
RESET ROLE;
SET client_min_messages = warning;
DROP SCHEMA ra, rb, rapp CASCADE;
RESET client_min_messages;
DROP ROLE regress_owner, regress_app_v1, regress_app_v2;
