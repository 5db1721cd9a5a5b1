/*-------------------------------------------------------------------------
 *
 * link.c
 *	  mailsync.link, mailsync.unlink and the link check behind
 *	  mailsync.status.
 *
 * link validates everything first (tables, ownership, conflicts with other
 * links, the mapping), then makes its changes: the key sequence shared by
 * both tables, the optional backfill, the triggers, the catalog row.  All
 * of it runs in the caller's transaction, so an error or a ROLLBACK leaves
 * nothing behind.  DDL and backfill run as the caller, who owns both
 * tables; the catalog row is written as the extension's owner, because
 * mailsync.links is not writable by table owners (its expressions run as
 * table owners on every write).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/dependency.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "nodes/primnodes.h"
#include "rewrite/rewriteHandler.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "mailsync.h"

PG_FUNCTION_INFO_V1(mailsync_link);
PG_FUNCTION_INFO_V1(mailsync_unlink);
PG_FUNCTION_INFO_V1(mailsync_check_link);

/* What link changed about a key default, so that unlink can undo it */
typedef struct MsSharedSequence
{
	Oid			seq;			/* the sequence both keys draw from */
	const char *side;			/* "legacy" or "current": default replaced */
	char	   *column;
	char	   *previous;		/* previous default expression, or NULL */
} MsSharedSequence;

/*
 * ms_text_array builds a text[] from C strings.
 */
static Datum
ms_text_array(char **items, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * n);

	for (int i = 0; i < n; i++)
		elems[i] = CStringGetTextDatum(items[i]);
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false,
										   TYPALIGN_INT));
}

/*
 * ms_spi_first_text returns column "col" of the first row of the last SPI
 * result as a C string, or NULL.
 */
static char *
ms_spi_first_text(int col)
{
	if (SPI_processed == 0)
		return NULL;
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col);
}

/*
 * MsColumnSequence returns the sequence a column draws its default from:
 * its identity sequence, or the sequence of a nextval() default.
 */
Oid
MsColumnSequence(Relation rel, AttrNumber attno, bool *is_identity,
				   bool *has_default)
{
	Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), attno - 1);
	Node	   *expr;

	*is_identity = att->attidentity != '\0';
	*has_default = att->atthasdef || *is_identity;
	if (*is_identity)
		return getIdentitySequence(RelationGetRelid(rel), attno, false);
	if (!att->atthasdef)
		return InvalidOid;

	expr = build_column_default(rel, attno);
	while (expr != NULL)
	{
		if (IsA(expr, FuncExpr))
		{
			FuncExpr   *f = (FuncExpr *) expr;

			if (f->funcid == F_NEXTVAL && list_length(f->args) == 1 &&
				IsA(linitial(f->args), Const))
			{
				Const	   *c = (Const *) linitial(f->args);

				if (!c->constisnull && c->consttype == REGCLASSOID)
					return DatumGetObjectId(c->constvalue);
				return InvalidOid;
			}
			if (f->funcformat != COERCE_EXPLICIT_CALL && list_length(f->args) == 1)
			{
				expr = (Node *) linitial(f->args);
				continue;
			}
		}
		else if (IsA(expr, RelabelType))
		{
			expr = (Node *) ((RelabelType *) expr)->arg;
			continue;
		}
		break;
	}
	return InvalidOid;
}

/*
 * ms_share_key_sequence makes both key columns of a single-column key draw
 * from one sequence, so rows inserted without ids on either side never
 * collide, and moves that sequence past every key already in either table.
 * Returns what it did, or NULL when the key has no sequence.
 */
static MsSharedSequence *
ms_share_key_sequence(MsLinkDef *def)
{
	Relation	legacy;
	Relation	current;
	AttrNumber	leg_attno;
	AttrNumber	cur_attno;
	bool		lid,
				ldef,
				cid,
				cdef;
	Oid			lseq,
				cseq;
	MsSharedSequence *s;
	Oid			target = InvalidOid;
	AttrNumber	target_attno = InvalidAttrNumber;
	Oid			argtypes[2] = {REGCLASSOID, INT2OID};
	Datum		args[2];
	char	   *sql;

	if (def->nkeys != 1)
		return NULL;
	leg_attno = get_attnum(def->legacy, def->legacy_key[0]);
	cur_attno = get_attnum(def->current, def->key[0]);
	/* the caller holds the locks; the relations are closed again before any DDL */
	legacy = table_open(def->legacy, NoLock);
	current = table_open(def->current, NoLock);
	lseq = MsColumnSequence(legacy, leg_attno, &lid, &ldef);
	cseq = MsColumnSequence(current, cur_attno, &cid, &cdef);
	table_close(legacy, NoLock);
	table_close(current, NoLock);
	if (!OidIsValid(lseq) && !OidIsValid(cseq))
		return NULL;

	s = palloc0(sizeof(MsSharedSequence));
	if (lseq == cseq)
		s->seq = lseq;
	else if (OidIsValid(lseq) && !cid && (!cdef || OidIsValid(cseq)))
	{
		s->seq = lseq;
		target = def->current;
		target_attno = cur_attno;
		s->side = "current";
	}
	else if (OidIsValid(cseq) && !lid && (!ldef || OidIsValid(lseq)))
	{
		s->seq = cseq;
		target = def->legacy;
		target_attno = leg_attno;
		s->side = "legacy";
	}
	else if (OidIsValid(lseq) && OidIsValid(cseq))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("key columns of \"%s\" and \"%s\" are both identity columns with their own sequences",
						MsRelDisplayName(def->legacy), MsRelDisplayName(def->current)),
				 errdetail("Rows inserted without ids on each side would get the same keys."),
				 errhint("Run ALTER TABLE %s ALTER COLUMN %s DROP IDENTITY, and link will make it draw from the legacy sequence; or pass share_sequence => false.",
						 MsQualifiedRelName(def->current), quote_identifier(def->key[0]))));
	else
	{
		/* one side has a sequence, the other a default of its own */
		ereport(NOTICE,
				(errmsg("key column \"%s\" of \"%s\" keeps its own default; only \"%s\" draws from sequence \"%s\"",
						OidIsValid(lseq) ? def->key[0] : def->legacy_key[0],
						MsRelDisplayName(OidIsValid(lseq) ? def->current : def->legacy),
						MsRelDisplayName(OidIsValid(lseq) ? def->legacy : def->current),
						MsRelDisplayName(OidIsValid(lseq) ? lseq : cseq))));
		return NULL;
	}

	if (OidIsValid(target))
	{
		char	   *col = get_attname(target, target_attno, false);

		s->column = col;
		args[0] = ObjectIdGetDatum(target);
		args[1] = Int16GetDatum(target_attno);
		MsSpiExecWithArgs("SELECT pg_catalog.pg_get_expr(adbin, adrelid) FROM pg_catalog.pg_attrdef "
						  "WHERE adrelid = $1 AND adnum = $2",
						  2, argtypes, args, NULL, SPI_OK_SELECT);
		s->previous = ms_spi_first_text(1);
		MsSpiExec(psprintf("ALTER TABLE %s ALTER COLUMN %s SET DEFAULT pg_catalog.nextval(%s::pg_catalog.regclass)",
						   MsQualifiedRelName(target),
						   quote_identifier(col),
						   quote_literal_cstr(MsQualifiedRelName(s->seq))),
				  SPI_OK_UTILITY);
		ereport(NOTICE,
				(errmsg("key column \"%s\" of \"%s\" now draws from sequence \"%s\", shared with \"%s\"",
						col, MsRelDisplayName(target),
						MsRelDisplayName(s->seq),
						MsRelDisplayName(target == def->current ? def->legacy : def->current)),
				 errhint("Roles that insert into \"%s\" without giving ids need USAGE on that sequence.",
						 MsRelDisplayName(target))));
	}

	/* move the sequence past every key already in either table */
	sql = psprintf("SELECT pg_catalog.setval(%s::pg_catalog.regclass, m) FROM "
				   "(SELECT pg_catalog.max(k) AS m FROM ("
				   "SELECT pg_catalog.max(%s)::pg_catalog.int8 FROM ONLY %s UNION ALL "
				   "SELECT pg_catalog.max(%s)::pg_catalog.int8 FROM ONLY %s) AS x(k)) AS y, "
				   "(SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS pos FROM %s) AS z "
				   "WHERE m > pos",
				   quote_literal_cstr(MsQualifiedRelName(s->seq)),
				   quote_identifier(def->legacy_key[0]), MsQualifiedRelName(def->legacy),
				   quote_identifier(def->key[0]), MsQualifiedRelName(def->current),
				   MsQualifiedRelName(s->seq));
	MsSpiExec(sql, SPI_OK_SELECT);
	return s;
}

/*
 * ms_link_columns returns the non-key columns a link writes (or, with
 * read, those it reads), as "relid/column" strings.  Key columns are
 * shared by design.
 */
static List *
ms_link_columns(const MsLinkDef *def, bool read)
{
	List	   *cols = NIL;

	for (int side = MS_UP; side <= MS_DOWN; side++)
	{
		const MsDirection *d = &def->dir[side];
		Oid			relid = read ? d->src_relid : d->dst_relid;
		bool		on_legacy = (side == MS_UP) == read;

		if (!d->enabled)
			continue;
		if (def->shape && def->shape->kind == MS_SHAPE_JOIN)
		{
			const MsShape *sh = def->shape;

			for (int i = 0; i < sh->nren; i++)
				cols = lappend(cols, psprintf("%u/%s", relid,
											  on_legacy ? sh->ren_leg[i] : sh->ren_cur[i]));
			for (int i = 0; i < sh->njoin; i++)
				cols = lappend(cols, on_legacy ?
							   psprintf("%u/%s", sh->join_relid, sh->join_cols[i]) :
							   psprintf("%u/%s", relid, sh->join_targets[i]));
		}
		else if (def->shape)
		{
			const MsShape *sh = def->shape;

			cols = lappend(cols, psprintf("%u/%s", relid,
										  on_legacy ? sh->legacy_column : sh->column));
			if (on_legacy && sh->value_column)
				cols = lappend(cols, psprintf("%u/%s", relid, sh->value_column));
		}
		else if (read)
		{
			int			x = -1;

			while ((x = bms_next_member(d->src_attrs, x)) >= 0)
				cols = lappend(cols, psprintf("%u/%s", relid, get_attname(relid, x, false)));
		}
		else
			for (int t = 0; t < d->ntargets; t++)
				if (!d->targets[t].is_key)
					cols = lappend(cols, psprintf("%u/%s", relid, d->targets[t].column));
	}
	return cols;
}

static bool
ms_has_column(List *cols, const char *col)
{
	ListCell   *lc;

	foreach(lc, cols)
		if (strcmp((char *) lfirst(lc), col) == 0)
			return true;
	return false;
}

/*
 * ms_check_shared_columns refuses a link that would write a column that
 * another link writes too, unless both links also read it: then each
 * passes the other's writes on (a chain or a star of links), and the
 * value stays one.  Two links that only write one column would overwrite
 * each other with values from different tables.
 */
static void
ms_check_shared_columns(const MsLinkDef *def)
{
	Oid			argtypes[2] = {REGCLASSOID, REGCLASSOID};
	Datum		args[2] = {ObjectIdGetDatum(def->legacy), ObjectIdGetDatum(def->current)};
	List	   *mine = ms_link_columns(def, false);
	List	   *mine_read = ms_link_columns(def, true);
	List	   *others = NIL;
	ListCell   *lc;
	MemoryContext cxt = CurrentMemoryContext;

	MsSpiExecWithArgs("SELECT name FROM mailsync.links WHERE legacy IN ($1, $2) OR current IN ($1, $2) ORDER BY name",
					  2, argtypes, args, NULL, SPI_OK_SELECT);
	MemoryContextSwitchTo(cxt);
	for (uint64 r = 0; r < SPI_processed; r++)
		others = lappend(others, SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1));
	foreach(lc, others)
	{
		char	   *other = (char *) lfirst(lc);
		MsLinkDef  *odef = MsLoadLink(other, false);
		List	   *other_read;
		ListCell   *a;

		MemoryContextSwitchTo(cxt);
		other_read = ms_link_columns(odef, true);
		foreach(a, ms_link_columns(odef, false))
		{
			char	   *entry = (char *) lfirst(a);
			char	   *col = strchr(entry, '/') + 1;

			if (!ms_has_column(mine, entry) ||
				(ms_has_column(mine_read, entry) && ms_has_column(other_read, entry)))
				continue;
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("column \"%s\" of table \"%s\" is written by link \"%s\" already",
							col, MsRelDisplayName((Oid) strtoul(entry, NULL, 10)), other),
					 errdetail("Two links that write one column without syncing it both ways would overwrite each other's values."),
					 errhint("Leave \"%s\" out of one of the mappings, or map it both ways in both links.", col)));
		}
	}
}

/*
 * ms_check_conflicts refuses a link whose name is taken, whose tables are
 * already linked to each other, or whose current table already takes its
 * rows from another link on the same key.
 */
static void
ms_check_conflicts(const char *name, Oid legacy, Oid current, MsLinkDef *def)
{
	Oid			argtypes[3] = {TEXTOID, REGCLASSOID, REGCLASSOID};
	Datum		args[3];

	args[0] = CStringGetTextDatum(name);
	args[1] = ObjectIdGetDatum(legacy);
	args[2] = ObjectIdGetDatum(current);

	MsSpiExecWithArgs("SELECT name FROM mailsync.links WHERE name = $1",
					  1, argtypes, args, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("link \"%s\" already exists", name),
				 errhint("Choose another name, or run mailsync.unlink('%s') first.", name)));

	MsSpiExecWithArgs("SELECT name FROM mailsync.links "
					  "WHERE (legacy = $2 AND current = $3) OR (legacy = $3 AND current = $2)",
					  3, argtypes, args, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
	{
		char	   *other = ms_spi_first_text(1);

		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("tables \"%s\" and \"%s\" are already linked by link \"%s\"",
						MsRelDisplayName(legacy), MsRelDisplayName(current), other),
				 errhint("Run mailsync.unlink('%s') first to redefine the link.", other)));
	}

	if (def == NULL)
		return;
	args[1] = ms_text_array(def->key, def->nkeys);
	argtypes[1] = TEXTARRAYOID;
	MsSpiExecWithArgs("SELECT name FROM mailsync.links "
					  "WHERE current = $3 AND key @> $2 AND key <@ $2",
					  3, argtypes, args, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
	{
		char	   *other = ms_spi_first_text(1);

		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("table \"%s\" is already the current side of link \"%s\" on the same key",
						MsRelDisplayName(current), other),
				 errhint("A current table takes its rows from one legacy table per key; unlink \"%s\" or link on another key.",
						 other)));
	}
}

/*
 * ms_open_linked_table opens and checks one table of a link.
 */
static Relation
ms_open_linked_table(Oid relid, const char *role, LOCKMODE lockmode)
{
	Relation	rel = try_table_open(relid, lockmode);

	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("%s table with OID %u does not exist", role, relid)));
	MsCheckLinkableTable(rel, role);
	MsCheckTableOwner(relid);
	return rel;
}

/*
 * ms_backfill copies the rows that exist now, in the caller's transaction:
 * for 'both' and 'up' every legacy row is upserted into current (legacy
 * wins), then for 'both' the rows only current has are inserted into
 * legacy; for 'down', current is upserted into legacy.
 */
static void
ms_backfill(MsLinkDef *def)
{
	/* a shape link: the source side made whole on the other */
	if (def->shape)
	{
		int			side = def->dir[MS_UP].enabled ? MS_UP : MS_DOWN;
		int64		written = MsShapeCopy(def, side, false);

		ereport(NOTICE,
				(errmsg("link \"%s\": wrote " INT64_FORMAT " rows of %s to match %s",
						def->name, written,
						MsRelDisplayName(side == MS_UP ? def->current : def->legacy),
						MsRelDisplayName(side == MS_UP ? def->legacy : def->current))));
		return;
	}
	for (int side = MS_UP; side <= MS_DOWN; side++)
	{
		MsDirection *d = &def->dir[side];
		bool		first = side == MS_UP || !def->dir[MS_UP].enabled;

		if (!d->enabled)
			continue;
		MsSpiExec(MsSqlUpsert(d, MsTableSourceClause(d), first), SPI_OK_INSERT);
		ereport(NOTICE,
				(errmsg_plural("link \"%s\": copied " UINT64_FORMAT " row from %s to %s",
							   "link \"%s\": copied " UINT64_FORMAT " rows from %s to %s",
							   SPI_processed,
							   def->name, SPI_processed,
							   MsRelDisplayName(d->src_relid),
							   MsRelDisplayName(d->dst_relid))));
	}
}

/*
 * ms_link_error_callback names the link an error is about: a stored
 * definition that no longer compiles, a copy that fails.
 */
static void
ms_link_error_callback(void *arg)
{
	errcontext("mailsync link \"%s\"", (const char *) arg);
}

/*
 * MsPushLinkContext makes errors raised until MsPopLinkContext name the
 * link; an error unwinds the context stack by itself.
 */
void
MsPushLinkContext(ErrorContextCallback *cb, const char *link)
{
	cb->callback = ms_link_error_callback;
	cb->arg = (void *) link;
	cb->previous = error_context_stack;
	error_context_stack = cb;
}

void
MsPopLinkContext(ErrorContextCallback *cb)
{
	error_context_stack = cb->previous;
}

/*
 * ms_create_triggers puts the sync triggers on every table the link syncs
 * from: one per event, INSERT, UPDATE and DELETE with transition tables.
 * A replica link also fires where logical replication applies rows: the
 * apply worker runs row triggers only, so it gets a row trigger for
 * INSERT, UPDATE and DELETE that fires only in replica sessions, and its
 * TRUNCATE trigger fires always.
 */
static void
ms_create_triggers(MsLinkDef *def)
{
	static const char *const events[MS_NUM_EVENTS] = {
		"INSERT ON %s REFERENCING NEW TABLE AS " MS_NEW_TABLE,
		"UPDATE ON %s REFERENCING OLD TABLE AS " MS_OLD_TABLE " NEW TABLE AS " MS_NEW_TABLE,
		"DELETE ON %s REFERENCING OLD TABLE AS " MS_OLD_TABLE,
		"TRUNCATE ON %s"
	};
	static const char *const row_events[MS_EVENT_TRUNCATE] = {
		"INSERT ON %s", "UPDATE ON %s", "DELETE ON %s"
	};
	char	   *arg = quote_literal_cstr(def->name);

	/* a join link hears of updates of its joined table too */
	if (def->shape && def->shape->kind == MS_SHAPE_JOIN && def->dir[MS_UP].enabled)
		MsSpiExec(psprintf("CREATE TRIGGER %s AFTER %s FOR EACH STATEMENT "
						   "EXECUTE FUNCTION mailsync.sync_trigger(%s)",
						   quote_identifier(MsTriggerName(def->name, true, MS_EVENT_UPDATE, false)),
						   psprintf(events[MS_EVENT_UPDATE], MsQualifiedRelName(def->shape->join_relid)),
						   arg),
				  SPI_OK_UTILITY);

	for (int side = MS_UP; side <= MS_DOWN; side++)
	{
		char	   *rel;

		if (!def->dir[side].enabled)
			continue;
		rel = MsQualifiedRelName(def->dir[side].src_relid);
		for (int ev = 0; ev < MS_NUM_EVENTS; ev++)
			MsSpiExec(psprintf("CREATE TRIGGER %s AFTER %s FOR EACH STATEMENT "
							   "EXECUTE FUNCTION mailsync.sync_trigger(%s)",
							   quote_identifier(MsTriggerName(def->name, def->shape != NULL, (MsEvent) ev, false)),
							   psprintf(events[ev], rel), arg),
					  SPI_OK_UTILITY);
		if (!def->replica)
			continue;
		for (int ev = 0; ev < MS_EVENT_TRUNCATE; ev++)
		{
			const char *tg = quote_identifier(MsTriggerName(def->name, def->shape != NULL, (MsEvent) ev, true));

			MsSpiExec(psprintf("CREATE TRIGGER %s AFTER %s FOR EACH ROW "
							   "EXECUTE FUNCTION mailsync.sync_trigger(%s)",
							   tg, psprintf(row_events[ev], rel), arg),
					  SPI_OK_UTILITY);
			MsSpiExec(psprintf("ALTER TABLE %s ENABLE REPLICA TRIGGER %s", rel, tg),
					  SPI_OK_UTILITY);
		}
		MsSpiExec(psprintf("ALTER TABLE %s ENABLE ALWAYS TRIGGER %s", rel,
						   quote_identifier(MsTriggerName(def->name, def->shape != NULL, MS_EVENT_TRUNCATE, false))),
				  SPI_OK_UTILITY);
	}
}

/*
 * ms_insert_catalog_row records the link, as the extension's owner.
 */
static void
ms_insert_catalog_row(MsLinkDef *def, MsSharedSequence *shared)
{
	Oid			argtypes[11] = {TEXTOID, REGCLASSOID, REGCLASSOID, TEXTOID,
		JSONBOID, TEXTARRAYOID, TEXTARRAYOID, REGCLASSOID, JSONBOID, NAMEOID, BOOLOID};
	Datum		args[11];
	char		nulls[11];

	memset(nulls, ' ', sizeof(nulls));
	args[0] = CStringGetTextDatum(def->name);
	args[1] = ObjectIdGetDatum(def->legacy);
	args[2] = ObjectIdGetDatum(def->current);
	args[3] = CStringGetTextDatum(def->direction);
	args[4] = JsonbPGetDatum(def->columns);
	args[5] = ms_text_array(def->key, def->nkeys);
	args[6] = ms_text_array(def->legacy_key, def->nkeys);
	args[9] = DirectFunctionCall1(namein,
								  CStringGetDatum(GetUserNameFromId(GetUserId(), false)));
	args[10] = BoolGetDatum(def->replica);
	nulls[7] = nulls[8] = 'n';
	if (shared != NULL)
	{
		args[7] = ObjectIdGetDatum(shared->seq);
		nulls[7] = ' ';
		if (shared->side != NULL)
		{
			StringInfoData buf;

			initStringInfo(&buf);
			appendStringInfoString(&buf, "{\"side\": ");
			escape_json(&buf, shared->side);
			appendStringInfoString(&buf, ", \"column\": ");
			escape_json(&buf, shared->column);
			appendStringInfoString(&buf, ", \"previous\": ");
			if (shared->previous)
				escape_json(&buf, shared->previous);
			else
				appendStringInfoString(&buf, "null");
			appendStringInfoChar(&buf, '}');
			args[8] = DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
			nulls[8] = ' ';
		}
	}

	MsCatalogExec("INSERT INTO mailsync.links (name, legacy, current, direction, columns, "
				  "key, legacy_key, shared_sequence, replaced_default, created_by, replica) "
				  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
				  11, argtypes, args, nulls, SPI_OK_INSERT);
}

/*
 * mailsync_link implements mailsync.link(name, legacy, current, columns,
 * key, direction, backfill, share_sequence, replica).
 */
Datum
mailsync_link(PG_FUNCTION_ARGS)
{
	const char *fn = "mailsync.link";
	char	   *name;
	char	   *direction;
	Oid			legacy_oid;
	Oid			current_oid;
	Jsonb	   *columns;
	List	   *key = NIL;
	bool		backfill;
	bool		share_sequence;
	bool		replica;
	Relation	legacy;
	Relation	current;
	MsLinkDef  *def;
	MsSharedSequence *shared = NULL;

	MsCheckNotNullArg(fcinfo, 0, "name", fn);
	MsCheckNotNullArg(fcinfo, 1, "legacy", fn);
	MsCheckNotNullArg(fcinfo, 2, "current", fn);
	MsCheckNotNullArg(fcinfo, 3, "columns", fn);
	MsCheckNotNullArg(fcinfo, 5, "direction", fn);
	MsCheckNotNullArg(fcinfo, 6, "backfill", fn);
	MsCheckNotNullArg(fcinfo, 7, "share_sequence", fn);
	MsCheckNotNullArg(fcinfo, 8, "replica", fn);

	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	legacy_oid = PG_GETARG_OID(1);
	current_oid = PG_GETARG_OID(2);
	columns = PG_GETARG_JSONB_P(3);
	direction = text_to_cstring(PG_GETARG_TEXT_PP(5));
	backfill = PG_GETARG_BOOL(6);
	share_sequence = PG_GETARG_BOOL(7);
	replica = PG_GETARG_BOOL(8);

	MsCheckLinkName(name);
	MsCheckDirection(direction);
	if (legacy_oid == current_oid)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("legacy and current are the same table \"%s\"",
						MsRelDisplayName(legacy_oid)),
				 errhint("A link pairs two different tables.")));
	if (!PG_ARGISNULL(4))
		key = MsTextArrayToList(PG_GETARG_ARRAYTYPE_P(4), "key");

	/* one link or unlink at a time; then the tables, as CREATE TRIGGER locks them */
	LockRelationOid(MsLinksRelid(false), ShareRowExclusiveLock);
	legacy = ms_open_linked_table(legacy_oid, "legacy", ShareRowExclusiveLock);
	current = ms_open_linked_table(current_oid, "current", ShareRowExclusiveLock);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MsPushPinnedPath();
	ms_check_conflicts(name, legacy_oid, current_oid, NULL);
	MsPopPinnedPath();

	/* the user's expressions resolve with the caller's search path ... */
	def = MsCompileLink(name, legacy, current, columns, key, direction);

	/* ... and their normalised text must compile as every trigger will */
	key = NIL;
	for (int i = 0; i < def->nkeys; i++)
		key = lappend(key, def->key[i]);
	MsPushPinnedPath();
	def = MsCompileLink(name, legacy, current, def->columns, key, direction);
	/* keep the locks, but DDL below needs the relations closed */
	table_close(legacy, NoLock);
	table_close(current, NoLock);
	ms_check_conflicts(name, legacy_oid, current_oid, def);
	ms_check_shared_columns(def);
	if (def->shape && def->shape->kind == MS_SHAPE_JOIN)
		MsCheckTableOwner(def->shape->join_relid);

	def->replica = replica;
	if (share_sequence && (def->shape == NULL || def->shape->kind == MS_SHAPE_JOIN))
		shared = ms_share_key_sequence(def);
	if (backfill)
	{
		ErrorContextCallback errcb;

		MsPushLinkContext(&errcb, name);
		ms_backfill(def);
		MsPopLinkContext(&errcb);
	}
	ms_create_triggers(def);
	ms_insert_catalog_row(def, shared);

	MsPopPinnedPath();
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * ms_restore_default puts back the key default that link replaced, if the
 * column still draws from the shared sequence.
 */
static void
ms_restore_default(Oid legacy, Oid current, Oid seq, Jsonb *replaced)
{
	JsonbValue *side = getKeyJsonValueFromContainer(&replaced->root, "side", 4, NULL);
	JsonbValue *column = getKeyJsonValueFromContainer(&replaced->root, "column", 6, NULL);
	JsonbValue *previous = getKeyJsonValueFromContainer(&replaced->root, "previous", 8, NULL);
	Oid			relid;
	char	   *col;
	AttrNumber	attno;
	Relation	rel;
	bool		is_identity = false;
	bool		has_default = false;
	Oid			now_seq;

	if (side == NULL || column == NULL || side->type != jbvString ||
		column->type != jbvString)
		return;
	relid = strncmp(side->val.string.val, "legacy", side->val.string.len) == 0 ?
		legacy : current;
	col = pnstrdup(column->val.string.val, column->val.string.len);
	rel = try_table_open(relid, AccessExclusiveLock);
	if (rel == NULL)
		return;
	attno = get_attnum(relid, col);
	now_seq = attno > 0 ? MsColumnSequence(rel, attno, &is_identity, &has_default) :
		InvalidOid;
	table_close(rel, NoLock);
	if (now_seq != seq || is_identity)
		return;

	if (previous != NULL && previous->type == jbvString)
		MsSpiExec(psprintf("ALTER TABLE %s ALTER COLUMN %s SET DEFAULT %s",
						   MsQualifiedRelName(relid), quote_identifier(col),
						   pnstrdup(previous->val.string.val, previous->val.string.len)),
				  SPI_OK_UTILITY);
	else
		MsSpiExec(psprintf("ALTER TABLE %s ALTER COLUMN %s DROP DEFAULT",
						   MsQualifiedRelName(relid), quote_identifier(col)),
				  SPI_OK_UTILITY);
	ereport(NOTICE,
			(errmsg("key column \"%s\" of \"%s\" no longer draws from sequence \"%s\"; its default is what it was before the link",
					col, MsRelDisplayName(relid), MsRelDisplayName(seq))));
}

/*
 * mailsync_unlink implements mailsync.unlink(name): it drops the link's
 * triggers, undoes its change to a key default and forgets the link.  The
 * rows of both tables stay as they are.
 */
Datum
mailsync_unlink(PG_FUNCTION_ARGS)
{
	char	   *name;
	Oid			argtype = TEXTOID;
	Datum		arg;
	bool		isnull;
	Oid			rels[2];
	Oid			seq;
	Jsonb	   *replaced = NULL;
	char	   *direction;
	bool		replica;
	bool		shape;
	Oid			joined;

	MsCheckNotNullArg(fcinfo, 0, "name", "mailsync.unlink");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	arg = CStringGetTextDatum(name);

	LockRelationOid(MsLinksRelid(false), ShareRowExclusiveLock);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MsPushPinnedPath();

	MsSpiExecWithArgs("SELECT legacy::pg_catalog.oid, current::pg_catalog.oid, "
					  "shared_sequence::pg_catalog.oid, replaced_default, direction, replica, "
					  "EXISTS (SELECT FROM pg_catalog.jsonb_each(columns) AS m "
					  "WHERE pg_catalog.jsonb_typeof(m.value) = 'object' AND (m.value ? 'list' OR m.value ? 'document' OR m.value ? 'join')), "
					  "(SELECT pg_catalog.to_regclass(m.value OPERATOR(pg_catalog.->>) 'join')::pg_catalog.oid "
					  "FROM pg_catalog.jsonb_each(columns) AS m WHERE pg_catalog.jsonb_typeof(m.value) = 'object' "
					  "AND m.value ? 'join' LIMIT 1) "
					  "FROM mailsync.links WHERE name = $1",
					  1, &argtype, &arg, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("link \"%s\" does not exist", name),
				 errhint("SELECT name FROM mailsync.links lists the links.")));
	rels[0] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));
	rels[1] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 2, &isnull));
	seq = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 3, &isnull));
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 4, &isnull);

		if (!isnull)
			replaced = DatumGetJsonbPCopy(d);
	}
	direction = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5);
	replica = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 6, &isnull));
	shape = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 7, &isnull));
	joined = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
											SPI_tuptable->tupdesc, 8, &isnull));
	if (isnull)
		joined = InvalidOid;

	for (int i = 0; i < 2; i++)
		if (get_rel_name(rels[i]) != NULL)
			MsCheckTableOwner(rels[i]);

	/* the triggers are on the tables the link syncs from */
	for (int i = 0; i < 2; i++)
	{
		if (get_rel_name(rels[i]) == NULL ||
			strcmp(direction, i == MS_LEGACY_SIDE ? "down" : "up") == 0)
			continue;
		for (int ev = 0; ev < MS_NUM_EVENTS; ev++)
		{
			MsEvent		event = (MsEvent) ev;

			MsSpiExec(psprintf("DROP TRIGGER IF EXISTS %s ON %s",
							   quote_identifier(MsTriggerName(name, shape, event, false)),
							   MsQualifiedRelName(rels[i])),
					  SPI_OK_UTILITY);
			if (replica && event != MS_EVENT_TRUNCATE)
				MsSpiExec(psprintf("DROP TRIGGER IF EXISTS %s ON %s",
								   quote_identifier(MsTriggerName(name, shape, event, true)),
								   MsQualifiedRelName(rels[i])),
						  SPI_OK_UTILITY);
		}
	}
	if (OidIsValid(joined))
		MsSpiExec(psprintf("DROP TRIGGER IF EXISTS %s ON %s",
						   quote_identifier(MsTriggerName(name, true, MS_EVENT_UPDATE, false)),
						   MsQualifiedRelName(joined)),
				  SPI_OK_UTILITY);
	if (replaced != NULL)
		ms_restore_default(rels[0], rels[1], seq, replaced);

	MsCatalogExec("DELETE FROM mailsync.links WHERE name = $1",
				  1, &argtype, &arg, NULL, SPI_OK_DELETE);
	MsCatalogExec("DELETE FROM mailsync.backfills WHERE link = $1",
				  1, &argtype, &arg, NULL, SPI_OK_DELETE);
	MsCatalogExec("DELETE FROM mailsync.verifications WHERE link = $1",
				  1, &argtype, &arg, NULL, SPI_OK_DELETE);

	MsPopPinnedPath();
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * MsLoadLink reads a link from mailsync.links and compiles it.  The caller
 * has connected to SPI and pushed the pinned search path; the tables stay
 * locked (AccessShareLock) to the end of the transaction.  The result is
 * allocated in the memory context current at the call.
 */
MsLinkDef *
MsLoadLink(const char *name, bool from_trigger)
{
	MemoryContext cxt = CurrentMemoryContext;
	Oid			argtype = TEXTOID;
	Datum		arg = CStringGetTextDatum(name);
	bool		isnull;
	Oid			rels[2];
	Relation	legacy;
	Relation	current;
	Jsonb	   *columns;
	List	   *key;
	char	   *direction;
	Oid			shared_seq;
	bool		replica;
	MsLinkDef  *def;
	ErrorContextCallback errcb;

	MsSpiExecWithArgs("SELECT legacy::pg_catalog.oid, current::pg_catalog.oid, columns, key, direction, "
					  "shared_sequence::pg_catalog.oid, replica "
					  "FROM mailsync.links WHERE name = $1",
					  1, &argtype, &arg, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("link \"%s\" does not exist", name),
				 from_trigger ?
				 errhint("A trigger of a removed link was left behind; drop it, or link the tables again.") :
				 errhint("SELECT name FROM mailsync.links lists the links.")));

	MemoryContextSwitchTo(cxt);
	rels[0] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));
	rels[1] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 2, &isnull));
	columns = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 3, &isnull));
	{
		ArrayType  *keyarr = DatumGetArrayTypePCopy(SPI_getbinval(SPI_tuptable->vals[0],
																  SPI_tuptable->tupdesc,
																  4, &isnull));

		/* a document link without a key stores none */
		key = ArrayGetNItems(ARR_NDIM(keyarr), ARR_DIMS(keyarr)) == 0 ? NIL :
			MsTextArrayToList(keyarr, "key");
	}
	direction = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 5, &isnull));
	shared_seq = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 6, &isnull));
	if (isnull)
		shared_seq = InvalidOid;
	replica = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 7, &isnull));

	legacy = try_table_open(rels[0], AccessShareLock);
	current = try_table_open(rels[1], AccessShareLock);
	if (legacy == NULL || current == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("link \"%s\" is broken: its %s table (OID %u) no longer exists",
						name, legacy == NULL ? "legacy" : "current",
						legacy == NULL ? rels[0] : rels[1]),
				 errhint("Run mailsync.unlink('%s').", name)));
	/* a trigger names the link in its own context */
	if (!from_trigger)
		MsPushLinkContext(&errcb, name);
	def = MsCompileLink(name, legacy, current, columns, key, direction);
	if (!from_trigger)
		MsPopLinkContext(&errcb);
	def->shared_seq = shared_seq;
	def->replica = replica;
	table_close(legacy, NoLock);
	table_close(current, NoLock);
	return def;
}

/*
 * mailsync_check_link implements mailsync._check_link(name): it compiles
 * the stored definition as the triggers would, and raises the first
 * problem it finds.  mailsync.status() reports that error as the link's
 * problem.
 */
Datum
mailsync_check_link(PG_FUNCTION_ARGS)
{
	MsCheckNotNullArg(fcinfo, 0, "name", "mailsync._check_link");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MsPushPinnedPath();
	(void) MsLoadLink(text_to_cstring(PG_GETARG_TEXT_PP(0)), false);
	MsPopPinnedPath();
	SPI_finish();
	PG_RETURN_VOID();
}
