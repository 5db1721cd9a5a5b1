/*-------------------------------------------------------------------------
 *
 * ensure_uuid.c
 *	  CALL mailsync.ensure_uuid(tbl, col, ...): give every row of a table a
 *	  uuid, in one idempotent command, without a long lock.
 *
 * The Postal 1.x -> 2.x case: a dump restored without the migration
 * leaves credentials.uuid missing or NULL, and the new credentials page
 * fails.  ensure_uuid
 *
 *	  1. adds the column (type uuid) when it is missing, or keeps an
 *		 existing uuid, text or varchar column as it is;
 *	  2. gives it a default for new rows when it has none;
 *	  3. fills every NULL (and, for text, blank) value in batches that walk
 *		 the table in physical order, committing after each batch;
 *	  4. makes it NOT NULL through a NOT VALID check constraint, validated
 *		 under a lock that lets writes go on, which lets SET NOT NULL skip
 *		 its scan;
 *	  5. makes it unique with a unique index, after checking that no value
 *		 is shared by two rows;
 *	  6. optionally makes it immutable: an AFTER UPDATE trigger, whose
 *		 WHEN clause keeps it off every row that does not change its uuid,
 *		 rejects an update that changes a uuid once given.
 *
 * Each step that is already done is skipped, so a second run changes
 * nothing and an interrupted run resumes.  A uuid once given is never
 * regenerated.  Called with CALL outside a transaction block it commits
 * after each step and batch; inside one (or from a function) it runs in
 * the caller's transaction.  DDL steps wait at most mailsync.lock_timeout
 * for their lock and retry with a growing pause, so they never queue
 * writers behind a long transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "mailsync.h"

PG_FUNCTION_INFO_V1(mailsync_ensure_uuid);
PG_FUNCTION_INFO_V1(mailsync_uuid_immutable);

#define MS_UUID_TEXT_LEN	36

/* What ensure_uuid works on, resolved once */
typedef struct MsEnsure
{
	Oid			relid;
	char	   *rel;			/* quoted, qualified name */
	char	   *display;		/* schema.table, for messages */
	char	   *col;			/* column name, unquoted */
	char	   *qcol;			/* column name, quoted */
	bool		is_text;		/* text/varchar rather than uuid */
	const char *generator;		/* "v4" or "v7" */
	bool		atomic;
	bool		changed;		/* did any step change anything? */
} MsEnsure;

/*
 * ms_ensure_commit ends a step: commits when running non-atomically.
 */
static void
ms_ensure_commit(MsEnsure *s)
{
	if (!s->atomic)
		MsCommitPinned();
}

/*
 * ms_truncated_name returns prefix || col cut to a valid identifier length.
 */
static char *
ms_truncated_name(const char *prefix, const char *col)
{
	char	   *name = psprintf("%s%s", prefix, col);
	int			len = pg_mbcliplen(name, strlen(name), NAMEDATALEN - 1);

	name[len] = '\0';
	return name;
}

/*
 * ms_generator_sql returns the SQL that makes one value for the column.
 */
static char *
ms_generator_sql(MsEnsure *s)
{
	return psprintf("mailsync.uuid_%s()%s", s->generator,
					s->is_text ? "::pg_catalog.text" : "");
}

/*
 * ms_blank_sql returns the condition that a row still needs a uuid.
 */
static char *
ms_blank_sql(MsEnsure *s, const char *alias)
{
	const char *prefix = alias ? psprintf("%s.", alias) : "";

	if (s->is_text)
		return psprintf("(%s%s IS NULL OR pg_catalog.btrim(%s%s) OPERATOR(pg_catalog.=) '')",
						prefix, s->qcol, prefix, s->qcol);
	return psprintf("%s%s IS NULL", prefix, s->qcol);
}

/*
 * ms_has_unique_index tells whether a unique index covers exactly the
 * column (the kind that link accepts as a key index).
 */
static bool
ms_has_unique_index(MsEnsure *s)
{
	Relation	rel = table_open(s->relid, AccessShareLock);
	AttrNumber	attno = get_attnum(s->relid, s->col);
	Oid			eqop;
	bool		found = OidIsValid(MsFindKeyIndex(rel, 1, &attno, &eqop));

	table_close(rel, AccessShareLock);
	return found;
}

/*
 * ms_ensure_no_duplicates refuses, before anything is changed, a column in
 * which two rows share a value: a uuid is never regenerated, so only the
 * DBA can decide which row keeps it.
 */
static void
ms_ensure_no_duplicates(MsEnsure *s)
{
	if (get_attnum(s->relid, s->col) == InvalidAttrNumber || ms_has_unique_index(s))
		return;

	MsSpiExec(psprintf("SELECT pg_catalog.count(*), pg_catalog.min(v::pg_catalog.text) FROM "
					   "(SELECT %s AS v FROM ONLY %s WHERE NOT %s "
					   "GROUP BY %s HAVING pg_catalog.count(*) > 1) AS d",
					   s->qcol, s->rel, ms_blank_sql(s, NULL), s->qcol),
			  SPI_OK_SELECT);
	{
		bool		isnull;
		int64		dups = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
													   SPI_tuptable->tupdesc, 1,
													   &isnull));

		if (dups > 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNIQUE_VIOLATION),
					 errmsg_plural("column \"%s\" of table \"%s\" has " INT64_FORMAT " value shared by more than one row",
								   "column \"%s\" of table \"%s\" has " INT64_FORMAT " values shared by more than one row",
								   dups, s->col, s->display, dups),
					 errdetail("For example %s.",
							   SPI_getvalue(SPI_tuptable->vals[0],
											SPI_tuptable->tupdesc, 2)),
					 errhint("A uuid is never regenerated: decide which row keeps each value, set the others to NULL, then run ensure_uuid again.")));
	}
}

/*
 * ms_ensure_column makes sure the column exists with a usable type and a
 * default for new rows.
 */
static void
ms_ensure_column(MsEnsure *s)
{
	Relation	rel = table_open(s->relid, AccessShareLock);
	AttrNumber	attno = get_attnum(s->relid, s->col);
	Form_pg_attribute att = NULL;
	bool		has_default = false;

	if (attno < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("column \"%s\" of table \"%s\" is a system column",
						s->col, s->display)));
	if (attno > 0)
	{
		att = TupleDescAttr(RelationGetDescr(rel), attno - 1);
		has_default = att->atthasdef || att->attidentity || att->attgenerated;
		if (att->attgenerated)
			ereport(ERROR,
					(errcode(ERRCODE_GENERATED_ALWAYS),
					 errmsg("column \"%s\" of table \"%s\" is a generated column",
							s->col, s->display),
					 errhint("ensure_uuid needs a column it can fill.")));
		if (att->atttypid == TEXTOID ||
			(att->atttypid == VARCHAROID &&
			 (att->atttypmod < 0 || att->atttypmod - VARHDRSZ >= MS_UUID_TEXT_LEN)))
			s->is_text = true;
		else if (att->atttypid != UUIDOID)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("column \"%s\" of table \"%s\" is of type %s",
							s->col, s->display,
							format_type_with_typemod(att->atttypid, att->atttypmod)),
					 errhint("ensure_uuid keeps uuid, text and varchar columns of at least %d characters; convert it first, for example with ALTER TABLE ... ALTER COLUMN ... TYPE uuid USING ...::uuid.",
							 MS_UUID_TEXT_LEN)));
	}
	table_close(rel, AccessShareLock);
	ms_ensure_no_duplicates(s);

	if (attno == InvalidAttrNumber)
	{
		MsSpiExecRetryLock(psprintf("ALTER TABLE %s ADD COLUMN %s pg_catalog.uuid",
									s->rel, s->qcol),
						   SPI_OK_UTILITY);
		ereport(NOTICE,
				(errmsg("added column \"%s\" of type uuid to table \"%s\"",
						s->col, s->display)));
		s->changed = true;
	}
	if (!has_default)
	{
		MsSpiExecRetryLock(psprintf("ALTER TABLE %s ALTER COLUMN %s SET DEFAULT %s",
									s->rel, s->qcol, ms_generator_sql(s)),
						   SPI_OK_UTILITY);
		ereport(NOTICE,
				(errmsg("column \"%s\" of table \"%s\" now defaults to %s",
						s->col, s->display, ms_generator_sql(s))));
		s->changed = true;
	}
	ms_ensure_commit(s);
}

/*
 * ms_ensure_fill gives a uuid to every row that has none, walking the
 * table by ctid in batches.  Rows written behind the walk are caught by
 * the final sweep in ms_ensure_not_null.  Returns the rows filled.
 */
static uint64
ms_ensure_fill(MsEnsure *s, int batch_size)
{
	char	   *sql;
	Oid			argtypes[2] = {TIDOID, INT4OID};
	Datum		args[2];
	ItemPointerData last;
	uint64		total = 0;
	TimestampTz last_report = GetCurrentTimestamp();

	sql = psprintf("WITH b AS MATERIALIZED (SELECT ctid FROM ONLY %s WHERE ctid > $1 AND %s LIMIT $2), "
				   "u AS (UPDATE ONLY %s AS x SET %s = %s FROM b "
				   "WHERE x.ctid OPERATOR(pg_catalog.=) b.ctid AND %s RETURNING 1) "
				   "SELECT (SELECT pg_catalog.count(*) FROM u), (SELECT pg_catalog.max(ctid) FROM b)",
				   s->rel, ms_blank_sql(s, NULL), s->rel, s->qcol,
				   ms_generator_sql(s), ms_blank_sql(s, "x"));
	ItemPointerSet(&last, 0, 0);
	args[1] = Int32GetDatum(batch_size);

	for (;;)
	{
		bool		isnull;
		int64		filled;
		Datum		maxtid;

		args[0] = PointerGetDatum(&last);
		MsSpiExecWithArgs(sql, 2, argtypes, args, NULL, SPI_OK_SELECT);
		filled = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));
		maxtid = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2,
							   &isnull);
		if (isnull)
			break;
		last = *(ItemPointer) DatumGetPointer(maxtid);
		total += filled;
		ms_ensure_commit(s);

		if (TimestampDifferenceExceeds(last_report, GetCurrentTimestamp(),
									   MS_PROGRESS_SECS * 1000))
		{
			ereport(NOTICE,
					(errmsg("table \"%s\": " UINT64_FORMAT " rows given a uuid so far, at block %u",
							s->display, total, ItemPointerGetBlockNumber(&last))));
			last_report = GetCurrentTimestamp();
		}
	}
	ms_ensure_commit(s);
	return total;
}

/*
 * ms_ensure_not_null makes the column NOT NULL without holding a lock
 * that blocks writes while the table is scanned.  Returns the rows that
 * the final sweep filled.
 */
static uint64
ms_ensure_not_null(MsEnsure *s)
{
	char	   *chk = ms_truncated_name("mailsync_not_null_", s->col);
	Oid			argtypes[2] = {REGCLASSOID, TEXTOID};
	Datum		args[2];
	uint64		swept;
	Relation	rel = table_open(s->relid, AccessShareLock);
	bool		not_null = TupleDescAttr(RelationGetDescr(rel),
										 get_attnum(s->relid, s->col) - 1)->attnotnull;

	table_close(rel, AccessShareLock);
	if (not_null)
	{
		/* NOT NULL already; text columns may still hold blanks */
		MsSpiExec(psprintf("UPDATE ONLY %s SET %s = %s WHERE %s", s->rel, s->qcol,
						   ms_generator_sql(s), ms_blank_sql(s, NULL)),
				  SPI_OK_UPDATE);
		swept = SPI_processed;
		ms_ensure_commit(s);
		return swept;
	}

	args[0] = ObjectIdGetDatum(s->relid);
	args[1] = CStringGetTextDatum(chk);
	MsSpiExecWithArgs("SELECT 1 FROM pg_catalog.pg_constraint WHERE conrelid = $1 AND conname = $2",
					  2, argtypes, args, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		MsSpiExecRetryLock(psprintf("ALTER TABLE %s ADD CONSTRAINT %s CHECK (%s IS NOT NULL) NOT VALID",
									s->rel, quote_identifier(chk), s->qcol),
						   SPI_OK_UTILITY);
		ms_ensure_commit(s);
	}

	/* rows that got NULL behind the batches, before the check existed */
	MsSpiExec(psprintf("UPDATE ONLY %s SET %s = %s WHERE %s", s->rel, s->qcol,
					   ms_generator_sql(s), ms_blank_sql(s, NULL)),
			  SPI_OK_UPDATE);
	swept = SPI_processed;
	ms_ensure_commit(s);

	MsSpiExecRetryLock(psprintf("ALTER TABLE %s VALIDATE CONSTRAINT %s",
								s->rel, quote_identifier(chk)),
					   SPI_OK_UTILITY);
	ms_ensure_commit(s);
	MsSpiExecRetryLock(psprintf("ALTER TABLE %s ALTER COLUMN %s SET NOT NULL, DROP CONSTRAINT %s",
								s->rel, s->qcol, quote_identifier(chk)),
					   SPI_OK_UTILITY);
	ereport(NOTICE,
			(errmsg("column \"%s\" of table \"%s\" is now NOT NULL", s->col, s->display)));
	s->changed = true;
	ms_ensure_commit(s);
	return swept;
}

/*
 * ms_ensure_unique makes the column unique, refusing to go on (and to
 * regenerate anything) when rows share a value.
 */
static void
ms_ensure_unique(MsEnsure *s)
{
	if (ms_has_unique_index(s))
		return;

	MsSpiExecRetryLock(psprintf("CREATE UNIQUE INDEX ON %s (%s)", s->rel, s->qcol),
					   SPI_OK_UTILITY);
	ereport(NOTICE,
			(errmsg("column \"%s\" of table \"%s\" is now unique", s->col, s->display)));
	s->changed = true;
	ms_ensure_commit(s);
}

/*
 * ms_ensure_immutable adds the trigger that rejects a change of a uuid
 * once given.
 */
static void
ms_ensure_immutable(MsEnsure *s)
{
	char	   *trg = ms_truncated_name("mailsync_immutable_", s->col);
	Oid			argtypes[2] = {REGCLASSOID, TEXTOID};
	Datum		args[2];
	char	   *given;

	args[0] = ObjectIdGetDatum(s->relid);
	args[1] = CStringGetTextDatum(trg);
	MsSpiExecWithArgs("SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = $2",
					  2, argtypes, args, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
		return;

	given = s->is_text ?
		psprintf("OLD.%s IS NOT NULL AND pg_catalog.btrim(OLD.%s) OPERATOR(pg_catalog.<>) ''",
				 s->qcol, s->qcol) :
		psprintf("OLD.%s IS NOT NULL", s->qcol);
	MsSpiExecRetryLock(psprintf("CREATE TRIGGER %s AFTER UPDATE ON %s FOR EACH ROW "
								"WHEN (%s AND NEW.%s IS DISTINCT FROM OLD.%s) "
								"EXECUTE FUNCTION mailsync.uuid_immutable(%s)",
								quote_identifier(trg), s->rel, given, s->qcol,
								s->qcol, quote_literal_cstr(s->col)),
					   SPI_OK_UTILITY);
	ereport(NOTICE,
			(errmsg("column \"%s\" of table \"%s\" is now immutable", s->col, s->display)));
	s->changed = true;
	ms_ensure_commit(s);
}

/*
 * mailsync_ensure_uuid implements the procedure mailsync.ensure_uuid(tbl,
 * col, batch_size, immutable, generator).
 */
Datum
mailsync_ensure_uuid(PG_FUNCTION_ARGS)
{
	const char *fn = "mailsync.ensure_uuid";
	MsEnsure	s;
	Relation	rel;
	Oid			nsp;
	int			batch_size;
	bool		immutable;
	uint64		filled;

	MsCheckNotNullArg(fcinfo, 0, "tbl", fn);
	MsCheckNotNullArg(fcinfo, 1, "col", fn);
	MsCheckNotNullArg(fcinfo, 2, "batch_size", fn);
	MsCheckNotNullArg(fcinfo, 3, "immutable", fn);
	MsCheckNotNullArg(fcinfo, 4, "generator", fn);

	memset(&s, 0, sizeof(s));
	s.relid = PG_GETARG_OID(0);
	s.col = pstrdup(NameStr(*PG_GETARG_NAME(1)));
	s.qcol = pstrdup(quote_identifier(s.col));
	batch_size = PG_GETARG_INT32(2);
	immutable = PG_GETARG_BOOL(3);
	s.generator = text_to_cstring(PG_GETARG_TEXT_PP(4));
	s.atomic = !(fcinfo->context && IsA(fcinfo->context, CallContext) &&
				 !castNode(CallContext, fcinfo->context)->atomic);

	if (batch_size <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_size must be greater than zero, not %d", batch_size),
				 errhint("Rows are filled batch_size at a time; 10000 is a good start.")));
	if (strcmp(s.generator, "v4") != 0 && strcmp(s.generator, "v7") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid generator \"%s\"", s.generator),
				 errhint("Use 'v7' (time-ordered, the default) or 'v4' (random).")));
	if (s.col[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("column name must not be empty"),
				 errhint("Name the uuid column, for example 'uuid'.")));

	rel = try_relation_open(s.relid, AccessShareLock);
	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", s.relid)));
	s.display = MsRelDisplayName(s.relid);
	s.rel = MsQualifiedRelName(s.relid);
	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("table \"%s\" is partitioned", s.display),
				 errhint("Run ensure_uuid on each partition.")));
	if (rel->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", s.display),
				 errhint("ensure_uuid works on plain tables, not views, materialized views, sequences or indexes.")));
	nsp = RelationGetNamespace(rel);
	if (IsCatalogNamespace(nsp) || IsToastNamespace(nsp) ||
		nsp == get_namespace_oid("mailsync", true))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("table \"%s\" is a system table", s.display),
				 errhint("ensure_uuid changes the application's tables, not PostgreSQL's or mailsync's own.")));
	relation_close(rel, AccessShareLock);
	MsCheckTableOwner(s.relid);

	if (SPI_connect_ext(s.atomic ? 0 : SPI_OPT_NONATOMIC) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	MsPushPinnedPath();
	ms_ensure_column(&s);
	filled = ms_ensure_fill(&s, batch_size);
	filled += ms_ensure_not_null(&s);
	ms_ensure_unique(&s);
	if (immutable)
		ms_ensure_immutable(&s);
	MsPopPinnedPath();

	if (filled > 0)
		ereport(NOTICE,
				(errmsg("table \"%s\": " UINT64_FORMAT " rows given a uuid in column \"%s\"",
						s.display, filled, s.col)));
	else if (!s.changed)
		ereport(NOTICE,
				(errmsg("table \"%s\": column \"%s\" already holds a unique, NOT NULL uuid in every row; nothing to do",
						s.display, s.col)));

	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * mailsync_uuid_immutable is the trigger function behind ensure_uuid's
 * immutable option.  Its WHEN clause fires it only for an update that
 * changes a uuid already given, which it rejects.
 */
Datum
mailsync_uuid_immutable(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	const char *col;
	int			attno;
	char	   *oldval;
	char	   *newval;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BY_UPDATE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) || td->tg_trigger->tgnargs != 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("mailsync.uuid_immutable: must be called as a row UPDATE trigger with the column name as argument")));
	col = td->tg_trigger->tgargs[0];
	attno = SPI_fnumber(td->tg_relation->rd_att, col);
	if (attno <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of table \"%s\" does not exist", col,
						MsRelDisplayName(RelationGetRelid(td->tg_relation)))));
	oldval = SPI_getvalue(td->tg_trigtuple, td->tg_relation->rd_att, attno);
	newval = SPI_getvalue(td->tg_newtuple, td->tg_relation->rd_att, attno);
	ereport(ERROR,
			(errcode(ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION),
			 errmsg("column \"%s\" of table \"%s\" is immutable", col,
					MsRelDisplayName(RelationGetRelid(td->tg_relation))),
			 errdetail("The update would change %s to %s.", oldval,
					   newval ? newval : "NULL"),
			 errhint("A uuid once given never changes; insert a new row instead.")));
	PG_RETURN_NULL();
}
