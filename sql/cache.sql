--
-- cache: each backend prepares a link's statements once and keeps them;
-- a change to either table or to the link rebuilds them before the next
-- write.  A change that breaks the mapping makes writes fail loudly, and
-- status() says what is broken.
--
CREATE SCHEMA ca;
CREATE SCHEMA cb;
CREATE TABLE ca.t (id integer PRIMARY KEY, a text, b integer);
CREATE TABLE cb.t (id integer PRIMARY KEY, a text, b integer);
SELECT mailsync.link('cache', 'ca.t', 'cb.t', '{"id": "id", "a": "a", "b": "b"}');
-- a function rather than a view, so that columns can still be retyped
CREATE FUNCTION cache_rows() RETURNS TABLE (side text, id integer, a text, b bigint)
LANGUAGE sql AS $$
SELECT 'ca', id, a, b FROM ca.t UNION ALL SELECT 'cb', id, a, b FROM cb.t ORDER BY 2, 1
$$;

INSERT INTO ca.t VALUES (1, 'one', 1);

-- a column added on either side: writes still sync, the new column keeps its default
ALTER TABLE cb.t ADD COLUMN c text DEFAULT 'new';
INSERT INTO ca.t VALUES (2, 'two', 2);
UPDATE ca.t SET a = 'uno' WHERE id = 1;
SELECT id, a, c FROM cb.t ORDER BY id;
ALTER TABLE ca.t ADD COLUMN d integer;
INSERT INTO ca.t VALUES (3, 'three', 3, 33);
INSERT INTO cb.t VALUES (4, 'four', 4);
SELECT * FROM cache_rows();

-- a mapped column dropped and added again has a new attribute number:
-- the link finds it by name
ALTER TABLE ca.t DROP COLUMN d;
ALTER TABLE ca.t DROP COLUMN b;
ALTER TABLE ca.t ADD COLUMN b integer;
SELECT attname, attnum FROM pg_attribute WHERE attrelid = 'ca.t'::regclass AND attnum > 0 ORDER BY attnum;
UPDATE ca.t SET b = id * 10;
INSERT INTO ca.t (id, a, b) VALUES (5, 'five', 5);
SELECT * FROM cache_rows();

-- a mapped column retyped: values of the new type are carried
ALTER TABLE ca.t ALTER COLUMN b TYPE bigint;
UPDATE ca.t SET b = b + 1 WHERE id = 5;
SELECT * FROM cache_rows() WHERE id = 5;

-- all in one transaction: link, write, change a table, write
CREATE TABLE ca.u (id integer PRIMARY KEY, v text);
CREATE TABLE cb.u (id integer PRIMARY KEY, v text);
BEGIN;
SELECT mailsync.link('cache_u', 'ca.u', 'cb.u', '{"id": "id", "v": "v"}');
INSERT INTO ca.u VALUES (1, 'a');
ALTER TABLE cb.u ADD COLUMN w text DEFAULT 'w';
INSERT INTO ca.u VALUES (2, 'b');
COMMIT;
SELECT * FROM cb.u ORDER BY id;

-- a link redefined in the same session takes effect at once
SELECT mailsync.unlink('cache_u');
SELECT mailsync.link('cache_u', 'ca.u', 'cb.u',
					 '{"id": "id", "v": {"up": "upper(legacy.v)", "down": "lower(current.v)", "to": "v"}}');
INSERT INTO ca.u VALUES (3, 'c');
UPDATE cb.u SET v = 'DOWN' WHERE id = 1;
SELECT 'ca' AS side, * FROM ca.u UNION ALL SELECT 'cb', id, v FROM cb.u ORDER BY 2, 1;

--
-- a change that breaks the mapping fails loudly, and status() says why
--
ALTER TABLE ca.t RENAME COLUMN a TO a_renamed;
INSERT INTO ca.t VALUES (6, 'six', 6);
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name = 'cache';
ALTER TABLE ca.t RENAME COLUMN a_renamed TO a;
INSERT INTO ca.t VALUES (6, 'six', 6);
SELECT * FROM cache_rows() WHERE id = 6;

ALTER TABLE cb.t ALTER COLUMN b TYPE point USING point(b, b);
UPDATE cb.t SET a = 'x' WHERE id = 6;
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name = 'cache';
ALTER TABLE cb.t ALTER COLUMN b TYPE integer USING (b[0])::integer;
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name = 'cache';

-- triggers disabled, set to fire only for replication, or dropped by hand
ALTER TABLE ca.t DISABLE TRIGGER mailsync_cache_update;
ALTER TABLE cb.t ENABLE REPLICA TRIGGER mailsync_cache_truncate;
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name = 'cache';
ALTER TABLE ca.t ENABLE TRIGGER mailsync_cache_update;
ALTER TABLE cb.t ENABLE TRIGGER mailsync_cache_truncate;
DROP TRIGGER mailsync_cache_insert ON cb.t;
SELECT name, triggers_ok, problem FROM mailsync.status() WHERE name = 'cache';

-- a linked table dropped: status() tells, unlink still cleans up
DROP TABLE cb.u;
SELECT name, triggers_ok, regexp_replace(problem, 'OID \d+', 'OID n') AS problem
FROM mailsync.status() WHERE name = 'cache_u';
SELECT regexp_replace(try($$INSERT INTO ca.u VALUES (4, 'd')$$), 'OID \d+', 'OID n', 'g');
SELECT regexp_replace(try($$SELECT * FROM mailsync.verify('cache_u')$$), 'OID \d+', 'OID n', 'g');
SELECT regexp_replace(try($$CALL mailsync.backfill('cache_u')$$), 'OID \d+', 'OID n', 'g');
SELECT mailsync.unlink('cache_u');
INSERT INTO ca.u VALUES (4, 'd');

SELECT mailsync.unlink('cache');
SELECT * FROM mailsync.status();
