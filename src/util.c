/*-------------------------------------------------------------------------
 *
 * util.c
 *	  Small helpers shared by every part of mailsync: the pinned search
 *	  path, names for SQL and for messages, argument and ownership checks,
 *	  and SPI execution with consistent error reporting.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/errcodes.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "mailsync.h"

/*
 * The search path every generated statement is parsed, planned and run
 * with: pg_catalog alone, and no temporary schema at all.  Expressions are
 * deparsed under the same path, so whatever is not in pg_catalog is
 * schema-qualified in their text and nothing a session plants elsewhere
 * can capture a name.
 */
static OverrideSearchPath pinned_path = {NIL, true, false, 0};

/* deadlock_timeout of a statement that is retried when it loses a deadlock */
#define MS_DEADLOCK_TIMEOUT_MS	20

/* Retries of a DDL statement that hit lock_timeout */
#define MS_LOCK_RETRIES		8

/*
 * MsPushPinnedPath makes the pinned search path active until the matching
 * MsPopPinnedPath.  A (sub)transaction abort pops it by itself.
 */
void
MsPushPinnedPath(void)
{
	PushOverrideSearchPath(&pinned_path);
}

/*
 * MsPopPinnedPath ends the pinned search path pushed by MsPushPinnedPath.
 */
void
MsPopPinnedPath(void)
{
	PopOverrideSearchPath();
}

/*
 * MsCommitPinned commits in a procedure called non-atomically.  The pinned
 * search path belongs to one transaction, so it is pushed again in the
 * next.
 */
void
MsCommitPinned(void)
{
	MsPopPinnedPath();
	SPI_commit();
	MsPushPinnedPath();
}

/*
 * MsQualifiedRelName returns the schema-qualified, quoted name of a
 * relation, for use in SQL text.
 */
char *
MsQualifiedRelName(Oid relid)
{
	char	   *relname = get_rel_name(relid);

	if (relname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  relname);
}

/*
 * MsRelDisplayName returns "schema.table" for messages.
 */
char *
MsRelDisplayName(Oid relid)
{
	char	   *relname = get_rel_name(relid);
	Oid			nsp;

	if (relname == NULL)
		return psprintf("OID %u", relid);
	nsp = get_rel_namespace(relid);
	return psprintf("%s.%s",
					isAnyTempNamespace(nsp) ? "pg_temp" : get_namespace_name(nsp),
					relname);
}

/*
 * MsExtensionOwner returns the role that owns the mailsync extension.
 * Writes to mailsync.links are made as that role, so that table owners
 * can link their tables without being granted write access to the catalog.
 */
Oid
MsExtensionOwner(void)
{
	Oid			extoid = get_extension_oid("mailsync", false);
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	Oid			owner;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(extoid));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for extension %u", extoid);
	owner = ((Form_pg_extension) GETSTRUCT(tuple))->extowner;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return owner;
}

/*
 * MsLinksRelid returns the OID of the catalog table mailsync.links.
 */
Oid
MsLinksRelid(bool missing_ok)
{
	Oid			nsp = get_namespace_oid("mailsync", missing_ok);
	Oid			relid = InvalidOid;

	if (OidIsValid(nsp))
		relid = get_relname_relid("links", nsp);
	if (!OidIsValid(relid) && !missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("catalog table mailsync.links does not exist"),
				 errhint("Run CREATE EXTENSION mailsync in this database.")));
	return relid;
}

/*
 * MsCheckNotNullArg raises a clear error when a required argument of a
 * non-strict SQL function is NULL.
 */
void
MsCheckNotNullArg(FunctionCallInfo fcinfo, int argno, const char *argname,
				  const char *funcname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" of %s must not be null",
						argname, funcname),
				 errhint("Pass a value for \"%s\".", argname)));
}

/*
 * MsCheckTableOwner raises 42501 unless the current user owns the table.
 */
void
MsCheckTableOwner(Oid relid)
{
	if (!MsClassOwnercheck(relid, GetUserId()))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of table \"%s\"", MsRelDisplayName(relid)),
				 errhint("Run this as the owner of the table (for a link, of both tables) or as a superuser.")));
}

/*
 * MsSpiExec runs one SQL statement through an open SPI connection and
 * checks its result code.
 */
void
MsSpiExec(const char *sql, int expected)
{
	MsSpiExecWithArgs(sql, 0, NULL, NULL, NULL, expected);
}

/*
 * MsSpiExecWithArgs is MsSpiExec with typed parameters: values never go
 * into SQL text.
 */
void
MsSpiExecWithArgs(const char *sql, int nargs, Oid *argtypes, Datum *values,
				  const char *nulls, int expected)
{
	int			rc;

	if (nargs > 0)
		rc = SPI_execute_with_args(sql, nargs, argtypes, values, nulls,
								   false, 0);
	else
		rc = SPI_execute(sql, false, 0);
	if (rc != expected)
		elog(ERROR, "SPI failed (%s) on: %s", SPI_result_code_string(rc), sql);
}

/*
 * MsCatalogExec runs a statement on one of mailsync's catalogs as the
 * extension's owner: the table owners who call link, backfill or verify may
 * not write those catalogs themselves.
 */
void
MsCatalogExec(const char *sql, int nargs, Oid *argtypes, Datum *values,
			  const char *nulls, int expected)
{
	Oid			save_userid;
	int			save_sec;

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(MsExtensionOwner(), save_sec | SECURITY_LOCAL_USERID_CHANGE);
	MsSpiExecWithArgs(sql, nargs, argtypes, values, nulls, expected);
	SetUserIdAndSecContext(save_userid, save_sec);
}

/*
 * MsSleep sleeps for ms milliseconds, waking up for a cancel or a
 * terminate.
 */
void
MsSleep(long ms)
{
	if (ms <= 0)
		return;
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/*
 * ms_try_exec_with_lock_timeout runs a statement in a subtransaction with
 * lock_timeout set to mailsync.lock_timeout, and deadlock_timeout at most
 * MS_DEADLOCK_TIMEOUT_MS: in a deadlock with an application's transaction
 * the session that checks first is rolled back, and that must be this
 * statement, which is retried, not the application's.  It returns 0 when the
 * statement ran.  It returns the SQLSTATE, with the error message in
 * *message, when the statement failed with soft_sqlstate, or could not
 * have its lock in time or was chosen as a deadlock victim while retries
 * remain.  Any other error, or the last failure, is raised.  The
 * subtransaction makes a failed attempt leave nothing behind, so the
 * caller can run the same statement again.
 */
static int
ms_try_exec_with_lock_timeout(const char *sql, int nargs, Oid *argtypes,
							  Datum *values, const char *nulls, int expected,
							  int soft_sqlstate, bool last_attempt,
							  char **message)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile int sqlstate = 0;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		int			save_nestlevel = NewGUCNestLevel();

		(void) set_config_option("lock_timeout", MsLockTimeoutValue(),
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		if (DeadlockTimeout > MS_DEADLOCK_TIMEOUT_MS)
			(void) set_config_option("deadlock_timeout",
									 psprintf("%dms", MS_DEADLOCK_TIMEOUT_MS),
									 PGC_SUSET, PGC_S_SESSION,
									 GUC_ACTION_SAVE, true, 0, false);
		MsSpiExecWithArgs(sql, nargs, argtypes, values, nulls, expected);
		AtEOXact_GUC(true, save_nestlevel);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		bool		retry;

		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
		retry = !last_attempt &&
			(edata->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE ||
			 edata->sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED);
		if (!retry && (soft_sqlstate == 0 || edata->sqlerrcode != soft_sqlstate))
			ReThrowError(edata);
		sqlstate = edata->sqlerrcode;
		*message = pstrdup(edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return sqlstate;
}

/*
 * MsSpiExecRetryLock runs a statement that must not wait long for its
 * lock: a DDL statement queued behind a long transaction would block every
 * writer queued behind it, and a backfill batch should step aside rather
 * than fail.  It waits at most mailsync.lock_timeout, then retries with a
 * growing pause; a deadlock victim is retried the same way, since the
 * other side of the deadlock has gone on by then.  The result is in
 * SPI_tuptable and SPI_processed.
 */
void
MsSpiExecRetryLock(const char *sql, int expected)
{
	(void) MsSpiExecWithArgsRetryLock(sql, 0, NULL, NULL, NULL, expected, 0);
}

/*
 * MsSpiExecWithArgsRetryLock is MsSpiExecRetryLock with typed parameters.
 * A failure with SQLSTATE soft_sqlstate (0: none) is neither raised nor
 * retried: the statement is rolled back and false returned.
 */
bool
MsSpiExecWithArgsRetryLock(const char *sql, int nargs, Oid *argtypes,
						   Datum *values, const char *nulls, int expected,
						   int soft_sqlstate)
{
	long		pause_ms = 100;

	for (int attempt = 1;; attempt++)
	{
		char	   *message = NULL;
		int			sqlstate;

		sqlstate = ms_try_exec_with_lock_timeout(sql, nargs, argtypes, values,
												 nulls, expected, soft_sqlstate,
												 attempt >= MS_LOCK_RETRIES,
												 &message);
		if (sqlstate == 0)
			return true;
		if (sqlstate == soft_sqlstate)
		{
			pfree(message);
			return false;
		}
		ereport(NOTICE,
				(errmsg("%s; retrying in %ld ms (attempt %d of %d)",
						message, pause_ms, attempt + 1, MS_LOCK_RETRIES)));
		pfree(message);
		MsSleep(pause_ms);
		pause_ms = Min(pause_ms * 2, 5000);
	}
}
