/*-------------------------------------------------------------------------
 *
 * sqlgen.c
 *	  Build the SQL statements that carry a write from one table of a link
 *	  to the other.
 *
 Two forms of each statement:
 *
 *	  - over a set of source rows: the rows come from a FROM item aliased
 *		like the source side ("legacy" or "current"), so the mapping
 *		expressions are used as stored; the FROM item is a transition table
 *		(the set-based path) or the whole source table (backfill);
 *	  - for one row: the source columns the mapping reads are parameters
 *		$1..$n, put in place of the column references of the expressions'
 *		parsed trees, so that the statement is a plain INSERT ... VALUES or
 *		UPDATE ... SET whose plan costs least to start for every row.
 *
 * Identifiers go through quote_identifier and quote_qualified_identifier;
 * operators and types outside pg_catalog are named with their schema; the
 * statements are parsed under the pinned search path.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_operator.h"
#include "lib/stringinfo.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "utils/syscache.h"

#include "mailsync.h"

/*
 * MsTriggerName returns the name of a link's trigger for one event.
 */
char *
MsTriggerName(const char *link, MsEvent event)
{
	static const char *const suffix[] = {"insert", "update", "delete", "truncate"};

	return psprintf("mailsync_%s_%s", link, suffix[event]);
}

/*
 * ms_operator_sql returns OPERATOR(schema.name) for an operator OID.
 */
static char *
ms_operator_sql(Oid opno)
{
	HeapTuple	tup = SearchSysCache1(OPEROID, ObjectIdGetDatum(opno));
	Form_pg_operator op;
	char	   *result;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for operator %u", opno);
	op = (Form_pg_operator) GETSTRUCT(tup);
	result = psprintf("OPERATOR(%s.%s)",
					  quote_identifier(get_namespace_name(op->oprnamespace)),
					  NameStr(op->oprname));
	ReleaseSysCache(tup);
	return result;
}

/*
 * ms_append_key_match appends the condition that finds the target row of a
 * source row: "ms_target.k1 = CAST($n AS t1) AND ..." with the source key
 * passed as parameters from first_param on, or, when first_param is 0,
 * "ms_target.k1 = CAST(legacy.k1 AS t1) AND ..." against the source row of
 * the FROM item.
 */
static void
ms_append_key_match(StringInfo buf, const MsDirection *d, int first_param)
{
	for (int k = 0; k < d->nkeys; k++)
	{
		Oid			keytype = get_atttype(d->dst_relid, d->dst_key[k]);

		appendStringInfo(buf, "%s%s.%s %s CAST(",
						 k ? " AND " : "",
						 MS_TARGET_ALIAS,
						 quote_identifier(get_attname(d->dst_relid, d->dst_key[k], false)),
						 ms_operator_sql(d->key_eqop[k]));
		if (first_param > 0)
			appendStringInfo(buf, "$%d", first_param + k);
		else
			appendStringInfo(buf, "%s.%s", d->src_alias,
							 quote_identifier(get_attname(d->src_relid, d->src_key[k], false)));
		appendStringInfo(buf, " AS %s)", format_type_be_qualified(keytype));
	}
}

/*
 * MsTableSourceClause returns the FROM item that presents every row of the
 * source table under the source alias.
 */
char *
MsTableSourceClause(const MsDirection *d)
{
	return psprintf("ONLY %s AS %s", MsQualifiedRelName(d->src_relid),
					d->src_alias);
}

/*
 * MsTransitionSourceClause returns the FROM item that presents the rows of
 * a transition table (an ephemeral named relation) under the source alias.
 */
char *
MsTransitionSourceClause(const MsDirection *d, const char *enr)
{
	return psprintf("%s AS %s", quote_identifier(enr), d->src_alias);
}

/*
 * ms_var_to_param replaces each reference to a source column by parameter
 * $n, n being the column's place among the columns the direction reads.
 * A column of a collation other than its type's keeps it.
 */
static Node *
ms_var_to_param(Node *node, void *context)
{
	Bitmapset  *attrs = (Bitmapset *) context;

	if (node == NULL)
		return NULL;
	if (IsA(node, Var) && ((Var *) node)->varlevelsup == 0)
	{
		Var		   *var = (Var *) node;
		Param	   *param = makeNode(Param);

		param->paramkind = PARAM_EXTERN;
		param->paramid = bms_member_index(attrs, var->varattno) + 1;
		param->paramtype = var->vartype;
		param->paramtypmod = var->vartypmod;
		param->paramcollid = var->varcollid;
		param->location = -1;
		if (OidIsValid(var->varcollid) &&
			var->varcollid != get_typcollation(var->vartype))
		{
			CollateExpr *collate = makeNode(CollateExpr);

			collate->arg = (Expr *) param;
			collate->collOid = var->varcollid;
			collate->location = -1;
			return (Node *) collate;
		}
		return (Node *) param;
	}
	return expression_tree_mutator(node, ms_var_to_param, context);
}

/*
 * ms_row_expr returns a target's expression for one row: its SQL with
 * parameters in place of the source columns.  Deparsed under the pinned
 * search path, like the stored text.
 */
static char *
ms_row_expr(const MsDirection *d, const MsTarget *t)
{
	Node	   *node = ms_var_to_param(copyObject(t->node), d->src_attrs);
	char	   *sql;

	MsPushPinnedPath();
	sql = deparse_expression(node, NIL, false, false);
	MsPopPinnedPath();
	return sql;
}

/*
 * ms_append_insert_head appends "INSERT INTO target AS ms_target (cols) ".
 */
static void
ms_append_insert_head(StringInfo buf, const MsDirection *d)
{
	appendStringInfo(buf, "INSERT INTO %s AS %s (",
					 MsQualifiedRelName(d->dst_relid), MS_TARGET_ALIAS);
	for (int t = 0; t < d->ntargets; t++)
		appendStringInfo(buf, "%s%s", t ? ", " : "",
						 quote_identifier(d->targets[t].column));
	appendStringInfoString(buf, ") ");
}

/*
 * ms_append_on_conflict appends the ON CONFLICT clause of an upsert: rows
 * whose key exists are updated (update_existing) or left alone.  Columns
 * whose expression reads nothing of the source, such as a generated uuid,
 * are set on insert only.
 */
static void
ms_append_on_conflict(StringInfo buf, const MsDirection *d, bool update_existing)
{
	int			nset = 0;

	appendStringInfoString(buf, " ON CONFLICT (");
	for (int k = 0; k < d->nkeys; k++)
		appendStringInfo(buf, "%s%s", k ? ", " : "",
						 quote_identifier(get_attname(d->dst_relid, d->dst_key[k], false)));
	appendStringInfoString(buf, ") DO ");
	for (int t = 0; update_existing && t < d->ntargets; t++)
	{
		const MsTarget *tg = &d->targets[t];

		if (tg->is_key || !tg->reads_source)
			continue;
		appendStringInfo(buf, "%s%s = EXCLUDED.%s",
						 nset ? ", " : "UPDATE SET ",
						 quote_identifier(tg->column),
						 quote_identifier(tg->column));
		nset++;
	}
	if (nset == 0)
		appendStringInfoString(buf, "NOTHING");
}

/*
 * MsSqlUpsert returns INSERT ... SELECT ... ON CONFLICT for the source rows
 * of "from": rows new to the target are inserted; rows whose key exists
 * there are updated (update_existing) or left alone.
 */
char *
MsSqlUpsert(const MsDirection *d, const char *from, bool update_existing)
{
	StringInfoData buf;

	initStringInfo(&buf);
	ms_append_insert_head(&buf, d);
	appendStringInfoString(&buf, "SELECT ");
	for (int t = 0; t < d->ntargets; t++)
		appendStringInfo(&buf, "%s%s", t ? ", " : "", d->targets[t].expr);
	appendStringInfo(&buf, " FROM %s", from);
	ms_append_on_conflict(&buf, d, update_existing);
	return buf.data;
}

/*
 * MsSqlInsertRow returns INSERT ... VALUES ... ON CONFLICT (key) DO NOTHING
 * for one source row passed as parameters.  When the key exists, the
 * caller updates that row instead: an ON CONFLICT DO UPDATE would build
 * its SET list's projection for every row it inserts.
 */
char *
MsSqlInsertRow(const MsDirection *d)
{
	StringInfoData buf;

	initStringInfo(&buf);
	ms_append_insert_head(&buf, d);
	appendStringInfoString(&buf, "VALUES (");
	for (int t = 0; t < d->ntargets; t++)
		appendStringInfo(&buf, "%s%s", t ? ", " : "", ms_row_expr(d, &d->targets[t]));
	appendStringInfoChar(&buf, ')');
	ms_append_on_conflict(&buf, d, false);
	return buf.data;
}

/*
 * ms_append_set appends the SET list of an UPDATE: every column whose
 * expression reads the source, keys included, so a changed key moves the
 * target row too.
 */
static void
ms_append_set(StringInfo buf, const MsDirection *d, bool row)
{
	int			nset = 0;

	appendStringInfo(buf, "UPDATE %s AS %s SET ",
					 MsQualifiedRelName(d->dst_relid), MS_TARGET_ALIAS);
	for (int t = 0; t < d->ntargets; t++)
	{
		const MsTarget *tg = &d->targets[t];

		if (!tg->reads_source)
			continue;
		appendStringInfo(buf, "%s%s = %s", nset ? ", " : "",
						 quote_identifier(tg->column),
						 row ? ms_row_expr(d, tg) : tg->expr);
		nset++;
	}
}

/*
 * MsSqlUpdate returns the UPDATE that rewrites, from each source row of
 * "from", the target row with the same key (a set of rows whose keys did
 * not change).
 */
char *
MsSqlUpdate(const MsDirection *d, const char *from)
{
	StringInfoData buf;

	initStringInfo(&buf);
	ms_append_set(&buf, d, false);
	appendStringInfo(&buf, " FROM %s WHERE ", from);
	ms_append_key_match(&buf, d, 0);
	return buf.data;
}

/*
 * MsSqlUpdateRow returns the UPDATE that rewrites the target row found by
 * the old key (parameters after the row's columns) from one source row.
 */
char *
MsSqlUpdateRow(const MsDirection *d)
{
	StringInfoData buf;

	initStringInfo(&buf);
	ms_append_set(&buf, d, true);
	appendStringInfoString(&buf, " WHERE ");
	ms_append_key_match(&buf, d, bms_num_members(d->src_attrs) + 1);
	return buf.data;
}

/*
 * MsSqlDelete returns the DELETE of the target row whose key is passed as
 * parameters from 1 on, or, with "from", of the target rows whose keys are
 * those of the source rows in "from".
 */
char *
MsSqlDelete(const MsDirection *d, const char *from)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "DELETE FROM %s AS %s",
					 MsQualifiedRelName(d->dst_relid), MS_TARGET_ALIAS);
	if (from)
		appendStringInfo(&buf, " USING %s", from);
	appendStringInfoString(&buf, " WHERE ");
	ms_append_key_match(&buf, d, from ? 0 : 1);
	return buf.data;
}

/*
 * MsSqlTruncate returns the TRUNCATE of a direction's target table.
 */
char *
MsSqlTruncate(const MsDirection *d)
{
	return psprintf("TRUNCATE TABLE ONLY %s", MsQualifiedRelName(d->dst_relid));
}
