/*-------------------------------------------------------------------------
 *
 * direct.c
 *	  Write single rows of a link's target table through the table and
 *	  index access methods, without starting an executor for each row.
 *
 * The row-by-row path of the sync triggers spent most of its time starting
 * an executor for each prepared statement.  Where the target table allows
 * it, rows are written the way PostgreSQL's logical replication apply
 * worker writes them: the target row is found by its key through the
 * unique key index and locked, then ExecSimpleRelationInsert, -Update or
 * -Delete writes it, running the target's BEFORE and AFTER row triggers
 * (foreign keys included), checking its constraints, computing its
 * generated columns and maintaining its indexes.
 *
 * What only the executor does is skipped: statement-level triggers and
 * transition tables of the target, and rules.  So a target is written here
 * only when it has none of those but the link's own triggers, which are
 * silent while the link writes anyway; any other target is written with the
 * prepared statements.  MsDirectEligible decides, when the link's cache
 * entry is built.
 *
 * The semantics are those of the prepared statements: an upsert finds the
 * row by key and updates the columns whose expression reads the source, or
 * inserts the row with the target's defaults for unmapped columns; an
 * update finds the row by its OLD key and falls back to the upsert; a
 * delete finds the row by its OLD key.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/nodeModifyTable.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "storage/lmgr.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "mailsync.h"

/*
 * MsDirectEligible tells whether the target of a direction can be written
 * directly: no rules, and no statement-level trigger nor transition table
 * but those of the link's own triggers (trigger function trigger_fn, link
 * name as argument).  With capture_only, it tells only whether every
 * transition table of the target belongs to the link's own triggers.
 */
bool
MsDirectEligible(Relation dst, const char *link, Oid trigger_fn, bool capture_only)
{
	TriggerDesc *trigdesc = dst->trigdesc;

	if (dst->rd_rules != NULL && !capture_only)
		return false;
	for (int i = 0; trigdesc && i < trigdesc->numtriggers; i++)
	{
		Trigger    *tg = &trigdesc->triggers[i];
		bool		own = tg->tgfoid == trigger_fn && tg->tgnargs == 1 &&
			strcmp(tg->tgargs[0], link) == 0;

		if (!own && ((!capture_only && !TRIGGER_FOR_ROW(tg->tgtype)) ||
					 tg->tgoldtable || tg->tgnewtable))
			return false;
	}
	return true;
}

/*
 * MsDirectPlanBuild prepares what every statement that writes a direction's
 * rows directly shares: the planned target expressions and the equality
 * function of each column of the target's key index.
 */
MsDirectPlan *
MsDirectPlanBuild(const MsDirection *d)
{
	MsDirectPlan *plan = palloc(sizeof(MsDirectPlan));
	Relation	idx = index_open(d->dst_keyidx, AccessShareLock);

	plan->planned = palloc(sizeof(Expr *) * d->ntargets);
	for (int t = 0; t < d->ntargets; t++)
		plan->planned[t] = expression_planner((Expr *) d->targets[t].assign);

	plan->nidx = IndexRelationGetNumberOfKeyAttributes(idx);
	plan->key_proc = palloc(sizeof(RegProcedure) * plan->nidx);
	for (int j = 0; j < plan->nidx; j++)
	{
		Oid			op = get_opfamily_member(idx->rd_opfamily[j],
											 idx->rd_opcintype[j],
											 idx->rd_opcintype[j],
											 BTEqualStrategyNumber);

		if (!OidIsValid(op))
			elog(ERROR, "missing equality operator for index column %d of \"%s\"",
				 j + 1, RelationGetRelationName(idx));
		plan->key_proc[j] = get_opcode(op);
	}
	index_close(idx, AccessShareLock);
	return plan;
}

/*
 * MsDirectBegin opens the target of a direction for a statement's rows,
 * with what MsDirectPlanBuild prepared.  Deleting needs no
 * index maintenance.  The caller has pushed the link's guard, user and
 * search path; MsDirectEnd fires the target's queued AFTER row triggers and
 * closes everything.
 */
void
MsDirectBegin(MsDirectState *st, const MsDirection *d, const MsDirectPlan *plan,
			  bool deleting)
{
	RangeTblEntry *rte;
	TupleDesc	desc;
	MemoryContext oldcxt;

	st->d = d;
	st->rel = table_open(d->dst_relid, RowExclusiveLock);
	st->idx = index_open(d->dst_keyidx, RowExclusiveLock);
	st->estate = CreateExecutorState();

	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = d->dst_relid;
	rte->relkind = RELKIND_RELATION;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(st->estate, list_make1(rte));
	st->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(st->rri, st->rel, 1, NULL, 0);
	/* where AFTER trigger firing looks for the target's ResultRelInfo */
	st->estate->es_opened_result_relations = list_make1(st->rri);
	if (!deleting)
		ExecOpenIndices(st->rri, false);
	st->estate->es_output_cid = GetCurrentCommandId(true);
	EvalPlanQualInit(&st->epq, st->estate, NULL, NIL, -1);
	AfterTriggerBeginQuery();
	st->econtext = GetPerTupleExprContext(st->estate);

	oldcxt = MemoryContextSwitchTo(st->estate->es_query_cxt);
	desc = RelationGetDescr(st->rel);
	st->plan = plan;
	st->target_state = palloc0(sizeof(ExprState *) * d->ntargets);	/* on first use */
	st->default_state = NULL;	/* made by the first insert */
	st->newslot = deleting ? NULL :
		ExecInitExtraTupleSlot(st->estate, desc, &TTSOpsVirtual);
	st->keyslot = ExecInitExtraTupleSlot(st->estate, desc, &TTSOpsVirtual);
	st->foundslot = table_slot_create(st->rel, &st->estate->es_tupleTable);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * MsDirectEnd fires the AFTER row triggers the statement's writes queued
 * on the target, and releases what MsDirectBegin took (the locks are kept
 * to the end of the transaction).
 */
void
MsDirectEnd(MsDirectState *st)
{
	ListCell   *lc;

	AfterTriggerEndQuery(st->estate);
	/* relations that firing the triggers opened besides the target */
	foreach(lc, st->estate->es_trig_target_relations)
		table_close(((ResultRelInfo *) lfirst(lc))->ri_RelationDesc, NoLock);
	EvalPlanQualEnd(&st->epq);
	if (st->rri->ri_NumIndices > 0)
		ExecCloseIndices(st->rri);
	ExecResetTupleTable(st->estate->es_tupleTable, false);
	FreeExecutorState(st->estate);
	index_close(st->idx, NoLock);
	table_close(st->rel, NoLock);
}

/*
 * ms_eval evaluates target t's expression over the current source row,
 * setting up its state the first time.
 */
static inline Datum
ms_eval(MsDirectState *st, int t, bool *isnull)
{
	if (st->target_state[t] == NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(st->estate->es_query_cxt);

		st->target_state[t] = ExecInitExpr(st->plan->planned[t], NULL);
		MemoryContextSwitchTo(oldcxt);
	}
	return ExecEvalExpr(st->target_state[t], st->econtext, isnull);
}

/*
 * ms_eval_targets evaluates, over the source row src, the expression of
 * each target into slot: all of them (insert) or only those that read the
 * source (update).  The slot is filled around them by the caller.
 */
static void
ms_eval_targets(MsDirectState *st, TupleTableSlot *src, TupleTableSlot *slot,
				bool all)
{
	st->econtext->ecxt_scantuple = src;
	for (int t = 0; t < st->d->ntargets; t++)
	{
		const MsTarget *tg = &st->d->targets[t];

		if (!all && !tg->reads_source)
			continue;
		slot->tts_values[tg->attno - 1] = ms_eval(st, t, &slot->tts_isnull[tg->attno - 1]);
	}
}

/*
 * ms_fill_key puts the key of the target row that the source row src maps
 * to into keyslot.
 */
static void
ms_fill_key(MsDirectState *st, TupleTableSlot *src)
{
	TupleTableSlot *slot = st->keyslot;

	ExecClearTuple(slot);
	st->econtext->ecxt_scantuple = src;
	for (int t = 0; t < st->d->ntargets; t++)
	{
		const MsTarget *tg = &st->d->targets[t];

		if (tg->is_key)
			slot->tts_values[tg->attno - 1] = ms_eval(st, t, &slot->tts_isnull[tg->attno - 1]);
	}
	ExecStoreVirtualTuple(slot);
}

/*
 * ms_find returns, in foundslot, the target row whose key is in keyslot.
 * Rows being written by other transactions are waited for, as a unique
 * index check would.  The row is not locked: the write that follows finds
 * out whether another transaction changed it meanwhile, and then the row
 * is looked up again, as EvalPlanQual would have the executor do.
 */
static bool
ms_find(MsDirectState *st)
{
	ScanKeyData skey[INDEX_MAX_KEYS];
	int			nidx = st->plan->nidx;
	SnapshotData snap;
	IndexScanDesc scan;
	bool		found;

	for (int j = 0; j < nidx; j++)
	{
		AttrNumber	attno = st->idx->rd_index->indkey.values[j];

		ScanKeyInit(&skey[j], j + 1, BTEqualStrategyNumber, st->plan->key_proc[j],
					st->keyslot->tts_values[attno - 1]);
		skey[j].sk_collation = st->idx->rd_indcollation[j];
		if (st->keyslot->tts_isnull[attno - 1])
			skey[j].sk_flags |= SK_ISNULL;
	}

	InitDirtySnapshot(snap);
	scan = index_beginscan(st->rel, st->idx, &snap, nidx, 0);
	for (;;)
	{
		TransactionId xwait;

		index_rescan(scan, skey, nidx, NULL, 0);
		found = index_getnext_slot(scan, ForwardScanDirection, st->foundslot);
		if (!found)
			break;
		xwait = TransactionIdIsValid(snap.xmin) ? snap.xmin : snap.xmax;
		if (!TransactionIdIsValid(xwait))
		{
			ExecMaterializeSlot(st->foundslot);
			break;
		}
		XactLockTableWait(xwait, st->rel, &st->foundslot->tts_tid, XLTW_FetchUpdated);
	}
	index_endscan(scan);
	return found;
}

/*
 * ms_check_result raises the error the executor raises when a row was
 * changed by the statement that changes it, and tells whether the write
 * went through (TM_Ok) or must be retried because another transaction
 * changed the row first.
 */
static bool
ms_check_result(MsDirectState *st, TM_Result res)
{
	switch (res)
	{
		case TM_Ok:
			return true;
		case TM_Updated:
		case TM_Deleted:
			return false;
		case TM_SelfModified:
			ereport(ERROR,
					(errcode(ERRCODE_TRIGGERED_DATA_CHANGE_VIOLATION),
					 errmsg("row of \"%s\" to be written by mailsync was already changed by an operation triggered by the current command",
							RelationGetRelationName(st->rel))));
			break;
		default:
			elog(ERROR, "unexpected table AM result %u on \"%s\"",
				 res, RelationGetRelationName(st->rel));
	}
	return false;
}

/*
 * ms_delete_found deletes the row in foundslot, with its BEFORE and AFTER
 * row triggers.  Returns false when another transaction changed the row
 * first: the caller looks it up again.
 */
static bool
ms_delete_found(MsDirectState *st)
{
	ResultRelInfo *rri = st->rri;
	ItemPointer tid = &st->foundslot->tts_tid;
	TM_FailureData tmfd;

	CheckCmdReplicaIdentity(st->rel, CMD_DELETE);
	if (rri->ri_TrigDesc && rri->ri_TrigDesc->trig_delete_before_row &&
		!ExecBRDeleteTriggers(st->estate, &st->epq, rri, tid, NULL, NULL))
		return true;
	if (!ms_check_result(st, table_tuple_delete(st->rel, tid,
												st->estate->es_output_cid,
												GetActiveSnapshot(), InvalidSnapshot,
												true, &tmfd, false)))
		return false;
	ExecARDeleteTriggers(st->estate, rri, tid, NULL, NULL, false);
	return true;
}

/*
 * ms_update_tuple replaces the row in foundslot by the one in newslot,
 * with the target's BEFORE and AFTER row triggers, generated columns,
 * constraints and indexes.  Returns false when another transaction changed
 * the row first: the caller looks it up again.
 */
static bool
ms_update_tuple(MsDirectState *st)
{
	ResultRelInfo *rri = st->rri;
	Relation	rel = st->rel;
	ItemPointerData tid = st->foundslot->tts_tid;
	TupleTableSlot *slot = st->newslot;
	TM_FailureData tmfd;
	LockTupleMode lockmode;
	bool		update_indexes;
	List	   *recheck = NIL;

	CheckCmdReplicaIdentity(rel, CMD_UPDATE);
	if (rri->ri_TrigDesc && rri->ri_TrigDesc->trig_update_before_row &&
		!ExecBRUpdateTriggers(st->estate, &st->epq, rri, &tid, NULL, slot, NULL))
		return true;
	if (rel->rd_att->constr && rel->rd_att->constr->has_generated_stored)
		ExecComputeStoredGenerated(rri, st->estate, slot, CMD_UPDATE);
	if (rel->rd_att->constr)
		ExecConstraints(rri, slot, st->estate);
	if (!ms_check_result(st, table_tuple_update(rel, &tid, slot,
												st->estate->es_output_cid,
												GetActiveSnapshot(), InvalidSnapshot,
												true, &tmfd, &lockmode,
												&update_indexes)))
		return false;
	if (rri->ri_NumIndices > 0 && update_indexes)
		recheck = ExecInsertIndexTuples(rri, slot, st->estate, true, false,
										NULL, NIL);
	ExecARUpdateTriggers(st->estate, rri, NULL, NULL, &tid, NULL, slot,
						 recheck, NULL, false);
	list_free(recheck);
	return true;
}

/*
 * ms_update_found rewrites the row in foundslot from the source row src:
 * the columns whose expression reads the source get new values, the others
 * keep theirs.  Returns false when the row must be looked up again.
 */
static bool
ms_update_found(MsDirectState *st, TupleTableSlot *src)
{
	TupleTableSlot *slot = st->newslot;
	int			natts = RelationGetDescr(st->rel)->natts;

	slot_getallattrs(st->foundslot);
	ExecClearTuple(slot);
	memcpy(slot->tts_values, st->foundslot->tts_values, sizeof(Datum) * natts);
	memcpy(slot->tts_isnull, st->foundslot->tts_isnull, sizeof(bool) * natts);
	ms_eval_targets(st, src, slot, false);
	ExecStoreVirtualTuple(slot);
	return ms_update_tuple(st);
}

/*
 * ms_insert_new inserts the row the source row src maps to; columns no
 * mapping writes get the target's defaults.
 */
static void
ms_insert_new(MsDirectState *st, TupleTableSlot *src)
{
	TupleTableSlot *slot = st->newslot;
	TupleDesc	desc = RelationGetDescr(st->rel);

	if (st->default_state == NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(st->estate->es_query_cxt);
		bool	   *mapped = palloc0(sizeof(bool) * desc->natts);

		for (int t = 0; t < st->d->ntargets; t++)
			mapped[st->d->targets[t].attno - 1] = true;
		st->default_state = palloc0(sizeof(ExprState *) * desc->natts);
		for (int a = 0; a < desc->natts; a++)
		{
			Node	   *def;

			if (mapped[a] || TupleDescAttr(desc, a)->attisdropped)
				continue;
			def = build_column_default(st->rel, a + 1);
			if (def != NULL)
				st->default_state[a] = ExecPrepareExpr((Expr *) def, st->estate);
		}
		MemoryContextSwitchTo(oldcxt);
	}

	ExecClearTuple(slot);
	for (int a = 0; a < desc->natts; a++)
	{
		if (st->default_state[a])
			slot->tts_values[a] = ExecEvalExpr(st->default_state[a], st->econtext,
											   &slot->tts_isnull[a]);
		else
		{
			slot->tts_values[a] = (Datum) 0;
			slot->tts_isnull[a] = true;
		}
	}
	ms_eval_targets(st, src, slot, true);
	ExecStoreVirtualTuple(slot);
	ExecSimpleRelationInsert(st->rri, st->estate, slot);
}

/*
 * ms_row_begin and ms_row_end frame the write of one row: a fresh snapshot
 * and per-row memory before, the command counter advanced after, so the
 * next row sees this one, as the prepared statements would.
 */
static void
ms_row_begin(MsDirectState *st)
{
	ResetExprContext(st->econtext);
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
ms_row_end(void)
{
	PopActiveSnapshot();
	CommandCounterIncrement();
}

/*
 * ms_upsert writes the source row src: an update of the target row with
 * its key, or an insert.
 */
static void
ms_upsert(MsDirectState *st, TupleTableSlot *src)
{
	ms_fill_key(st, src);
	while (ms_find(st))
		if (ms_update_found(st, src))
			return;
	ms_insert_new(st, src);
}

/*
 * MsDirectUpsert mirrors one inserted source row.
 */
void
MsDirectUpsert(MsDirectState *st, TupleTableSlot *src)
{
	ms_row_begin(st);
	ms_upsert(st, src);
	ms_row_end();
}

/*
 * MsDirectUpdate mirrors one updated source row: the target row of the OLD
 * key gets the new values (its key too, if it changed); without such a row,
 * the new row is upserted.
 */
void
MsDirectUpdate(MsDirectState *st, TupleTableSlot *oldsrc, TupleTableSlot *newsrc)
{
	bool		done = false;

	ms_row_begin(st);
	ms_fill_key(st, oldsrc);
	while (!done && ms_find(st))
		done = ms_update_found(st, newsrc);
	if (!done)
		ms_upsert(st, newsrc);
	ms_row_end();
}

/*
 * MsDirectDelete mirrors one deleted source row.
 */
void
MsDirectDelete(MsDirectState *st, TupleTableSlot *oldsrc)
{
	ms_row_begin(st);
	ms_fill_key(st, oldsrc);
	while (ms_find(st) && !ms_delete_found(st))
		;
	ms_row_end();
}
