/*-------------------------------------------------------------------------
 *
 * sync.c
 *	  The sync trigger: the hot path of mailsync.
 *
 * Each link puts an AFTER INSERT OR UPDATE OR DELETE row trigger and an
 * AFTER TRUNCATE statement trigger on the table(s) it syncs from.  They
 * all run mailsync_sync_trigger, which turns the write into the equivalent
 * write on the other table, in the writer's transaction:
 *
 *	  INSERT	-> INSERT ... ON CONFLICT (key) DO UPDATE (an upsert)
 *	  UPDATE	-> UPDATE ... WHERE key = OLD key; if no row matched, the
 *				   upsert, so a row missing on the other side is created
 *	  DELETE	-> DELETE ... WHERE key = OLD key
 *	  TRUNCATE	-> TRUNCATE
 *
 * An UPDATE that changes no source column the mapping reads writes
 * nothing.  The statements are prepared once per backend and link
 * (SPI_prepare + SPI_keepplan, generic plans) and cached in a hash keyed
 * by link name; a relcache invalidation of either table, or any change to
 * mailsync.links, marks the entry for a rebuild on its next use.
 *
 * Recursion: while a link propagates a write, its own triggers on the
 * other table are silent.  The guard is a small stack of links being
 * propagated, each entry tagged with the transaction nesting level that
 * pushed it; a subtransaction abort pops the entries of its level, a
 * transaction abort empties it.  Other links still fire, so chains of
 * links work, and a link never re-enters itself, so cycles end.
 *
 * Roles: the write on the other table runs as that table's owner (as
 * PostgreSQL runs foreign-key actions), with the pinned search path.  The
 * writer needs no privilege on the other table, and can make mailsync
 * write nothing but the mirror of a write it was allowed to make.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "mailsync.h"

PG_FUNCTION_INFO_V1(mailsync_sync_trigger);
PG_FUNCTION_INFO_V1(mailsync_links_changed);

/*
 * MsRuntime: the prepared statements of one direction of a link, and the
 * parameter layout they share.  Parameters $1..$nparams are the source
 * columns the mapping reads (NEW row); the UPDATE takes the OLD key after
 * them; the DELETE takes the OLD key alone.
 */
typedef struct MsRuntime
{
	int			nparams;
	AttrNumber *param_attno;
	int16	   *param_len;
	bool	   *param_byval;
	int			nkeys;
	AttrNumber *key_attno;
	Oid			dst_owner;
	SPIPlanPtr	upsert;
	SPIPlanPtr	update;
	SPIPlanPtr	delete;
	char	   *truncate_sql;
	char	   *delete_all_sql; /* for a target the TRUNCATE itself holds open */
	Datum	   *values;			/* scratch, nparams + nkeys */
	char	   *nulls;
} MsRuntime;

/*
 * MsLinkEntry: the per-backend cache of one link.
 */
typedef struct MsLinkEntry
{
	char		name[NAMEDATALEN];	/* hash key */
	bool		valid;
	MemoryContext cxt;			/* holds def and the runtime metadata */
	MsLinkDef  *def;
	char	   *row_trigger;	/* expected trigger names */
	char	   *truncate_trigger;
	MsRuntime	rt[2];
} MsLinkEntry;

/* The guard: links whose write is being propagated right now */
typedef struct MsGuardEntry
{
	MsLinkEntry *link;
	int			nestlevel;
} MsGuardEntry;

#define MS_MAX_GUARD	64

static HTAB *link_cache = NULL;
static MemoryContext link_cache_cxt = NULL;
static Oid	links_relid = InvalidOid;
static MsGuardEntry guard[MS_MAX_GUARD];
static int	guard_depth = 0;

/*
 * ms_invalidate_callback marks cached links stale when one of their tables
 * or mailsync.links itself changes.  It only sets flags: it may run at any
 * point where invalidation messages are accepted.
 */
static void
ms_invalidate_callback(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	MsLinkEntry *e;
	bool		all = !OidIsValid(relid) || relid == links_relid;

	if (link_cache == NULL)
		return;
	if (!OidIsValid(relid))
		links_relid = InvalidOid;
	hash_seq_init(&status, link_cache);
	while ((e = (MsLinkEntry *) hash_seq_search(&status)) != NULL)
	{
		if (all || e->def == NULL ||
			e->def->legacy == relid || e->def->current == relid)
			e->valid = false;
	}
}

/*
 * ms_xact_callback empties the guard when a transaction aborts.
 */
static void
ms_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		guard_depth = 0;
}

/*
 * ms_subxact_callback pops the guard entries pushed inside an aborted
 * subtransaction, so that a caught error does not leave a link silenced.
 */
static void
ms_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		int			level = GetCurrentTransactionNestLevel();

		while (guard_depth > 0 && guard[guard_depth - 1].nestlevel >= level)
			guard_depth--;
	}
}

/*
 * MsSyncInit registers the callbacks of the sync machinery; called once
 * from _PG_init.
 */
void
MsSyncInit(void)
{
	CacheRegisterRelcacheCallback(ms_invalidate_callback, (Datum) 0);
	RegisterXactCallback(ms_xact_callback, NULL);
	RegisterSubXactCallback(ms_subxact_callback, NULL);
}

/*
 * ms_entry_lookup returns the cache entry of a link, creating an empty,
 * invalid one the first time.
 */
static MsLinkEntry *
ms_entry_lookup(const char *name)
{
	MsLinkEntry *e;
	bool		found;
	char		key[NAMEDATALEN];

	if (link_cache == NULL)
	{
		HASHCTL		ctl;

		link_cache_cxt = AllocSetContextCreate(CacheMemoryContext,
											   "mailsync link cache",
											   ALLOCSET_SMALL_SIZES);
		ctl.keysize = NAMEDATALEN;
		ctl.entrysize = sizeof(MsLinkEntry);
		ctl.hcxt = link_cache_cxt;
		link_cache = hash_create("mailsync links", 16, &ctl,
								 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	strlcpy(key, name, NAMEDATALEN);
	e = (MsLinkEntry *) hash_search(link_cache, key, HASH_ENTER, &found);
	if (!found)
	{
		e->valid = false;
		e->cxt = NULL;
		e->def = NULL;
		memset(e->rt, 0, sizeof(e->rt));
	}
	return e;
}

/*
 * ms_guard_contains tells whether a link is propagating a write now.
 */
static inline bool
ms_guard_contains(const MsLinkEntry *e)
{
	for (int i = 0; i < guard_depth; i++)
		if (guard[i].link == e)
			return true;
	return false;
}

/*
 * ms_guard_push silences a link's triggers until ms_guard_pop.
 */
static inline void
ms_guard_push(MsLinkEntry *e)
{
	if (guard_depth >= MS_MAX_GUARD)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("mailsync links nest more than %d deep", MS_MAX_GUARD),
				 errhint("A chain of links writes through more than %d tables for one write.",
						 MS_MAX_GUARD)));
	guard[guard_depth].link = e;
	guard[guard_depth].nestlevel = GetCurrentTransactionNestLevel();
	guard_depth++;
}

static inline void
ms_guard_pop(void)
{
	Assert(guard_depth > 0);
	guard_depth--;
}

/*
 * MsGuardPush silences the triggers of the named link while mailsync's
 * own bulk statements (backfill, repair) write its tables.
 */
void
MsGuardPush(const char *link)
{
	ms_guard_push(ms_entry_lookup(link));
}

void
MsGuardPop(void)
{
	ms_guard_pop();
}

/*
 * ms_entry_release frees what a cache entry holds.
 */
static void
ms_entry_release(MsLinkEntry *e)
{
	e->valid = false;
	for (int side = MS_UP; side <= MS_DOWN; side++)
	{
		MsRuntime  *rt = &e->rt[side];

		if (rt->upsert)
			SPI_freeplan(rt->upsert);
		if (rt->update)
			SPI_freeplan(rt->update);
		if (rt->delete)
			SPI_freeplan(rt->delete);
	}
	memset(e->rt, 0, sizeof(e->rt));
	e->def = NULL;
	if (e->cxt)
		MemoryContextDelete(e->cxt);
	e->cxt = NULL;
}

/*
 * ms_prepare prepares and keeps one statement, as the owner of the table
 * it writes so that row security is decided for that role.  SPI leaves its
 * own context current; the caller's is restored.
 */
static SPIPlanPtr
ms_prepare(const char *sql, int nargs, Oid *argtypes, Oid owner)
{
	MemoryContext cxt = CurrentMemoryContext;
	Oid			save_userid;
	int			save_sec;
	SPIPlanPtr	plan;

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_NOFORCE_RLS);
	plan = SPI_prepare_cursor(sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);
	SetUserIdAndSecContext(save_userid, save_sec);
	if (plan == NULL)
		elog(ERROR, "could not prepare \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "could not keep plan for \"%s\"", sql);
	MemoryContextSwitchTo(cxt);
	return plan;
}

/*
 * ms_runtime_build prepares the statements of one direction.
 */
static void
ms_runtime_build(MsRuntime *rt, const MsDirection *d, Relation src, Relation dst)
{
	TupleDesc	desc = RelationGetDescr(src);
	char	   *from = MsRowSourceClause(d, src);
	Oid		   *types;
	int			x = -1;
	int			i = 0;

	rt->nparams = bms_num_members(d->src_attrs);
	rt->nkeys = d->nkeys;
	rt->param_attno = palloc(sizeof(AttrNumber) * rt->nparams);
	rt->param_len = palloc(sizeof(int16) * rt->nparams);
	rt->param_byval = palloc(sizeof(bool) * rt->nparams);
	rt->key_attno = d->src_key;
	rt->values = palloc0(sizeof(Datum) * (rt->nparams + rt->nkeys));
	rt->nulls = palloc0(rt->nparams + rt->nkeys);
	types = palloc(sizeof(Oid) * (rt->nparams + rt->nkeys));
	while ((x = bms_next_member(d->src_attrs, x)) >= 0)
	{
		Form_pg_attribute att = TupleDescAttr(desc, x - 1);

		rt->param_attno[i] = x;
		rt->param_len[i] = att->attlen;
		rt->param_byval[i] = att->attbyval;
		types[i] = att->atttypid;
		i++;
	}
	for (int k = 0; k < rt->nkeys; k++)
		types[rt->nparams + k] = TupleDescAttr(desc, d->src_key[k] - 1)->atttypid;

	rt->dst_owner = dst->rd_rel->relowner;
	rt->upsert = ms_prepare(MsSqlUpsert(d, from, true), rt->nparams, types,
							rt->dst_owner);
	rt->update = ms_prepare(MsSqlUpdate(d, from, rt->nparams + 1),
							rt->nparams + rt->nkeys, types, rt->dst_owner);
	rt->delete = ms_prepare(MsSqlDelete(d, 1), rt->nkeys,
							types + rt->nparams, rt->dst_owner);
	rt->truncate_sql = MsSqlTruncate(d);
	rt->delete_all_sql = psprintf("DELETE FROM ONLY %s", MsQualifiedRelName(d->dst_relid));
}

/*
 * ms_truncate_sql returns the statement that empties the target of a
 * TRUNCATE.  A table named in the same TRUNCATE (TRUNCATE legacy, current)
 * is still open and cannot be truncated again; it is emptied already, and
 * a DELETE of its (no) rows does the same without the error.
 */
static const char *
ms_truncate_sql(MsRuntime *rt, Oid dst_relid)
{
	Relation	rel = RelationIdGetRelation(dst_relid);
	bool		in_use;

	if (!RelationIsValid(rel))
		return rt->truncate_sql;
	in_use = rel->rd_refcnt > 1;
	RelationClose(rel);
	return in_use ? rt->delete_all_sql : rt->truncate_sql;
}

/*
 * ms_entry_build reads a link from mailsync.links, compiles it under the
 * pinned search path and prepares its statements.
 */
static void
ms_entry_build(MsLinkEntry *e)
{
	MemoryContext cxt;
	MemoryContext oldcxt;
	Datum		arg;
	Oid			argtype = TEXTOID;
	bool		isnull;
	Oid			legacy_oid;
	Oid			current_oid;
	Jsonb	   *columns;
	List	   *key;
	char	   *direction;
	Relation	legacy;
	Relation	current;
	MsLinkDef  *def;

	ms_entry_release(e);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MsPushPinnedPath();
	links_relid = MsLinksRelid(false);

	arg = CStringGetTextDatum(e->name);
	MsSpiExecWithArgs("SELECT legacy::pg_catalog.oid, current::pg_catalog.oid, columns, key, direction "
					  "FROM mailsync.links WHERE name = $1",
					  1, &argtype, &arg, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("link \"%s\" does not exist", e->name),
				 errhint("A trigger of a removed link was left behind; drop it, or link the tables again.")));

	cxt = AllocSetContextCreate(link_cache_cxt, "mailsync link",
								ALLOCSET_DEFAULT_SIZES);
	MemoryContextCopyAndSetIdentifier(cxt, e->name);
	oldcxt = MemoryContextSwitchTo(cxt);
	e->cxt = cxt;

	legacy_oid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 1, &isnull));
	current_oid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 2, &isnull));
	columns = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 3, &isnull));
	key = MsTextArrayToList(DatumGetArrayTypePCopy(SPI_getbinval(SPI_tuptable->vals[0],
																 SPI_tuptable->tupdesc,
																 4, &isnull)),
							"key");
	direction = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 5, &isnull));

	legacy = try_table_open(legacy_oid, AccessShareLock);
	current = try_table_open(current_oid, AccessShareLock);
	if (legacy == NULL || current == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("link \"%s\" is broken: its %s table (OID %u) no longer exists",
						e->name, legacy == NULL ? "legacy" : "current",
						legacy == NULL ? legacy_oid : current_oid),
				 errhint("Run mailsync.unlink('%s').", e->name)));

	def = MsCompileLink(e->name, legacy, current, columns, key, direction);
	for (int side = MS_UP; side <= MS_DOWN; side++)
	{
		if (def->dir[side].enabled)
			ms_runtime_build(&e->rt[side], &def->dir[side],
							 side == MS_UP ? legacy : current,
							 side == MS_UP ? current : legacy);
	}
	e->row_trigger = MsTriggerName(e->name, false);
	e->truncate_trigger = MsTriggerName(e->name, true);
	e->def = def;

	table_close(legacy, AccessShareLock);
	table_close(current, AccessShareLock);
	MemoryContextSwitchTo(oldcxt);
	MsPopPinnedPath();
	SPI_finish();
	e->valid = true;
}

/*
 * ms_build_error_callback names the link whose definition failed to
 * compile, so that a broken link fails loudly and says which.
 */
static void
ms_build_error_callback(void *arg)
{
	errcontext("mailsync link \"%s\"", (const char *) arg);
}

/*
 * ms_fill_params copies the source columns of a row into the parameters.
 */
static inline void
ms_fill_params(MsRuntime *rt, TupleTableSlot *slot)
{
	for (int i = 0; i < rt->nparams; i++)
	{
		bool		isnull;

		rt->values[i] = slot_getattr(slot, rt->param_attno[i], &isnull);
		rt->nulls[i] = isnull ? 'n' : ' ';
	}
}

/*
 * ms_fill_keys copies the key of a row into the parameters from "first".
 */
static inline void
ms_fill_keys(MsRuntime *rt, TupleTableSlot *slot, int first)
{
	for (int k = 0; k < rt->nkeys; k++)
	{
		bool		isnull;

		rt->values[first + k] = slot_getattr(slot, rt->key_attno[k], &isnull);
		rt->nulls[first + k] = isnull ? 'n' : ' ';
	}
}

/*
 * ms_row_changed tells whether an UPDATE changed any source column that
 * the mapping reads, comparing stored images.
 */
static inline bool
ms_row_changed(MsRuntime *rt, TupleTableSlot *oldslot, TupleTableSlot *newslot)
{
	for (int i = 0; i < rt->nparams; i++)
	{
		bool		oldnull;
		bool		newnull;
		Datum		oldval = slot_getattr(oldslot, rt->param_attno[i], &oldnull);
		Datum		newval = slot_getattr(newslot, rt->param_attno[i], &newnull);

		if (oldnull != newnull)
			return true;
		if (!oldnull && !datumIsEqual(oldval, newval, rt->param_byval[i],
									  rt->param_len[i]))
			return true;
	}
	return false;
}

/*
 * ms_propagate runs a prepared statement on the other table, and the
 * fallback statement when the first one touched no row, with the link
 * silenced, as the other table's owner, under the pinned search path.
 */
static void
ms_propagate(MsLinkEntry *e, MsRuntime *rt, SPIPlanPtr plan,
			 SPIPlanPtr fallback, const char *utility)
{
	Oid			save_userid;
	int			save_sec;
	int			rc;

	ms_guard_push(e);
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(rt->dst_owner, save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_NOFORCE_RLS);
	MsPushPinnedPath();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	if (utility)
		rc = SPI_execute(utility, false, 0);
	else
		rc = SPI_execute_plan(plan, rt->values, rt->nulls, false, 0);
	if (rc < 0)
		elog(ERROR, "mailsync link \"%s\": SPI failed: %s", e->name,
			 SPI_result_code_string(rc));
	if (fallback && SPI_processed == 0)
	{
		rc = SPI_execute_plan(fallback, rt->values, rt->nulls, false, 0);
		if (rc < 0)
			elog(ERROR, "mailsync link \"%s\": SPI failed: %s", e->name,
				 SPI_result_code_string(rc));
	}

	SPI_finish();
	MsPopPinnedPath();
	SetUserIdAndSecContext(save_userid, save_sec);
	ms_guard_pop();
}

/*
 * mailsync_sync_trigger is the trigger function of every link.  Its one
 * argument is the link name.
 */
Datum
mailsync_sync_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Trigger    *trigger;
	MsLinkEntry *e;
	MsLinkDef  *def;
	MsRuntime  *rt;
	Oid			relid;
	int			side;
	bool		truncate;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("mailsync.sync_trigger: must be called as trigger")));
	if (!TRIGGER_FIRED_AFTER(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("mailsync.sync_trigger: must be fired AFTER the write")));
	trigger = td->tg_trigger;
	if (trigger->tgnargs != 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("mailsync.sync_trigger: trigger \"%s\" must have one argument, the link name",
						trigger->tgname)));

	e = ms_entry_lookup(trigger->tgargs[0]);
	if (ms_guard_contains(e))
		return PointerGetDatum(NULL);
	if (!e->valid)
	{
		ErrorContextCallback errcb;

		errcb.callback = ms_build_error_callback;
		errcb.arg = e->name;
		errcb.previous = error_context_stack;
		error_context_stack = &errcb;
		ms_entry_build(e);
		error_context_stack = errcb.previous;
	}

	def = e->def;
	relid = RelationGetRelid(td->tg_relation);
	side = relid == def->legacy ? MS_UP : relid == def->current ? MS_DOWN : -1;
	truncate = TRIGGER_FIRED_BY_TRUNCATE(td->tg_event);
	if (side < 0 || !def->dir[side].enabled ||
		strcmp(trigger->tgname, truncate ? e->truncate_trigger : e->row_trigger) != 0 ||
		(TRIGGER_FIRED_FOR_ROW(td->tg_event) != 0) == truncate)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on table \"%s\" is not a trigger of mailsync link \"%s\"",
						trigger->tgname, MsRelDisplayName(relid), e->name),
				 errhint("Only mailsync.link creates triggers that call mailsync.sync_trigger; drop this one.")));
	rt = &e->rt[side];

	if (truncate)
		ms_propagate(e, rt, NULL, NULL,
					 ms_truncate_sql(rt, def->dir[side].dst_relid));
	else if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
	{
		ms_fill_params(rt, td->tg_trigslot);
		ms_propagate(e, rt, rt->upsert, NULL, NULL);
	}
	else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		if (!ms_row_changed(rt, td->tg_trigslot, td->tg_newslot))
			return PointerGetDatum(NULL);
		ms_fill_params(rt, td->tg_newslot);
		ms_fill_keys(rt, td->tg_trigslot, rt->nparams);
		ms_propagate(e, rt, rt->update, rt->upsert, NULL);
	}
	else if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
	{
		ms_fill_keys(rt, td->tg_trigslot, 0);
		ms_propagate(e, rt, rt->delete, NULL, NULL);
	}
	else
		elog(ERROR, "mailsync.sync_trigger: unrecognized trigger event %u",
			 td->tg_event);

	return PointerGetDatum(NULL);
}

/*
 * mailsync_links_changed is the statement trigger on mailsync.links: any
 * change to the catalog tells every backend to rebuild its cached links
 * (the message is sent at commit; this backend sees it at once).
 */
Datum
mailsync_links_changed(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("mailsync._links_changed: must be called as trigger")));
	CacheInvalidateRelcacheByRelid(RelationGetRelid(td->tg_relation));
	return PointerGetDatum(NULL);
}
