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

/* mailsync.lock_timeout: how long a DDL step waits for its lock, in ms */
static int	ms_lock_timeout_ms = 2000;

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
							"How long a DDL step of mailsync waits for its lock before it retries.",
							"Keeps mailsync's ALTER TABLE steps from queueing writers behind a long transaction.",
							&ms_lock_timeout_ms,
							2000,
							1,
							INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL,
							NULL,
							NULL);
	MarkGUCPrefixReserved("mailsync");

	MsSyncInit();
}
