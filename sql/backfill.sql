--
-- backfill: carry the rows that exist before the link over, in keyset
-- batches of one transaction each, resumable; the drift verify finds
-- before and after.
--
-- (timings go to DETAIL, left out here)
\set VERBOSITY terse
CREATE SCHEMA ba;	-- legacy
CREATE SCHEMA bb;	-- current
CREATE TABLE ba.mailboxes (
	id			integer PRIMARY KEY,
	address		text NOT NULL,
	quota_mb	integer NOT NULL,
	active		boolean NOT NULL);
CREATE TABLE bb.mailboxes (
	id			integer PRIMARY KEY,
	email		text NOT NULL,
	quota		bigint NOT NULL,
	state		text NOT NULL);
INSERT INTO ba.mailboxes
SELECT g, 'box' || g || '@example.org', 100 + g % 7, g % 5 <> 0 FROM generate_series(1, 1000) g;
-- the current table has three rows already: one right, one stale, one of its own
INSERT INTO bb.mailboxes VALUES (1, 'box1@example.org', 105906176, 'active'),
	(2, 'stale@example.org', 0, 'disabled'), (5000, 'v2-only@example.org', 1048576, 'active');

-- a rename and two transforms
SELECT mailsync.link('boxes', 'ba.mailboxes', 'bb.mailboxes', $${
	"id": "id",
	"email": "address",
	"quota": {"up": "legacy.quota_mb::bigint * 1048576", "down": "(current.quota / 1048576)::integer",
			  "to": "quota_mb"},
	"state": {"up": "CASE WHEN legacy.active THEN 'active' ELSE 'disabled' END",
			  "down": "current.state = 'active'", "to": "active"}}$$);

-- before: almost everything is missing in current
SELECT missing_in_current, missing_in_legacy, differs, compared FROM mailsync.verify_summary('boxes');

-- three batches of 300 and one of 100
CALL mailsync.backfill('boxes', batch_size => 300);
SELECT link, direction, state, position, stop_at, rows_done, rows_total, batch_size
FROM mailsync.backfills;

-- the right row was left alone, the stale one rewritten; the v2-only row
-- is for verify to report: backfill up copies legacy rows only
SELECT * FROM bb.mailboxes WHERE id IN (1, 2, 3, 5, 5000) ORDER BY id;
SELECT * FROM mailsync.verify('boxes');
SELECT name, backfill, backfill_position, backfill_percent, drift, problem FROM mailsync.status();

-- a finished backfill says so; restart copies again, writing nothing new
CALL mailsync.backfill('boxes');
CALL mailsync.backfill('boxes', restart => true);

-- the other way: v2's own row reaches v1
CALL mailsync.backfill('boxes', 'down');
SELECT * FROM ba.mailboxes WHERE id = 5000;
SELECT missing_in_current, missing_in_legacy, differs FROM mailsync.verify_summary('boxes');

--
-- a backfill cancelled half-way resumes from its last batch
--
SET session_replication_role = replica;		-- empty current without the triggers
TRUNCATE bb.mailboxes;
SET session_replication_role = origin;
SET statement_timeout = '1s';
CALL mailsync.backfill('boxes', batch_size => 20, pause => '200ms', restart => true);
RESET statement_timeout;
SELECT state, rows_done > 0 AND rows_done < rows_total AS part_done,
	   (SELECT count(*) FROM bb.mailboxes) = rows_done AS copied_what_it_recorded
FROM mailsync.backfills WHERE link = 'boxes' AND direction = 'up';
SELECT backfill, problem LIKE 'the up backfill was interrupted at key {%' AS problem_says_interrupted
FROM mailsync.status();
SET client_min_messages = warning;	-- the key it resumes after differs from run to run
CALL mailsync.backfill('boxes', batch_size => 200);
RESET client_min_messages;
-- every row exactly once
SELECT state, rows_done, rows_total FROM mailsync.backfills WHERE link = 'boxes' AND direction = 'up';
SELECT count(*), count(DISTINCT id) FROM bb.mailboxes;
SELECT missing_in_current, missing_in_legacy, differs FROM mailsync.verify_summary('boxes');

--
-- a backfill that fails on a row stops at the batch before it, and resumes
-- there once the cause is gone
--
SET session_replication_role = replica;
TRUNCATE bb.mailboxes;
SET session_replication_role = origin;
CREATE FUNCTION public.refuse_box_500() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.id = 500 THEN
		RAISE EXCEPTION 'box 500 is refused';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER refuse_box_500 BEFORE INSERT ON bb.mailboxes
	FOR EACH ROW EXECUTE FUNCTION public.refuse_box_500();
CALL mailsync.backfill('boxes', batch_size => 100, restart => true);
SELECT state, position, rows_done, (SELECT count(*) FROM bb.mailboxes) AS copied
FROM mailsync.backfills WHERE link = 'boxes' AND direction = 'up';
DROP TRIGGER refuse_box_500 ON bb.mailboxes;
CALL mailsync.backfill('boxes', batch_size => 100);
SELECT state, position, rows_done, (SELECT count(*) FROM bb.mailboxes) AS copied
FROM mailsync.backfills WHERE link = 'boxes' AND direction = 'up';

--
-- a two-column key, walked in its index's order
--
CREATE TABLE ba.members (list integer, pos integer, address text NOT NULL, PRIMARY KEY (list, pos));
CREATE TABLE bb.members (list integer, pos integer, email text NOT NULL, PRIMARY KEY (list, pos));
INSERT INTO ba.members SELECT l, p, 'm' || l || '.' || p || '@example.org'
FROM generate_series(1, 7) l, generate_series(1, 9) p;
SELECT mailsync.link('members', 'ba.members', 'bb.members',
					 '{"list": "list", "pos": "pos", "email": "address"}');
CALL mailsync.backfill('members', batch_size => 10);
SELECT position, rows_done FROM mailsync.backfills WHERE link = 'members';
SELECT count(*) FROM mailsync.verify('members');

--
-- refused
--
\set VERBOSITY default
BEGIN;
CALL mailsync.backfill('boxes');
ROLLBACK;
CREATE FUNCTION public.backfill_in_a_function() RETURNS void LANGUAGE plpgsql AS $$
BEGIN CALL mailsync.backfill('boxes'); END $$;
CREATE ROLE regress_backfiller;
GRANT USAGE ON SCHEMA ba, bb TO regress_backfiller;
\pset format unaligned
\pset tuples_only on
SELECT format(E'%s\n    %s', what, try(sql)) FROM (VALUES
('from a function', $$SELECT public.backfill_in_a_function()$$),
('name is NULL', $$CALL mailsync.backfill(NULL)$$),
('unknown link', $$CALL mailsync.backfill('nope')$$),
('batch_size is zero', $$CALL mailsync.backfill('boxes', batch_size => 0)$$),
('negative pause', $$CALL mailsync.backfill('boxes', pause => '-1s')$$),
('unknown direction', $$CALL mailsync.backfill('boxes', 'sideways')$$)) AS c(what, sql);
SET ROLE regress_backfiller;
SELECT format(E'%s\n    %s', 'not the owner', try($$CALL mailsync.backfill('boxes')$$));
RESET ROLE;
\pset format aligned
\pset tuples_only off
-- a link that syncs one way only has no backfill the other way
CREATE TABLE ba.one_way (id integer PRIMARY KEY);
CREATE TABLE bb.one_way (id integer PRIMARY KEY);
SELECT mailsync.link('one_way', 'ba.one_way', 'bb.one_way', '{"id": "id"}', direction => 'up');
CALL mailsync.backfill('one_way', 'down');

REVOKE USAGE ON SCHEMA ba, bb FROM regress_backfiller;
DROP ROLE regress_backfiller;
DROP FUNCTION public.refuse_box_500();
SELECT mailsync.unlink('one_way');
SELECT mailsync.unlink('members');
