/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  The one place where mailsync bends to PostgreSQL versions.
 *
 * mailsync is built and tested against PostgreSQL 15.  It pins the search
 * path of its generated statements with PushOverrideSearchPath, which
 * PostgreSQL 17 removed, so other versions are refused at compile time
 * rather than half-supported.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MAILSYNC_COMPAT_H
#define MAILSYNC_COMPAT_H

#if PG_VERSION_NUM < 150000 || PG_VERSION_NUM >= 170000
#error "mailsync supports PostgreSQL 15 and 16"
#endif

#if PG_VERSION_NUM >= 160000
#define MsClassOwnercheck(relid, roleid) \
	object_ownercheck(RelationRelationId, (relid), (roleid))
#else
#define MsClassOwnercheck(relid, roleid) \
	pg_class_ownercheck((relid), (roleid))
#endif

#endif							/* MAILSYNC_COMPAT_H */
