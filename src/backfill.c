/*-------------------------------------------------------------------------
 *
 * backfill.c
 *	  CALL mailsync.backfill(name, direction, batch_size, pause, restart):
 *	  copy the rows that exist on one side only, or differ, to the other
 *	  side, in keyset batches, one transaction a batch, resumable.
 *
 * A real upgrade starts with millions of legacy rows and an empty current
 * table while both applications keep writing.  The triggers keep every row
 * written from now on in sync; the backfill carries the rest over:
 *
 *	  - it walks the source's key index in batches of batch_size rows,
 *		writing each batch into the target through the link's mapping (the
 *		same expressions the triggers use) where a row is missing or
 *		differs, and commits after each batch, so no lock is held longer than
 *		a batch and writers keep going (ms_run: a plain INSERT while the
 *		target lacks the batch's keys, an upsert otherwise);
 *	  - the rows of a batch are locked FOR SHARE while it copies them: a
 *		concurrent update or delete of one of them waits for the batch, then
 *		reaches the target through the triggers, so a row deleted meanwhile
 *		does not come back and an update is not overwritten by the copy;
 *	  - it stops at the highest key the source had when it started: rows
 *		written later are the triggers' business, so it ends under any write
 *		load;
 *	  - its position is recorded in mailsync.backfills in each batch's
 *		transaction, so a cancelled, failed or crashed backfill resumes from
 *		its last committed batch when called again; a finished one says so;
 *	  - one backfill a link at a time (a session advisory lock), never inside
 *		a transaction block;
 *	  - a batch whose locks cannot be had within mailsync.lock_timeout is
 *		retried with a growing pause instead of failing the run;
 *	  - progress: a NOTICE every few seconds, and the same figures in
 *		mailsync.backfills for mailsync.status() in other sessions.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/hash.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/timestamp.h"

#include "mailsync.h"

PG_FUNCTION_INFO_V1(mailsync_backfill);

/* What one backfill run works with */
typedef struct MsBackfill
{
	MsLinkDef  *def;
	const MsDirection *d;
	const char *direction;		/* "up" or "down" */
	int			batch_size;
	long		pause_ms;
	Datum		position;		/* text[] of the last key copied, or 0 */
	Datum		stop_at;		/* text[] of the highest key at the start */
	char	   *position_text;	/* position, for the error context */
	int64		rows_done;
	int64		rows_total;
	int64		rows_written;
	TimestampTz run_started;	/* this call's start, for its rate */
	int64		run_rows;		/* rows this call copied */
	double		longest_batch_ms;	/* the longest any batch held its locks */
} MsBackfill;

/*
 * MsAdvisoryLockTag fills in the session advisory lock that a
 * long-running operation on a link holds: one backfill a link at a time.
 */
void
MsAdvisoryLockTag(LOCKTAG *tag, const char *link)
{
	uint32		hash = DatumGetUInt32(hash_any((const unsigned char *) link,
											   strlen(link)));

	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, MS_ADVISORY_CLASS, hash, 2);
}

/*
 * ms_key_text returns a text[] key for messages.
 */
static char *
ms_key_text(Datum key)
{
	return key ? OidOutputFunctionCall(F_ARRAY_OUT, key) : pstrdup("(start)");
}

/*
 * ms_copy_key copies a text[] out of an SPI result, or returns 0 for
 * NULL.
 */
static Datum
ms_copy_key(HeapTuple tuple, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tuple, desc, col, &isnull);

	return isnull ? (Datum) 0 : PointerGetDatum(DatumGetArrayTypePCopy(d));
}

/*
 * ms_save_state records where the backfill is, in the current transaction.
 */
static void
ms_save_state(MsBackfill *b, const char *state)
{
	Oid			argtypes[8] = {TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID,
		TEXTARRAYOID, INT8OID, INT8OID, INT4OID};
	Datum		args[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

	args[0] = CStringGetTextDatum(b->def->name);
	args[1] = CStringGetTextDatum(b->direction);
	args[2] = CStringGetTextDatum(state);
	args[3] = b->position;
	args[4] = b->stop_at;
	args[5] = Int64GetDatum(b->rows_done);
	args[6] = Int64GetDatum(b->rows_total);
	args[7] = Int32GetDatum(b->batch_size);
	if (!b->position)
		nulls[3] = 'n';
	if (!b->stop_at)
		nulls[4] = 'n';
	MsCatalogExec("INSERT INTO mailsync.backfills AS s (link, direction, state, position, stop_at, "
				  "rows_done, rows_total, batch_size, started_at, updated_at, finished_at) "
				  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, pg_catalog.now(), pg_catalog.now(), "
				  "CASE WHEN $3 = 'done' THEN pg_catalog.now() END) "
				  "ON CONFLICT (link, direction) DO UPDATE SET state = $3, position = $4, "
				  "stop_at = $5, rows_done = $6, rows_total = $7, batch_size = $8, "
				  "updated_at = pg_catalog.now(), "
				  "finished_at = CASE WHEN $3 = 'done' THEN pg_catalog.now() END, "
				  "started_at = CASE WHEN $6 = 0 AND $3 = 'running' THEN pg_catalog.now() ELSE s.started_at END",
				  8, argtypes, args, nulls, SPI_OK_INSERT);
}

/*
 * ms_progress reports rows done, percent, rate and time left.
 */
static void
ms_progress(MsBackfill *b, bool final)
{
	long		secs;
	int			usecs;
	double		elapsed;
	double		rate;

	TimestampDifference(b->run_started, GetCurrentTimestamp(), &secs, &usecs);
	elapsed = secs + usecs / 1000000.0;
	rate = elapsed > 0 ? b->run_rows / elapsed : 0;
	if (final)
		ereport(NOTICE,
				(errmsg("backfill of link \"%s\" (%s) done: " INT64_FORMAT " rows read, " INT64_FORMAT " written",
						b->def->name, b->direction, b->rows_done, b->rows_written),
				 errdetail("This call copied " INT64_FORMAT " rows in %.1f s (%.0f rows/s); the longest batch took %.0f ms.",
						   b->run_rows, elapsed, rate, b->longest_batch_ms)));
	else
		ereport(NOTICE,
				(errmsg("backfill of link \"%s\" (%s): " INT64_FORMAT " of " INT64_FORMAT " rows (%.0f%%), %.0f rows/s, about %.0f s left",
						b->def->name, b->direction, b->rows_done, b->rows_total,
						b->rows_total > 0 ? 100.0 * b->rows_done / b->rows_total : 100.0,
						rate,
						rate > 0 ? Max(b->rows_total - b->rows_done, 0) / rate : 0)));
}

/*
 * ms_start reads the recorded state, and starts a new backfill when there
 * is none (or restart): the highest key now is where it will stop.
 * Returns false when the backfill is done already.
 */
static bool
ms_start(MsBackfill *b, bool restart)
{
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		args[2];

	args[0] = CStringGetTextDatum(b->def->name);
	args[1] = CStringGetTextDatum(b->direction);
	MsSpiExecWithArgs("SELECT state, position, stop_at, rows_done, rows_total, "
					  "pg_catalog.to_char(finished_at, 'YYYY-MM-DD HH24:MI:SS TZ') "
					  "FROM mailsync.backfills WHERE link = $1 AND direction = $2",
					  2, argtypes, args, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0 && !restart)
	{
		HeapTuple	tuple = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		char	   *state = SPI_getvalue(tuple, desc, 1);

		b->position = ms_copy_key(tuple, desc, 2);
		b->stop_at = ms_copy_key(tuple, desc, 3);
		b->rows_done = DatumGetInt64(SPI_getbinval(tuple, desc, 4, &isnull));
		b->rows_total = DatumGetInt64(SPI_getbinval(tuple, desc, 5, &isnull));
		if (strcmp(state, "done") == 0)
		{
			ereport(NOTICE,
					(errmsg("backfill of link \"%s\" (%s) is done: " INT64_FORMAT " rows",
							b->def->name, b->direction, b->rows_done),
					 errdetail("It finished at %s.", SPI_getvalue(tuple, desc, 6)),
					 errhint("Pass restart => true to copy again.")));
			return false;
		}
		ereport(NOTICE,
				(errmsg("backfill of link \"%s\" (%s) resumes after key %s: " INT64_FORMAT " of " INT64_FORMAT " rows done",
						b->def->name, b->direction, ms_key_text(b->position),
						b->rows_done, b->rows_total)));
		return true;
	}

	MsSpiExec(MsSqlLastKey(b->d), SPI_OK_SELECT);
	b->stop_at = SPI_processed > 0 ?
		ms_copy_key(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) : (Datum) 0;
	b->position = (Datum) 0;
	b->rows_done = 0;
	b->rows_total = 0;
	if (b->stop_at)
	{
		Oid			argtype = TEXTARRAYOID;
		bool		isnull;

		MsSpiExecWithArgs(MsSqlCountUpTo(b->d), 1, &argtype, &b->stop_at, NULL,
						  SPI_OK_SELECT);
		b->rows_total = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
													SPI_tuptable->tupdesc, 1, &isnull));
	}
	ereport(NOTICE,
			(errmsg("backfill of link \"%s\" (%s): " INT64_FORMAT " rows to copy from \"%s\" to \"%s\", in batches of %d",
					b->def->name, b->direction, b->rows_total,
					MsRelDisplayName(b->d->src_relid), MsRelDisplayName(b->d->dst_relid),
					b->batch_size)));
	ms_save_state(b, b->stop_at ? "running" : "done");
	return b->stop_at != (Datum) 0;
}

/*
 * ms_batch_context names the batch an error happened in, so that the
 * error says where a new call will resume.
 */
static void
ms_batch_context(void *arg)
{
	MsBackfill *b = (MsBackfill *) arg;

	errcontext("backfill of link \"%s\" (%s), batch after key %s",
			   b->def->name, b->direction, b->position_text);
}

/*
 * ms_run copies batch after batch until the stop key, committing each.
 *
 * A batch is delimited first, from the source's key index.  It is copied
 * with a plain INSERT, which costs about what copying by hand does, as
 * long as the target has none of its keys; on the first key it has, the
 * INSERT fails, and the batch is copied again by the upsert, which also
 * rewrites the rows that differ.  After such a batch the upsert carries on
 * alone for a growing number of batches, so that a target already filled
 * does not make every batch fail once.
 */
static void
ms_run(MsBackfill *b)
{
	char	   *bounds_sql = MsSqlBackfillBounds(b->d);
	char	   *insert_sql = MsSqlBackfillCopy(b->d, false);
	char	   *upsert_sql = MsSqlBackfillCopy(b->d, true);
	Oid			argtypes[3] = {TEXTARRAYOID, TEXTARRAYOID, INT4OID};
	TimestampTz last_report = GetCurrentTimestamp();
	ErrorContextCallback errcallback;
	int			upsert_run = 0;
	int			upsert_left = 0;

	errcallback.callback = ms_batch_context;
	errcallback.arg = b;
	for (;;)
	{
		Datum		args[3];
		char		nulls[3] = {' ', ' ', ' '};
		bool		isnull;
		int64		nread;
		Datum		last;
		TimestampTz batch_start;
		long		secs;
		int			usecs;

		CHECK_FOR_INTERRUPTS();
		batch_start = GetCurrentTimestamp();
		args[0] = b->position;
		args[1] = b->stop_at;
		args[2] = Int32GetDatum(b->batch_size);
		if (!b->position)
			nulls[0] = 'n';
		MsSpiExecWithArgs(bounds_sql, 3, argtypes, args, nulls, SPI_OK_SELECT);
		if (SPI_processed == 0)
			break;
		nread = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											SPI_tuptable->tupdesc, 1, &isnull));
		last = ms_copy_key(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		SPI_freetuptable(SPI_tuptable);

		/* the target's triggers of this link stay silent: no echo */
		args[1] = last;
		b->position_text = ms_key_text(b->position);
		errcallback.previous = error_context_stack;
		error_context_stack = &errcallback;
		MsGuardPush(b->def->name);
		if (upsert_left == 0)
		{
			MsSkipOwnCapture(b->d->dst_relid, b->def->name);
			if (MsSpiExecWithArgsRetryLock(insert_sql, 2, argtypes, args, nulls,
										   SPI_OK_INSERT, ERRCODE_UNIQUE_VIOLATION))
				upsert_run = 0;
			else
				upsert_left = upsert_run = Min(Max(upsert_run * 2, 1), 64);
		}
		if (upsert_left > 0)
		{
			MsSkipOwnCapture(b->d->dst_relid, b->def->name);
			MsSpiExecWithArgsRetryLock(upsert_sql, 2, argtypes, args, nulls,
									   SPI_OK_INSERT, 0);
			upsert_left--;
		}
		b->rows_written += SPI_processed;
		MsGuardPop();
		error_context_stack = errcallback.previous;
		pfree(b->position_text);

		if (b->position)
			pfree(DatumGetPointer(b->position));
		b->position = last;
		b->rows_done += nread;
		b->run_rows += nread;
		ms_save_state(b, "running");
		MsCommitPinned();

		TimestampDifference(batch_start, GetCurrentTimestamp(), &secs, &usecs);
		b->longest_batch_ms = Max(b->longest_batch_ms, secs * 1000.0 + usecs / 1000.0);
		if (TimestampDifferenceExceeds(last_report, GetCurrentTimestamp(),
									   MS_PROGRESS_SECS * 1000))
		{
			ms_progress(b, false);
			last_report = GetCurrentTimestamp();
		}
		MsSleep(b->pause_ms);
	}
	b->position = b->stop_at;
	ms_save_state(b, "done");
	MsCommitPinned();
	ms_progress(b, true);
}

/*
 * ms_run_shape backfills a list, document or join link: one statement
 * makes the other table match the source, in one transaction, as repair
 * does.
 */
static void
ms_run_shape(MsBackfill *b, int side)
{
	TimestampTz start = GetCurrentTimestamp();
	long		secs;
	int			usecs;

	ereport(NOTICE,
			(errmsg("backfill of link \"%s\" (%s): a %s link is copied from \"%s\" to \"%s\" in one statement",
					b->def->name, b->direction,
					MsShapeKindName(b->def->shape->kind),
					MsRelDisplayName(side == MS_UP ? b->def->legacy : b->def->current),
					MsRelDisplayName(side == MS_UP ? b->def->current : b->def->legacy))));
	MsGuardPush(b->def->name);
	b->rows_written += MsShapeCopy(b->def, side, true);
	MsGuardPop();
	b->rows_done = b->rows_total = b->run_rows = b->rows_written;
	TimestampDifference(start, GetCurrentTimestamp(), &secs, &usecs);
	b->longest_batch_ms = secs * 1000.0 + usecs / 1000.0;
	ms_save_state(b, "done");
	MsCommitPinned();
	ms_progress(b, true);
}

/*
 * mailsync_backfill implements the procedure mailsync.backfill(name,
 * direction, batch_size, pause, restart).
 */
Datum
mailsync_backfill(PG_FUNCTION_ARGS)
{
	const char *fn = "mailsync.backfill";
	MsBackfill	b;
	char	   *name;
	Interval   *pause;
	bool		restart;
	LOCKTAG		tag;
	int			side;
	bool		atomic;

	MsCheckNotNullArg(fcinfo, 0, "name", fn);
	MsCheckNotNullArg(fcinfo, 2, "batch_size", fn);
	MsCheckNotNullArg(fcinfo, 3, "pause", fn);
	MsCheckNotNullArg(fcinfo, 4, "restart", fn);
	memset(&b, 0, sizeof(b));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	b.batch_size = PG_GETARG_INT32(2);
	pause = PG_GETARG_INTERVAL_P(3);
	restart = PG_GETARG_BOOL(4);

	if (b.batch_size <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_size must be greater than zero, not %d", b.batch_size),
				 errhint("Each batch copies batch_size rows in one transaction; 5000 is a good start.")));
	b.pause_ms = (pause->time + (pause->day + pause->month * (int64) DAYS_PER_MONTH) *
				  USECS_PER_DAY) / 1000;
	if (b.pause_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pause must not be negative"),
				 errhint("The pause is slept between two batches; '0' for none.")));
	atomic = !(fcinfo->context && IsA(fcinfo->context, CallContext) &&
			   !castNode(CallContext, fcinfo->context)->atomic);

	if (SPI_connect_ext(atomic ? 0 : SPI_OPT_NONATOMIC) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MsPushPinnedPath();
	b.def = MsLoadLink(name, false);
	MsCheckTableOwner(b.def->legacy);
	MsCheckTableOwner(b.def->current);

	if (PG_ARGISNULL(1))
		b.direction = b.def->dir[MS_UP].enabled ? "up" : "down";
	else
	{
		b.direction = text_to_cstring(PG_GETARG_TEXT_PP(1));
		if (strcmp(b.direction, "up") != 0 && strcmp(b.direction, "down") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid direction \"%s\"", b.direction),
					 errhint("Use 'up' (legacy to current) or 'down' (current to legacy).")));
	}
	side = strcmp(b.direction, "up") == 0 ? MS_UP : MS_DOWN;
	if (!b.def->dir[side].enabled)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("link \"%s\" does not sync %s", name, b.direction),
				 errhint("The link's direction is '%s'.", b.def->direction)));
	b.d = &b.def->dir[side];
	if (atomic)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("mailsync.backfill cannot run inside a transaction block"),
				 errhint("Run CALL mailsync.backfill(...) on its own, not inside BEGIN ... COMMIT or a function: it commits after each batch.")));

	MsAdvisoryLockTag(&tag, name);
	if (LockAcquire(&tag, ExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("a backfill of link \"%s\" is already running", name),
				 errhint("Wait for it to finish, or cancel it with pg_cancel_backend(); a new call resumes where it stopped.")));

	PG_TRY();
	{
		b.run_started = GetCurrentTimestamp();
		if (b.def->shape)
			ms_run_shape(&b, side);
		else if (ms_start(&b, restart))
		{
			MsCommitPinned();
			ms_run(&b);
		}
	}
	PG_FINALLY();
	{
		LockRelease(&tag, ExclusiveLock, true);
	}
	PG_END_TRY();

	MsPopPinnedPath();
	SPI_finish();
	PG_RETURN_VOID();
}
