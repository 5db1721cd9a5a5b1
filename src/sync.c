/*-------------------------------------------------------------------------
 *
 * sync.c
 *	  The sync triggers: the hot path of mailsync.
 *
 * A link puts four AFTER ... FOR EACH STATEMENT triggers on each table it
 * syncs from: INSERT and DELETE with their transition table, UPDATE with
 * both, and TRUNCATE.  They all run mailsync_sync_trigger, which turns the
 * statement's rows into the equivalent writes on the other table, in the
 * writer's transaction:
 *
 *	  INSERT	-> an upsert: INSERT, or UPDATE where the key exists
 *	  UPDATE	-> UPDATE ... WHERE key = OLD key; where no row matched, the
 *				   upsert, so a row missing on the other side is created
 *	  DELETE	-> DELETE ... WHERE key = OLD key
 *	  TRUNCATE	-> TRUNCATE
 *
 * An updated row whose source columns the mapping reads did not change is
 * skipped.  The old and new transition tables of an UPDATE hold the rows in
 * the same order, one pair per updated row, which is how a changed key is
 * followed from OLD to NEW.
 *
 * Two paths do the work, with the same statements underneath:
 *
 *	  - set-based: one statement over the transition table for the whole
 *		statement (INSERT ... SELECT, UPDATE ... FROM, DELETE ... USING),
 *		planned for each statement, since the table's size decides the plan;
 *	  - row by row: one prepared statement per row, with the row's values as
 *		parameters (prepared once per backend and link, generic plans).
 *
 * mailsync.set_based picks between them: "auto" (the default) takes the
 * set-based path from MS_SET_BASED_MIN_ROWS rows on; "on" and "off" force
 * one path, so that the regression suite can show both behave the same.
 * An UPDATE that changes a key goes row by row, in the order the rows were
 * updated, so that chains of key changes replay as they happened.
 *
 * The cache: a hash keyed by link name; a relcache invalidation of either
 * table, or any change to mailsync.links, marks an entry for a rebuild on
 * its next use.
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

#include "access/genam.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_sequence.h"
#include "catalog/pg_subscription_rel.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/queryenvironment.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"

#include "mailsync.h"

PG_FUNCTION_INFO_V1(mailsync_sync_trigger);
PG_FUNCTION_INFO_V1(mailsync_links_changed);

/*
 * MsRuntime: the statements of one direction of a link.  The row-by-row
 * statements are prepared, and share one parameter layout: $1..$nparams
 * are the source columns the mapping reads (NEW row), the UPDATE takes a
 * key after them (the OLD key, or the NEW one when an INSERT met an
 * existing row), the DELETE takes the OLD key alone.  The set-based
 * statements read a transition table.
 */
typedef struct MsRuntime
{
	int			nparams;
	AttrNumber *param_attno;
	int16	   *param_len;
	bool	   *param_byval;
	int			nkeys;
	AttrNumber *key_attno;
	int16	   *key_len;
	bool	   *key_byval;
	Oid			dst_relid;
	Oid			dst_owner;
	char	   *dst_display;	/* the target's name, for messages */
	MsDirectPlan *direct;		/* set when rows are written directly */
	bool		own_capture;	/* only the link's triggers capture the target */
	Oid			trigger_fn;		/* the function of the link's triggers */
	int			side;			/* MS_UP or MS_DOWN */
	Oid			seq_key_type;	/* source key type, when keys share a sequence */
	SPIPlanPtr	insert;
	SPIPlanPtr	update;
	SPIPlanPtr	delete;
	char	   *set_upsert_sql;
	char	   *set_update_sql;
	char	   *set_delete_sql;
	char	   *truncate_sql;
	char	   *delete_all_sql; /* for a target the TRUNCATE itself holds open */
	char	   *shape_sql[MS_NUM_EVENTS];	/* a shape link's statements */
	char	   *join_sql;		/* a join link's, for an UPDATE of the joined table */
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
	char	   *trigger[MS_NUM_EVENTS]; /* expected trigger names */
	char	   *apply_trigger[MS_EVENT_TRUNCATE];	/* and of a replica link */
	Oid			seq;			/* the sequence both keys draw from, or 0 */
	int64		seq_floor;		/* no key up to this can come from it again */
	MsRuntime	rt[2];
} MsLinkEntry;

/* The guard: links whose write is being propagated right now */
typedef struct MsGuardEntry
{
	MsLinkEntry *link;
	int			nestlevel;
} MsGuardEntry;

#define MS_MAX_GUARD	64

/* From how many rows mailsync.set_based = auto takes the set-based path */
#define MS_SET_BASED_MIN_ROWS	32

static ExecutorStart_hook_type prev_executor_start = NULL;

/*
 * The target of the statement mailsync runs next, and the link writing it:
 * when the only triggers that would capture its rows into transition
 * tables are the link's own, silent while the link writes, the capture is
 * skipped.
 */
static struct
{
	Oid			relid;
	Oid			trigger_fn;
	char		link[NAMEDATALEN];
}			uncaptured;

static void ms_rewind(Tuplestorestate *ts);

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
 * ms_proc_callback marks every cached link stale when a function changes:
 * the planned expressions of the direct path may have inlined it.
 */
static void
ms_proc_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	ms_invalidate_callback(arg, InvalidOid);
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
 * ms_executor_start drops the transition capture of the statement that
 * mailsync writes the other table of a link with, when only that link's
 * own (silenced) triggers would read it.  The statement triggers still
 * fire, and return at once.
 */
static void
ms_executor_start(QueryDesc *queryDesc, int eflags)
{
	Oid			relid = uncaptured.relid;

	uncaptured.relid = InvalidOid;
	if (prev_executor_start)
		prev_executor_start(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
	if (OidIsValid(relid) && queryDesc->planstate &&
		IsA(queryDesc->planstate, ModifyTableState))
	{
		ModifyTableState *mt = (ModifyTableState *) queryDesc->planstate;
		Relation	rel = mt->rootResultRelInfo->ri_RelationDesc;

		/* the triggers as of now, under the statement's lock */
		if (RelationGetRelid(rel) == relid &&
			MsDirectEligible(rel, uncaptured.link, uncaptured.trigger_fn, true))
		{
			mt->mt_transition_capture = NULL;
			mt->mt_oc_transition_capture = NULL;
		}
	}
}

/*
 * ms_skip_capture arms ms_executor_start for the next statement.
 */
static void
ms_skip_capture(Oid relid, const char *link, Oid trigger_fn)
{
	uncaptured.relid = relid;
	uncaptured.trigger_fn = trigger_fn;
	strlcpy(uncaptured.link, link, NAMEDATALEN);
}

/*
 * MsSkipOwnCapture makes the next statement, when it writes dst_relid,
 * skip the transition capture that only the link's own triggers would
 * read: backfill and repair write under the guard, which keeps those
 * triggers silent.
 */
void
MsSkipOwnCapture(Oid dst_relid, const char *link)
{
	List	   *fname = list_make2(makeString("mailsync"), makeString("sync_trigger"));
	Oid			fn = LookupFuncName(fname, 0, NULL, true);

	list_free_deep(fname);
	if (OidIsValid(fn))
		ms_skip_capture(dst_relid, link, fn);
}

/*
 * MsSyncInit registers the callbacks of the sync machinery; called once
 * from _PG_init.
 */
void
MsSyncInit(void)
{
	prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = ms_executor_start;
	CacheRegisterRelcacheCallback(ms_invalidate_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, ms_proc_callback, (Datum) 0);
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

		if (rt->insert)
			SPI_freeplan(rt->insert);
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
ms_runtime_build(MsRuntime *rt, int side, const MsDirection *d, Relation src,
				 Relation dst, const char *link, Oid trigger_fn)
{
	TupleDesc	desc = RelationGetDescr(src);
	char	   *from_new = MsTransitionSourceClause(d, MS_NEW_TABLE);
	Oid		   *types;
	int			x = -1;
	int			i = 0;

	rt->nparams = bms_num_members(d->src_attrs);
	rt->nkeys = d->nkeys;
	rt->param_attno = palloc(sizeof(AttrNumber) * rt->nparams);
	rt->param_len = palloc(sizeof(int16) * rt->nparams);
	rt->param_byval = palloc(sizeof(bool) * rt->nparams);
	rt->key_attno = d->src_key;
	rt->key_len = palloc(sizeof(int16) * rt->nkeys);
	rt->key_byval = palloc(sizeof(bool) * rt->nkeys);
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
	{
		Form_pg_attribute att = TupleDescAttr(desc, d->src_key[k] - 1);

		types[rt->nparams + k] = att->atttypid;
		rt->key_len[k] = att->attlen;
		rt->key_byval[k] = att->attbyval;
	}

	rt->dst_relid = RelationGetRelid(dst);
	rt->dst_owner = dst->rd_rel->relowner;
	rt->dst_display = MsRelDisplayName(rt->dst_relid);
	rt->direct = MsDirectEligible(dst, link, trigger_fn, false) ?
		MsDirectPlanBuild(d) : NULL;
	rt->own_capture = MsDirectEligible(dst, link, trigger_fn, true);
	rt->trigger_fn = trigger_fn;
	rt->side = side;
	rt->insert = ms_prepare(MsSqlInsertRow(d), rt->nparams, types, rt->dst_owner);
	rt->update = ms_prepare(MsSqlUpdateRow(d), rt->nparams + rt->nkeys, types,
							rt->dst_owner);
	rt->delete = ms_prepare(MsSqlDelete(d, NULL), rt->nkeys,
							types + rt->nparams, rt->dst_owner);
	rt->set_upsert_sql = MsSqlUpsert(d, from_new, true);
	rt->set_update_sql = MsSqlUpdate(d, from_new);
	rt->set_delete_sql = MsSqlDelete(d, MsTransitionSourceClause(d, MS_OLD_TABLE));
	rt->truncate_sql = MsSqlTruncate(d);
	rt->delete_all_sql = psprintf("DELETE FROM ONLY %s", MsQualifiedRelName(d->dst_relid));
}

/*
 * ms_shape_runtime_build keeps the statements of one direction of a list,
 * document or join link: one per event, over the transition tables (and,
 * for a join link's up direction, the one for its joined table).
 */
static void
ms_shape_runtime_build(MsRuntime *rt, int side, const MsLinkDef *def,
					   Relation dst, Oid trigger_fn)
{
	rt->dst_relid = RelationGetRelid(dst);
	rt->dst_owner = dst->rd_rel->relowner;
	rt->dst_display = MsRelDisplayName(rt->dst_relid);
	rt->trigger_fn = trigger_fn;
	rt->side = side;
	for (int ev = 0; ev < MS_NUM_EVENTS; ev++)
		rt->shape_sql[ev] = MsShapeTriggerSql(def, side, (MsEvent) ev);
	if (def->shape->kind == MS_SHAPE_JOIN && side == MS_UP)
		rt->join_sql = MsShapeJoinSql(def);
}

/*
 * ms_ascending_sequence returns the sequence both keys of a link draw from,
 * when there is one that counts upwards; mailsync keeps it past the keys
 * that rows get from elsewhere.
 */
static Oid
ms_ascending_sequence(const MsLinkDef *def)
{
	HeapTuple	tup;
	bool		up;

	if (!OidIsValid(def->shared_seq) || def->nkeys != 1)
		return InvalidOid;
	tup = SearchSysCache1(SEQRELID, ObjectIdGetDatum(def->shared_seq));
	if (!HeapTupleIsValid(tup))
		return InvalidOid;
	up = ((Form_pg_sequence) GETSTRUCT(tup))->seqincrement > 0;
	ReleaseSysCache(tup);
	return up ? def->shared_seq : InvalidOid;
}

/*
 * ms_sequence_position returns the highest value the sequence has handed
 * out (one less than its first value when it has handed out none), read
 * from its page without taking a value.
 */
static int64
ms_sequence_position(Relation seqrel)
{
	Buffer		buf = ReadBuffer(seqrel, 0);
	Page		page;
	HeapTupleHeader th;
	Form_pg_sequence_data data;
	int64		pos;

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	th = (HeapTupleHeader) PageGetItem(page, PageGetItemId(page, FirstOffsetNumber));
	data = (Form_pg_sequence_data) ((char *) th + th->t_hoff);
	pos = data->is_called ? data->last_value : data->last_value - 1;
	UnlockReleaseBuffer(buf);
	return pos;
}

/*
 * ms_advance_sequence moves the link's shared sequence past the highest
 * key among the rows a statement wrote with a key of their own: otherwise
 * the next row inserted without a key, on either side, would be given that
 * key again.  Rows whose keys came from the sequence are below its
 * position and cost one look at its page.  Advancing is serialised among
 * the sessions that do it, and is not undone by a rollback, as nextval.
 */
static void
ms_advance_sequence(MsLinkEntry *e, MsRuntime *rt, Tuplestorestate *rows,
					TupleDesc desc)
{
	TupleTableSlot *slot;
	AttrNumber	attno = rt->key_attno[0];
	int64		max = PG_INT64_MIN;
	Relation	seqrel;
	int64		pos;

	if (!OidIsValid(e->seq) || !OidIsValid(rt->seq_key_type))
		return;
	slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	ms_rewind(rows);
	while (tuplestore_gettupleslot(rows, true, false, slot))
	{
		bool		isnull;
		Datum		d = slot_getattr(slot, attno, &isnull);
		int64		k;

		if (isnull)
			continue;
		k = rt->seq_key_type == INT8OID ? DatumGetInt64(d) :
			rt->seq_key_type == INT4OID ? (int64) DatumGetInt32(d) :
			rt->seq_key_type == INT2OID ? (int64) DatumGetInt16(d) : PG_INT64_MIN;
		if (k > max)
			max = k;
	}
	ExecDropSingleTupleTableSlot(slot);
	if (max <= e->seq_floor)
		return;

	seqrel = try_relation_open(e->seq, AccessShareLock);
	if (seqrel == NULL)
		return;
	pos = ms_sequence_position(seqrel);
	if (pos < max)
	{
		Oid			save_userid;
		int			save_sec;

		LockRelationOid(e->seq, ShareUpdateExclusiveLock);
		pos = ms_sequence_position(seqrel);
		if (pos < max)
		{
			GetUserIdAndSecContext(&save_userid, &save_sec);
			SetUserIdAndSecContext(seqrel->rd_rel->relowner,
								   save_sec | SECURITY_LOCAL_USERID_CHANGE);
			DirectFunctionCall2(setval_oid, ObjectIdGetDatum(e->seq), Int64GetDatum(max));
			SetUserIdAndSecContext(save_userid, save_sec);
			pos = max;
		}
		UnlockRelationOid(e->seq, ShareUpdateExclusiveLock);
	}
	e->seq_floor = pos;
	relation_close(seqrel, NoLock);
}

/*
 * ms_target_subscribed tells whether logical replication writes the table
 * itself: a replica link does not mirror rows into such a table, which
 * receives the publisher's own copy of them.
 */
static bool
ms_target_subscribed(Oid relid)
{
	Relation	rel = table_open(SubscriptionRelRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	bool		found;

	ScanKeyInit(&key, Anum_pg_subscription_rel_srrelid, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(relid));
	scan = systable_beginscan(rel, SubscriptionRelSrrelidSrsubidIndexId, true,
							  NULL, 1, &key);
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * ms_row_tables makes the row of a row trigger look like the transition
 * tables of a one-row statement, so that both kinds of trigger share one
 * path.
 */
static void
ms_row_tables(TriggerData *td, TriggerData *rowtd)
{
	*rowtd = *td;
	rowtd->tg_oldtable = NULL;
	rowtd->tg_newtable = NULL;
	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
	{
		rowtd->tg_newtable = tuplestore_begin_heap(false, false, work_mem);
		tuplestore_puttupleslot(rowtd->tg_newtable, td->tg_trigslot);
	}
	else
	{
		rowtd->tg_oldtable = tuplestore_begin_heap(false, false, work_mem);
		tuplestore_puttupleslot(rowtd->tg_oldtable, td->tg_trigslot);
		if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		{
			rowtd->tg_newtable = tuplestore_begin_heap(false, false, work_mem);
			tuplestore_puttupleslot(rowtd->tg_newtable, td->tg_newslot);
		}
	}
}

/*
 * ms_entry_build reads a link from mailsync.links, compiles it under the
 * pinned search path and prepares its statements.  trigger_fn is the
 * trigger function's OID, by which the link's own triggers are known.
 */
static void
ms_entry_build(MsLinkEntry *e, Oid trigger_fn)
{
	MemoryContext cxt;
	MemoryContext oldcxt;
	Relation	legacy;
	Relation	current;
	MsLinkDef  *def;

	ms_entry_release(e);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MsPushPinnedPath();
	links_relid = MsLinksRelid(false);

	cxt = AllocSetContextCreate(link_cache_cxt, "mailsync link",
								ALLOCSET_DEFAULT_SIZES);
	MemoryContextCopyAndSetIdentifier(cxt, e->name);
	oldcxt = MemoryContextSwitchTo(cxt);
	e->cxt = cxt;

	def = MsLoadLink(e->name, true);
	legacy = table_open(def->legacy, NoLock);
	current = table_open(def->current, NoLock);
	for (int side = MS_UP; side <= MS_DOWN; side++)
	{
		if (def->dir[side].enabled && def->shape)
			ms_shape_runtime_build(&e->rt[side], side, def,
								   side == MS_UP ? current : legacy, trigger_fn);
		else if (def->dir[side].enabled)
			ms_runtime_build(&e->rt[side], side, &def->dir[side],
							 side == MS_UP ? legacy : current,
							 side == MS_UP ? current : legacy,
							 e->name, trigger_fn);
	}
	for (int ev = 0; ev < MS_NUM_EVENTS; ev++)
		e->trigger[ev] = MsTriggerName(e->name, def->shape != NULL, (MsEvent) ev, false);
	for (int ev = 0; ev < MS_EVENT_TRUNCATE; ev++)
		e->apply_trigger[ev] = MsTriggerName(e->name, def->shape != NULL, (MsEvent) ev, true);
	e->seq = ms_ascending_sequence(def);
	e->seq_floor = PG_INT64_MIN;
	for (int side = MS_UP; side <= MS_DOWN && OidIsValid(e->seq) && !def->shape; side++)
	{
		Relation	src = side == MS_UP ? legacy : current;

		if (def->dir[side].enabled)
			e->rt[side].seq_key_type =
				TupleDescAttr(RelationGetDescr(src), def->dir[side].src_key[0] - 1)->atttypid;
	}
	e->def = def;

	table_close(legacy, NoLock);
	table_close(current, NoLock);
	MemoryContextSwitchTo(oldcxt);
	MsPopPinnedPath();
	SPI_finish();
	e->valid = true;
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
 * ms_columns_differ tells whether two rows differ in any of the given
 * columns, comparing stored images.
 */
static inline bool
ms_columns_differ(TupleTableSlot *a, TupleTableSlot *b, int n,
				  const AttrNumber *attnos, const bool *byval, const int16 *len)
{
	for (int i = 0; i < n; i++)
	{
		bool		anull;
		bool		bnull;
		Datum		aval = slot_getattr(a, attnos[i], &anull);
		Datum		bval = slot_getattr(b, attnos[i], &bnull);

		if (anull != bnull)
			return true;
		if (!anull && !datumIsEqual(aval, bval, byval[i], len[i]))
			return true;
	}
	return false;
}

/*
 * ms_rewind starts reading a transition table from its first row, with a
 * read pointer of its own: other triggers of the statement read it too.
 */
static void
ms_rewind(Tuplestorestate *ts)
{
	tuplestore_select_read_pointer(ts, tuplestore_alloc_read_pointer(ts, 0));
	tuplestore_rescan(ts);
}

/*
 * ms_next_changed reads the next (OLD, NEW) pair of an UPDATE in which a
 * source column the mapping reads changed; false when there is none left.
 */
static bool
ms_next_changed(MsRuntime *rt, Tuplestorestate *olds, Tuplestorestate *news,
				TupleTableSlot *oldslot, TupleTableSlot *newslot)
{
	while (tuplestore_gettupleslot(olds, true, false, oldslot) &&
		   tuplestore_gettupleslot(news, true, false, newslot))
	{
		if (ms_columns_differ(oldslot, newslot, rt->nparams, rt->param_attno,
							  rt->param_byval, rt->param_len))
			return true;
	}
	return false;
}

/*
 * ms_use_set_based tells whether n rows take the set-based path.
 */
static inline bool
ms_use_set_based(int64 n)
{
	switch (MsSetBased)
	{
		case MS_SET_BASED_ON:
			return true;
		case MS_SET_BASED_OFF:
			return false;
		default:
			return n >= MS_SET_BASED_MIN_ROWS;
	}
}

/* What ms_begin saved, for ms_end to restore */
typedef struct MsExecState
{
	Oid			save_userid;
	int			save_sec;
	bool		spi;
	ErrorContextCallback errcb;
	const char *link;
	const char *target;
} MsExecState;

/*
 * ms_write_error_callback names the link and the table it was writing
 * when the mirrored write fails (a constraint, a value that does not fit).
 */
static void
ms_write_error_callback(void *arg)
{
	MsExecState *st = (MsExecState *) arg;

	errcontext("mailsync link \"%s\", writing table \"%s\"", st->link, st->target);
}

/*
 * ms_begin prepares to write the other table of a link: the link silenced,
 * the other table's owner as user, the pinned search path, an SPI
 * connection unless the rows are written directly.  ms_end undoes it; an
 * error undoes it by (sub)transaction abort.
 */
static void
ms_begin(MsLinkEntry *e, MsRuntime *rt, MsExecState *st, bool spi)
{
	ms_guard_push(e);
	st->link = e->name;
	st->target = rt->dst_display;
	st->errcb.callback = ms_write_error_callback;
	st->errcb.arg = st;
	st->errcb.previous = error_context_stack;
	error_context_stack = &st->errcb;
	GetUserIdAndSecContext(&st->save_userid, &st->save_sec);
	SetUserIdAndSecContext(rt->dst_owner, st->save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_NOFORCE_RLS);
	MsPushPinnedPath();
	st->spi = spi;
	if (spi && SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

static void
ms_end(MsExecState *st)
{
	if (st->spi)
		SPI_finish();
	MsPopPinnedPath();
	SetUserIdAndSecContext(st->save_userid, st->save_sec);
	error_context_stack = st->errcb.previous;
	ms_guard_pop();
}

/*
 * ms_run_plan executes a prepared row statement with the current
 * parameters and returns the rows it touched.
 */
static uint64
ms_run_plan(MsLinkEntry *e, MsRuntime *rt, SPIPlanPtr plan)
{
	int			rc;

	if (rt->own_capture)
		ms_skip_capture(rt->dst_relid, e->name, rt->trigger_fn);
	rc = SPI_execute_plan(plan, rt->values, rt->nulls, false, 0);

	if (rc < 0)
		elog(ERROR, "mailsync link \"%s\": SPI failed: %s", e->name,
			 SPI_result_code_string(rc));
	return SPI_processed;
}

/*
 * ms_run_sql plans and executes a set-based or utility statement and
 * returns the rows it touched.
 */
static uint64
ms_run_sql(MsLinkEntry *e, MsRuntime *rt, const char *sql)
{
	int			rc;

	if (rt->own_capture)
		ms_skip_capture(rt->dst_relid, e->name, rt->trigger_fn);
	rc = SPI_execute(sql, false, 0);

	if (rc < 0)
		elog(ERROR, "mailsync link \"%s\": SPI failed: %s", e->name,
			 SPI_result_code_string(rc));
	return SPI_processed;
}

/*
 * ms_register_table makes a tuplestore of rows of relid readable, under
 * the given name, by the statements of the current SPI connection.
 */
static void
ms_register_table(const char *name, Oid relid, Tuplestorestate *ts)
{
	EphemeralNamedRelation enr = palloc0(sizeof(EphemeralNamedRelationData));

	enr->md.name = pstrdup(name);
	enr->md.reliddesc = relid;
	enr->md.tupdesc = NULL;
	enr->md.enrtype = ENR_NAMED_TUPLESTORE;
	enr->md.enrtuples = tuplestore_tuple_count(ts);
	enr->reldata = ts;
	if (SPI_register_relation(enr) != SPI_OK_REL_REGISTER)
		elog(ERROR, "could not register transition table \"%s\"", name);
}

/*
 * ms_truncate_sql returns the statement that empties the target of a
 * TRUNCATE.  A table named in the same TRUNCATE (TRUNCATE legacy, current)
 * is still open and cannot be truncated again; it is emptied already, and
 * a DELETE of its (no) rows does the same without the error.
 */
static const char *
ms_truncate_sql(MsRuntime *rt)
{
	Relation	rel = RelationIdGetRelation(rt->dst_relid);
	bool		in_use;

	if (!RelationIsValid(rel))
		return rt->truncate_sql;
	in_use = rel->rd_refcnt > 1;
	RelationClose(rel);
	return in_use ? rt->delete_all_sql : rt->truncate_sql;
}

/*
 * ms_upsert_row writes one source row (its columns in the parameters) to
 * the other table: INSERT ... ON CONFLICT DO NOTHING, and where the key
 * exists an UPDATE of that row.  A row deleted between the two by another
 * transaction sends it round again; after a few rounds the write fails
 * with a serialization failure, which the writer may retry.
 */
static void
ms_upsert_row(MsLinkEntry *e, MsRuntime *rt, TupleTableSlot *slot)
{
	for (int attempt = 0; attempt < 3; attempt++)
	{
		if (ms_run_plan(e, rt, rt->insert) > 0)
			return;
		ms_fill_keys(rt, slot, rt->nparams);
		if (ms_run_plan(e, rt, rt->update) > 0)
			return;
	}
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("mailsync link \"%s\": the row kept appearing and vanishing on table \"%s\"",
					e->name, MsRelDisplayName(rt->dst_relid)),
			 errhint("Another transaction inserts and deletes the same key at once; retry the transaction.")));
}

/*
 * ms_sync_rows mirrors the rows an INSERT added (each is upserted into the
 * other table) or a DELETE removed (each is deleted there by key).
 */
static void
ms_sync_rows(MsLinkEntry *e, MsRuntime *rt, TriggerData *td, bool delete)
{
	Tuplestorestate *rows = delete ? td->tg_oldtable : td->tg_newtable;
	int64		n = tuplestore_tuple_count(rows);
	MsExecState st;

	bool		set_based = ms_use_set_based(n);

	if (n == 0)
		return;
	ms_begin(e, rt, &st, set_based || !rt->direct);
	if (set_based)
	{
		ms_register_table(delete ? MS_OLD_TABLE : MS_NEW_TABLE,
						  RelationGetRelid(td->tg_relation), rows);
		ms_run_sql(e, rt, delete ? rt->set_delete_sql : rt->set_upsert_sql);
	}
	else
	{
		TupleTableSlot *slot = MakeSingleTupleTableSlot(RelationGetDescr(td->tg_relation),
														&TTSOpsMinimalTuple);
		MsDirectState ds;

		if (rt->direct)
			MsDirectBegin(&ds, &e->def->dir[rt->side], rt->direct, delete);
		ms_rewind(rows);
		while (tuplestore_gettupleslot(rows, true, false, slot))
		{
			if (rt->direct && delete)
				MsDirectDelete(&ds, slot);
			else if (rt->direct)
				MsDirectUpsert(&ds, slot);
			else if (delete)
			{
				ms_fill_keys(rt, slot, 0);
				ms_run_plan(e, rt, rt->delete);
			}
			else
			{
				ms_fill_params(rt, slot);
				ms_upsert_row(e, rt, slot);
			}
		}
		if (rt->direct)
			MsDirectEnd(&ds);
		ExecDropSingleTupleTableSlot(slot);
	}
	ms_end(&st);
}

/*
 * ms_sync_update mirrors the rows an UPDATE changed.  A first pass over
 * the (OLD, NEW) pairs counts the rows that changed a source column the
 * mapping reads and sees whether any key changed; the second pass does
 * the work, set-based over the changed rows when no key changed and the
 * statement is large enough, else row by row in the order of the update.
 * It tells whether a key changed.
 */
static bool
ms_sync_update(MsLinkEntry *e, MsRuntime *rt, TriggerData *td)
{
	Tuplestorestate *olds = td->tg_oldtable;
	Tuplestorestate *news = td->tg_newtable;
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	TupleTableSlot *oldslot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	TupleTableSlot *newslot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	int64		n = tuplestore_tuple_count(news);
	int64		nchanged = 0;
	bool		key_changed = false;
	MsExecState st;

	ms_rewind(olds);
	ms_rewind(news);
	while (ms_next_changed(rt, olds, news, oldslot, newslot))
	{
		nchanged++;
		if (!key_changed)
			key_changed = ms_columns_differ(oldslot, newslot, rt->nkeys,
											rt->key_attno, rt->key_byval,
											rt->key_len);
	}

	if (nchanged > 0)
	{
		bool		set_based = !key_changed && ms_use_set_based(nchanged);
		Tuplestorestate *changed = news;

		/* the set-based statements read only the rows that changed */
		if (set_based && nchanged < n)
		{
			changed = tuplestore_begin_heap(false, false, work_mem);
			ms_rewind(olds);
			ms_rewind(news);
			while (ms_next_changed(rt, olds, news, oldslot, newslot))
				tuplestore_puttupleslot(changed, newslot);
		}

		ms_begin(e, rt, &st, set_based || !rt->direct);
		if (set_based)
		{
			ms_register_table(MS_NEW_TABLE, RelationGetRelid(td->tg_relation), changed);
			if (ms_run_sql(e, rt, rt->set_update_sql) < (uint64) nchanged)
				ms_run_sql(e, rt, rt->set_upsert_sql);
		}
		else
		{
			MsDirectState ds;

			if (rt->direct)
				MsDirectBegin(&ds, &e->def->dir[rt->side], rt->direct, false);
			ms_rewind(olds);
			ms_rewind(news);
			while (ms_next_changed(rt, olds, news, oldslot, newslot))
			{
				if (rt->direct)
					MsDirectUpdate(&ds, oldslot, newslot);
				else
				{
					ms_fill_params(rt, newslot);
					ms_fill_keys(rt, oldslot, rt->nparams);
					if (ms_run_plan(e, rt, rt->update) == 0)
						ms_upsert_row(e, rt, newslot);
				}
			}
			if (rt->direct)
				MsDirectEnd(&ds);
		}
		ms_end(&st);
		if (changed != news)
			tuplestore_end(changed);
	}
	ExecDropSingleTupleTableSlot(oldslot);
	ExecDropSingleTupleTableSlot(newslot);
	return key_changed;
}

/*
 * ms_sync_shape mirrors a statement on one table of a list, document or
 * join link: its SQL over the statement's transition tables.
 */
static void
ms_sync_shape(MsLinkEntry *e, MsRuntime *rt, TriggerData *td, MsEvent event,
			  const char *sql)
{
	Oid			relid = RelationGetRelid(td->tg_relation);
	MsExecState st;

	if (event != MS_EVENT_TRUNCATE &&
		(td->tg_newtable == NULL || tuplestore_tuple_count(td->tg_newtable) == 0) &&
		(td->tg_oldtable == NULL || tuplestore_tuple_count(td->tg_oldtable) == 0))
		return;
	ms_begin(e, rt, &st, true);
	if (td->tg_newtable && event != MS_EVENT_DELETE)
		ms_register_table(MS_NEW_TABLE, relid, td->tg_newtable);
	if (td->tg_oldtable && event != MS_EVENT_INSERT)
		ms_register_table(MS_OLD_TABLE, relid, td->tg_oldtable);
	ms_run_sql(e, rt, sql);
	ms_end(&st);
}

/*
 * mailsync_sync_trigger is the trigger function of every link.  Its one
 * argument is the link name.  It fires AFTER each statement, with the
 * statement's transition tables; the apply triggers of a replica link
 * fire AFTER each row, which is taken as a statement of one row.
 */
Datum
mailsync_sync_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TriggerData rowtd;
	Trigger    *trigger;
	MsLinkEntry *e;
	MsLinkDef  *def;
	MsRuntime  *rt;
	Oid			relid;
	int			side;
	MsEvent		event;
	bool		for_row;
	bool		joined;
	const char *expected;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("mailsync.sync_trigger: must be called as trigger")));
	if (!TRIGGER_FIRED_AFTER(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("mailsync.sync_trigger: must be fired AFTER the statement or row")));
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

		/* a broken link fails loudly and says which */
		MsPushLinkContext(&errcb, e->name);
		ms_entry_build(e, fcinfo->flinfo->fn_oid);
		MsPopLinkContext(&errcb);
	}

	def = e->def;
	relid = RelationGetRelid(td->tg_relation);
	side = relid == def->legacy ? MS_UP : relid == def->current ? MS_DOWN : -1;
	joined = side < 0 && def->shape && def->shape->kind == MS_SHAPE_JOIN &&
		relid == def->shape->join_relid;
	if (joined)
		side = MS_UP;
	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
		event = MS_EVENT_INSERT;
	else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		event = MS_EVENT_UPDATE;
	else if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
		event = MS_EVENT_DELETE;
	else
		event = MS_EVENT_TRUNCATE;
	for_row = TRIGGER_FIRED_FOR_ROW(td->tg_event);
	expected = !for_row ? e->trigger[event] :
		def->replica && event != MS_EVENT_TRUNCATE ? e->apply_trigger[event] : NULL;

	/* only the link's own trigger of this event, on one of its tables */
	if (side < 0 || !def->dir[side].enabled || expected == NULL ||
		(joined && (event != MS_EVENT_UPDATE || for_row)) ||
		strcmp(trigger->tgname, expected) != 0 ||
		(!for_row && event != MS_EVENT_TRUNCATE && event != MS_EVENT_DELETE &&
		 td->tg_newtable == NULL) ||
		(!for_row && event != MS_EVENT_TRUNCATE && event != MS_EVENT_INSERT &&
		 td->tg_oldtable == NULL))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on table \"%s\" is not a trigger of mailsync link \"%s\"",
						trigger->tgname, MsRelDisplayName(relid), e->name),
				 errhint("Only mailsync.link creates triggers that call mailsync.sync_trigger; drop this one.")));
	rt = &e->rt[side];

	/* where logical replication writes the other table too, it is not ours */
	if (SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA &&
		ms_target_subscribed(rt->dst_relid))
		return PointerGetDatum(NULL);
	if (for_row)
	{
		ms_row_tables(td, &rowtd);
		td = &rowtd;
	}

	switch (joined ? -2 : def->shape ? -1 : (int) event)
	{
		case -2:
			ms_sync_shape(e, rt, td, event, rt->join_sql);
			break;
		case -1:
			ms_sync_shape(e, rt, td, event, rt->shape_sql[event]);
			break;
		case MS_EVENT_INSERT:
			ms_sync_rows(e, rt, td, false);
			ms_advance_sequence(e, rt, td->tg_newtable, RelationGetDescr(td->tg_relation));
			break;
		case MS_EVENT_UPDATE:
			if (ms_sync_update(e, rt, td))
				ms_advance_sequence(e, rt, td->tg_newtable,
									RelationGetDescr(td->tg_relation));
			break;
		case MS_EVENT_DELETE:
			ms_sync_rows(e, rt, td, true);
			break;
		case MS_EVENT_TRUNCATE:
			{
				MsExecState st;

				ms_begin(e, rt, &st, true);
				ms_run_sql(e, rt, ms_truncate_sql(rt));
				ms_end(&st);
			}
			break;
	}
	if (for_row)
	{
		if (rowtd.tg_oldtable)
			tuplestore_end(rowtd.tg_oldtable);
		if (rowtd.tg_newtable)
			tuplestore_end(rowtd.tg_newtable);
	}
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
