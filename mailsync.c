/*-------------------------------------------------------------------------
 *
 * mailsync.c
 *	  Entry point of the mailsync extension: module magic, settings and
 *	  the callbacks each part registers.
 *
 * mailsync keeps a legacy (v1) table and its refactored current (v2)
 * table consistent while old and new application code run side by side:
 * C triggers mirror every write in the writer's transaction (src/sync.c),
 * mailsync.link validates and installs a link (src/link.c,
 * src/mapping.c, src/sqlgen.c), and mailsync.ensure_uuid with its
 * generators repairs credential tables restored without uuids
 * (src/ensure_uuid.c, src/uuid.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "utils/guc.h"

#include "mailsync.h"

PG_MODULE_MAGIC;

/* mailsync.lock_timeout: how long a DDL step or backfill batch waits for a lock, in ms */
static int	ms_lock_timeout_ms = 2000;

/* mailsync.set_based: which path the sync triggers take */
int			MsSetBased = MS_SET_BASED_AUTO;

static const struct config_enum_entry set_based_options[] = {
	{"auto", MS_SET_BASED_AUTO, false},
	{"on", MS_SET_BASED_ON, false},
	{"off", MS_SET_BASED_OFF, false},
	{NULL, 0, false}
};

/*
 * MsLockTimeoutValue returns mailsync.lock_timeout as a lock_timeout
 * setting.
 */
char *
MsLockTimeoutValue(void)
{
	return psprintf("%d", ms_lock_timeout_ms);
}

/*
 * _PG_init defines mailsync's settings and registers its callbacks.
 */
void
_PG_init(void)
{
	DefineCustomIntVariable("mailsync.lock_timeout",
							"How long a DDL step or a backfill batch of mailsync waits for a lock before it retries.",
							"Keeps mailsync's ALTER TABLE steps from queueing writers behind a long transaction, and a backfill from failing on a busy row.",
							&ms_lock_timeout_ms,
							2000,
							1,
							INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL,
							NULL,
							NULL);
	DefineCustomEnumVariable("mailsync.set_based",
							 "Whether the sync triggers mirror a statement's rows in one set-based statement.",
							 "auto: set-based for statements of many rows, row by row for the others; on, off: always, never.",
							 &MsSetBased,
							 MS_SET_BASED_AUTO,
							 set_based_options,
							 PGC_USERSET,
							 0,
							 NULL,
							 NULL,
							 NULL);
	MarkGUCPrefixReserved("mailsync");

	MsSyncInit();
}
