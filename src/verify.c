/*-------------------------------------------------------------------------
 *
 * verify.c
 *	  mailsync.verify, mailsync.verify_summary and mailsync.repair: find the
 *	  drift between the two tables of a link, and make one side match the
 *	  other for exactly the keys that drifted.
 *
 * Both compare the tables through the mapping of one direction in one
 * set-based pass, a full join on the key (MsSqlDiff): the source rows as
 * the mapping turns them into target rows, against the target rows.  A key
 * is missing on one side, or the columns the mapping writes differ in their
 * stored image.  repair runs the same join inside the one statement that
 * inserts, rewrites and deletes target rows, with the link's triggers
 * silenced so that nothing echoes back.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rls.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "mailsync.h"

PG_FUNCTION_INFO_V1(mailsync_verify);
PG_FUNCTION_INFO_V1(mailsync_verify_summary);
PG_FUNCTION_INFO_V1(mailsync_repair);

static const char *const side_word[2] = {"legacy", "current"};

/*
 * ms_check_reads_all refuses to compare a link's tables when the caller
 * could not read every row of both: without SELECT the comparison would
 * fail half-way, and under row security it would compare, and record, a
 * part of the rows as if it were all of them.
 */
static void
ms_check_reads_all(const MsLinkDef *def)
{
	Oid			rels[2] = {def->legacy, def->current};
	Oid			user = GetUserId();

	for (int i = 0; i < 2; i++)
	{
		if (pg_class_aclcheck(rels[i], user, ACL_SELECT) != ACLCHECK_OK &&
			pg_attribute_aclcheck_all(rels[i], user, ACL_SELECT, ACLMASK_ALL) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to compare link \"%s\": role \"%s\" may not read table \"%s\"",
							def->name, GetUserNameFromId(user, false),
							MsRelDisplayName(rels[i])),
					 errhint("GRANT SELECT ON %s TO the role, or run it as the owner of the table.",
							 MsQualifiedRelName(rels[i]))));
		if (check_enable_rls(rels[i], InvalidOid, true) == RLS_ENABLED)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("row-level security of table \"%s\" hides rows from role \"%s\"",
							MsRelDisplayName(rels[i]), GetUserNameFromId(user, false)),
					 errdetail("Link \"%s\" would be compared on the rows the role may see only.",
							   def->name),
					 errhint("Run it as a role with BYPASSRLS, or as the table's owner where row security is not forced.")));
	}
}

/*
 * ms_open_link connects to SPI, pins the search path and loads the link
 * named by the first argument; ms_close_link undoes the first two.  The
 * caller must be able to read every row of both tables, and with
 * need_owner must own both.
 */
static MsLinkDef *
ms_open_link(FunctionCallInfo fcinfo, bool need_owner)
{
	MsLinkDef  *def;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MsPushPinnedPath();
	def = MsLoadLink(text_to_cstring(PG_GETARG_TEXT_PP(0)), false);
	if (need_owner)
	{
		MsCheckTableOwner(def->legacy);
		MsCheckTableOwner(def->current);
	}
	ms_check_reads_all(def);
	return def;
}

static void
ms_close_link(void)
{
	MsPopPinnedPath();
	SPI_finish();
}

/*
 * ms_direction_for resolves the direction a comparison runs in: the one
 * named (by its source side for repair), or the link's own (up, unless the
 * link syncs down only).
 */
static int
ms_direction_for(MsLinkDef *def, FunctionCallInfo fcinfo, int argno,
				 bool by_source)
{
	int			side;

	if (PG_ARGISNULL(argno))
		return def->dir[MS_UP].enabled ? MS_UP : MS_DOWN;

	{
		char	   *word = text_to_cstring(PG_GETARG_TEXT_PP(argno));

		if (by_source)
			side = strcmp(word, "legacy") == 0 ? MS_UP :
				strcmp(word, "current") == 0 ? MS_DOWN : -1;
		else
			side = strcmp(word, "up") == 0 ? MS_UP :
				strcmp(word, "down") == 0 ? MS_DOWN : -1;
		if (side < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s \"%s\"", by_source ? "source" : "direction", word),
					 by_source ?
					 errhint("Use 'legacy' (make current match legacy) or 'current' (make legacy match current).") :
					 errhint("Use 'up' (legacy through the mapping against current) or 'down'.")));
	}
	if (!def->dir[side].enabled)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("link \"%s\" does not map %s rows to %s rows", def->name,
						side_word[side], side_word[1 - side]),
				 errhint("The link's direction is '%s'.", def->direction)));
	return side;
}

/*
 * ms_sql_verify returns the query of verify's rows: the key, the problem,
 * and the values of each side as jsonb, keyed by target column: for a
 * missing key, all of the present side's; for "differs", only the columns
 * that differ.
 */
static char *
ms_sql_verify(const MsDirection *d, int side)
{
	StringInfoData buf;
	StringInfoData vals[2];
	const char *src = side_word[side];
	const char *dst = side_word[1 - side];
	int			ncompared = 0;

	for (int i = 0; i < 2; i++)
		initStringInfo(&vals[i]);
	for (int t = 0; t < d->ntargets; t++)
	{
		const char *col = d->targets[t].column;

		if (d->targets[t].is_key || !d->targets[t].reads_source)
			continue;
		for (int i = 0; i < 2; i++)
			appendStringInfo(&vals[i], "%s%s, x.%c_%d", ncompared ? ", " : "",
							 quote_literal_cstr(col), i == 0 ? 's' : 't', t);
		ncompared++;
	}

	initStringInfo(&buf);
	appendStringInfoString(&buf, "SELECT pg_catalog.jsonb_build_object(");
	for (int k = 0; k < d->nkeys; k++)
		appendStringInfo(&buf, "%s%s, x.k%d", k ? ", " : "",
						 quote_literal_cstr(get_attname(d->dst_relid, d->dst_key[k], false)),
						 k + 1);
	appendStringInfoString(&buf, "), x.problem");
	for (int i = 0; i < 2; i++)
	{
		char		self = i == 0 ? 's' : 't';

		appendStringInfo(&buf, ", CASE WHEN x.problem = 'missing in %s' THEN NULL "
						 "WHEN x.problem = 'missing in %s' THEN pg_catalog.jsonb_build_object(%s) ",
						 i == 0 ? src : dst, i == 0 ? dst : src, vals[i].data);
		if (ncompared > 0)
		{
			int			n = 0;

			appendStringInfoString(&buf, "ELSE (SELECT pg_catalog.jsonb_object_agg(c.n, c.v) FROM (VALUES ");
			for (int t = 0; t < d->ntargets; t++)
			{
				if (d->targets[t].is_key || !d->targets[t].reads_source)
					continue;
				appendStringInfo(&buf, "%s(%s, pg_catalog.to_jsonb(x.%c_%d), "
								 "pg_catalog.record_image_ne(ROW(x.s_%d), ROW(x.t_%d)))",
								 n++ ? ", " : "", quote_literal_cstr(d->targets[t].column),
								 self, t, t, t);
			}
			appendStringInfoString(&buf, ") AS c(n, v, d) WHERE c.d) ");
		}
		appendStringInfoString(&buf, "END");
	}
	appendStringInfo(&buf, " FROM (%s) AS x ORDER BY ", MsSqlDiff(d, src, dst, true));
	for (int k = 0; k < d->nkeys; k++)
		appendStringInfo(&buf, "%sx.k%d", k ? ", " : "", k + 1);
	return buf.data;
}

/*
 * ms_record_verification keeps the last result of a link's verification
 * for mailsync.status(), unless the transaction is read-only.
 */
static void
ms_record_verification(MsLinkDef *def, int side, int64 counts[3],
					   TimestampTz started)
{
	Oid			argtypes[6] = {TEXTOID, TEXTOID, INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID};
	Datum		args[6];

	if (XactReadOnly)
		return;
	args[0] = CStringGetTextDatum(def->name);
	args[1] = CStringGetTextDatum(side == MS_UP ? "up" : "down");
	args[2] = Int64GetDatum(counts[0]);
	args[3] = Int64GetDatum(counts[1]);
	args[4] = Int64GetDatum(counts[2]);
	args[5] = TimestampTzGetDatum(started);
	MsCatalogExec("INSERT INTO mailsync.verifications AS v (link, direction, verified_at, "
				  "missing_in_current, missing_in_legacy, differs, duration) "
				  "VALUES ($1, $2, pg_catalog.clock_timestamp(), $3, $4, $5, "
				  "pg_catalog.clock_timestamp() - $6) "
				  "ON CONFLICT (link) DO UPDATE SET direction = $2, "
				  "verified_at = EXCLUDED.verified_at, missing_in_current = $3, "
				  "missing_in_legacy = $4, differs = $5, duration = EXCLUDED.duration",
				  6, argtypes, args, NULL, SPI_OK_INSERT);
}

/*
 * ms_count_problem adds one problem to the counts: missing in current,
 * missing in legacy, differs.
 */
static void
ms_count_problem(int64 counts[3], const char *problem)
{
	if (strcmp(problem, "missing in current") == 0)
		counts[0]++;
	else if (strcmp(problem, "missing in legacy") == 0)
		counts[1]++;
	else
		counts[2]++;
}

/*
 * mailsync_verify implements mailsync.verify(name, direction): one row a
 * drifted key, with what is wrong and the values of both sides.
 */
Datum
mailsync_verify(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz started = GetCurrentTimestamp();
	MsLinkDef  *def;
	int			side;
	int64		counts[3] = {0, 0, 0};

	MsCheckNotNullArg(fcinfo, 0, "name", "mailsync.verify");
	InitMaterializedSRF(fcinfo, 0);
	def = ms_open_link(fcinfo, false);
	side = ms_direction_for(def, fcinfo, 1, false);

	MsSpiExec(def->shape ? MsShapeVerifySql(def) : ms_sql_verify(&def->dir[side], side),
			  SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Datum		values[4];
		bool		nulls[4];
		Datum		vals[4];
		bool		isnull[4];

		for (int c = 0; c < 4; c++)
			vals[c] = SPI_getbinval(tuple, desc, c + 1, &isnull[c]);
		ms_count_problem(counts, TextDatumGetCString(vals[1]));
		/* output: key, problem, legacy, current */
		values[0] = vals[0];
		nulls[0] = isnull[0];
		values[1] = vals[1];
		nulls[1] = isnull[1];
		{
			/* the shape query gives legacy then current already */
			bool		swap = side == MS_DOWN && def->shape == NULL;

			values[2] = swap ? vals[3] : vals[2];
			nulls[2] = swap ? isnull[3] : isnull[2];
			values[3] = swap ? vals[2] : vals[3];
			nulls[3] = swap ? isnull[2] : isnull[3];
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	ms_record_verification(def, side, counts, started);

	ms_close_link();
	return (Datum) 0;
}

/*
 * mailsync_verify_summary implements mailsync.verify_summary(name,
 * direction): the counts of drifted keys only, for dashboards.
 */
Datum
mailsync_verify_summary(PG_FUNCTION_ARGS)
{
	TimestampTz started = GetCurrentTimestamp();
	TupleDesc	tupdesc;
	MsLinkDef  *def;
	int			side;
	int64		counts[3];
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	StringInfoData sql;

	MsCheckNotNullArg(fcinfo, 0, "name", "mailsync.verify_summary");
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	def = ms_open_link(fcinfo, false);
	side = ms_direction_for(def, fcinfo, 1, false);

	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT pg_catalog.count(*) FILTER (WHERE problem = 'missing in current'), "
					 "pg_catalog.count(*) FILTER (WHERE problem = 'missing in legacy'), "
					 "pg_catalog.count(*) FILTER (WHERE problem = 'differs') FROM (%s) AS x",
					 def->shape ? psprintf("SELECT x.problem FROM (%s) AS x(key, problem, l, c)",
										   MsShapeVerifySql(def)) :
					 MsSqlDiff(&def->dir[side], side_word[side], side_word[1 - side], false));
	MsSpiExec(sql.data, SPI_OK_SELECT);
	for (int c = 0; c < 3; c++)
	{
		bool		isnull;

		counts[c] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, c + 1, &isnull));
		values[c] = Int64GetDatum(counts[c]);
	}
	ms_record_verification(def, side, counts, started);

	ms_close_link();
	values[3] = CStringGetTextDatum(side == MS_UP ? "up" : "down");
	values[4] = TimestampTzGetDatum(GetCurrentTimestamp());
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc),
													  values, nulls)));
}

/*
 * mailsync_repair implements mailsync.repair(name, source): the other side
 * is made to match source for exactly the keys verify reports, in one
 * statement; it returns how many rows it inserted, updated and deleted.
 */
Datum
mailsync_repair(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	MsLinkDef  *def;
	int			side;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	MsCheckNotNullArg(fcinfo, 0, "name", "mailsync.repair");
	MsCheckNotNullArg(fcinfo, 1, "source", "mailsync.repair");
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	def = ms_open_link(fcinfo, true);
	side = ms_direction_for(def, fcinfo, 1, true);

	MsGuardPush(def->name);
	MsSpiExec(def->shape ? MsShapeRepairSql(def, side) :
			  MsSqlRepair(&def->dir[side], side_word[side], side_word[1 - side]),
			  SPI_OK_SELECT);
	MsGuardPop();
	for (int c = 0; c < 3; c++)
	{
		bool		isnull;

		values[c] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
								  c + 1, &isnull);
	}

	ms_close_link();
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc),
													  values, nulls)));
}
