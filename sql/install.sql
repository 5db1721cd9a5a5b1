--
-- install: CREATE EXTENSION, what it makes, and who may touch the catalog.
-- Also defines what later tests share: try(sql) shows an error as one line
-- with its SQLSTATE, message and hint; log_write() records every write to
-- a table in write_log, to show what mailsync writes (view writes).
--
CREATE EXTENSION mailsync;

-- the extension's objects, all in schema mailsync
SELECT pg_describe_object(classid, objid, 0) AS object
FROM pg_depend
WHERE refclassid = 'pg_extension'::regclass
  AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'mailsync')
  AND deptype = 'e'
ORDER BY 1;

SELECT extname, extversion, extrelocatable, extnamespace::regnamespace
FROM pg_extension WHERE extname = 'mailsync';

-- everyone may call the functions (each checks what it must) and read the
-- catalog; no one but its owner may write the catalog
SELECT has_schema_privilege('public', 'mailsync', 'USAGE') AS public_usage,
	   has_table_privilege('public', 'mailsync.links', 'SELECT') AS public_select,
       has_table_privilege('public', 'mailsync.links', 'INSERT') AS public_insert,
       has_table_privilege('public', 'mailsync.links', 'UPDATE') AS public_update,
       has_table_privilege('public', 'mailsync.links', 'DELETE') AS public_delete;

-- the catalog is dumped by pg_dump
SELECT extconfig::regclass[] FROM pg_extension WHERE extname = 'mailsync';

-- not relocatable
ALTER EXTENSION mailsync SET SCHEMA public;

-- no SECURITY DEFINER function, and the plpgsql one pins its search_path
SELECT p.oid::regprocedure, p.prosecdef, p.proconfig
FROM pg_proc p
WHERE p.pronamespace = 'mailsync'::regnamespace AND (p.prosecdef OR p.proconfig IS NOT NULL)
ORDER BY 1;

-- try(sql): run a statement, return 'ok' or "SQLSTATE: message (hint)"
CREATE FUNCTION public.try(sql text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	st text;
	msg text;
	hint text;
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
	RETURN st || ': ' || msg || CASE WHEN hint <> '' THEN ' (hint: ' || hint || ')' ELSE '' END;
END
$$;

-- log_write(): an audit trigger, to see every write a statement causes
CREATE TABLE public.write_log (n serial, tbl text, op text, id integer);
CREATE FUNCTION public.log_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.write_log (tbl, op, id)
	VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_OP,
			CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END);
	RETURN NULL;
END
$$;
CREATE VIEW public.writes AS SELECT tbl, op, id FROM public.write_log ORDER BY n;
