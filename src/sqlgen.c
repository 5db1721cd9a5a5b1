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

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
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
 * MsTriggerName returns the name of a link's trigger for one event: the
 * statement trigger, or with apply the row trigger that fires for rows
 * logical replication applies (no such trigger for TRUNCATE).  PostgreSQL
 * fires the triggers of one table in the order of their names; a list or
 * document link's names ("mailsync~...") sort after every rows link's
 * ("mailsync_..."), so the child rows of a list are written after the
 * parent row that a rows link writes for the same statement.
 */
char *
MsTriggerName(const char *link, bool shape, MsEvent event, bool apply)
{
	static const char *const suffix[] = {"insert", "update", "delete", "truncate"};

	return psprintf("mailsync%c%s_%s%s", shape ? '~' : '_', link,
					apply ? "apply_" : "", suffix[event]);
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

/*
 * ms_src_key_op returns OPERATOR(schema.op) for a btree strategy of source
 * key column k, from the opfamily of the source's key index, so that keyset
 * batches walk the keys in the index's order, whatever their type.
 */
static char *
ms_src_key_op(const MsDirection *d, int k, StrategyNumber strategy)
{
	Relation	idx = index_open(d->src_keyidx, AccessShareLock);
	Oid			op = InvalidOid;

	for (int j = 0; j < idx->rd_index->indnkeyatts; j++)
		if (idx->rd_index->indkey.values[j] == d->src_key[k])
			op = get_opfamily_member(idx->rd_opfamily[j], idx->rd_opcintype[j],
									 idx->rd_opcintype[j], strategy);
	index_close(idx, AccessShareLock);
	if (!OidIsValid(op))
		elog(ERROR, "no btree operator %d for key column %d of the source index %u",
			 strategy, d->src_key[k], d->src_keyidx);
	return ms_operator_sql(op);
}

/*
 * ms_src_key_col returns "alias.column" of source key column k.
 */
static char *
ms_src_key_col(const MsDirection *d, int k)
{
	return psprintf("%s.%s", d->src_alias,
					quote_identifier(get_attname(d->src_relid, d->src_key[k], false)));
}

/*
 * ms_src_key_value returns "CAST($param[k] AS type)": a key value stored as
 * text, back in the type of source key column k.
 */
static char *
ms_src_key_value(const MsDirection *d, int k, int param)
{
	return psprintf("CAST($%d[%d] AS %s)", param, k + 1,
					format_type_be_qualified(get_atttype(d->src_relid, d->src_key[k])));
}

/*
 * ms_append_after appends the condition that the source key comes after
 * the key in text[] parameter $param, in the key index's order: for a key
 * (a, b), a >= $p[1] AND (a > $p[1] OR (a = $p[1] AND b > $p[2])).
 */
static void
ms_append_after(StringInfo buf, const MsDirection *d, int param)
{
	appendStringInfoChar(buf, '(');
	if (d->nkeys > 1)
		appendStringInfo(buf, "%s %s %s AND ", ms_src_key_col(d, 0),
						 ms_src_key_op(d, 0, BTGreaterEqualStrategyNumber),
						 ms_src_key_value(d, 0, param));
	appendStringInfoChar(buf, '(');
	for (int k = 0; k < d->nkeys; k++)
	{
		if (k > 0)
			appendStringInfoString(buf, " OR (");
		for (int e = 0; e < k; e++)
			appendStringInfo(buf, "%s %s %s AND ", ms_src_key_col(d, e),
							 ms_src_key_op(d, e, BTEqualStrategyNumber),
							 ms_src_key_value(d, e, param));
		appendStringInfo(buf, "%s %s %s", ms_src_key_col(d, k),
						 ms_src_key_op(d, k, BTGreaterStrategyNumber),
						 ms_src_key_value(d, k, param));
		if (k > 0)
			appendStringInfoChar(buf, ')');
	}
	appendStringInfoString(buf, "))");
}

/*
 * ms_append_key_order appends the source key columns with USING operators
 * for ORDER BY, ascending or descending.
 */
static void
ms_append_key_order(StringInfo buf, const MsDirection *d, bool descending)
{
	for (int k = 0; k < d->nkeys; k++)
		appendStringInfo(buf, "%s%s USING %s", k ? ", " : "", ms_src_key_col(d, k),
						 ms_src_key_op(d, k, descending ? BTGreaterStrategyNumber :
									   BTLessStrategyNumber));
}

/*
 * ms_append_key_text appends ARRAY[key columns as text].
 */
static void
ms_append_key_text(StringInfo buf, const MsDirection *d)
{
	appendStringInfoString(buf, "ARRAY[");
	for (int k = 0; k < d->nkeys; k++)
		appendStringInfo(buf, "%s%s::pg_catalog.text", k ? ", " : "", ms_src_key_col(d, k));
	appendStringInfoChar(buf, ']');
}

/*
 * MsSqlLastKey returns the query of the highest source key, as text[].
 */
char *
MsSqlLastKey(const MsDirection *d)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "SELECT ");
	ms_append_key_text(&buf, d);
	appendStringInfo(&buf, " FROM %s ORDER BY ", MsTableSourceClause(d));
	ms_append_key_order(&buf, d, true);
	appendStringInfoString(&buf, " LIMIT 1");
	return buf.data;
}

/*
 * MsSqlCountUpTo returns the query that counts the source rows up to the key
 * in text[] parameter $1.
 */
char *
MsSqlCountUpTo(const MsDirection *d)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "SELECT pg_catalog.count(*) FROM %s WHERE NOT ",
					 MsTableSourceClause(d));
	ms_append_after(&buf, d, 1);
	return buf.data;
}

/*
 * ms_append_image_ne appends the condition that two sets of columns differ
 * in their stored image (NULLs equal to each other): row1 and row2 are
 * printf formats applied to each column name.
 */
static void
ms_append_image_ne(StringInfo buf, const MsDirection *d, const char *left,
				   const char *right)
{
	int			n = 0;

	appendStringInfoString(buf, "pg_catalog.record_image_ne(ROW(");
	for (int t = 0; t < d->ntargets; t++)
		if (!d->targets[t].is_key && d->targets[t].reads_source)
			appendStringInfo(buf, "%s%s.%s", n++ ? ", " : "", left,
							 quote_identifier(d->targets[t].column));
	appendStringInfoString(buf, "), ROW(");
	n = 0;
	for (int t = 0; t < d->ntargets; t++)
		if (!d->targets[t].is_key && d->targets[t].reads_source)
			appendStringInfo(buf, "%s%s.%s", n++ ? ", " : "", right,
							 quote_identifier(d->targets[t].column));
	appendStringInfoString(buf, "))");
}

/*
 * ms_compared_columns counts the target columns verify compares: those
 * whose expression reads the source, keys aside (they match by the join).
 */
static int
ms_compared_columns(const MsDirection *d)
{
	int			n = 0;

	for (int t = 0; t < d->ntargets; t++)
		if (!d->targets[t].is_key && d->targets[t].reads_source)
			n++;
	return n;
}

/*
 * ms_append_range appends the condition that the source key comes after
 * the key in text[] $1 (NULL $1: from the first) and not after the key in
 * text[] $2.
 */
static void
ms_append_range(StringInfo buf, const MsDirection *d)
{
	appendStringInfoString(buf, "($1 IS NULL OR ");
	ms_append_after(buf, d, 1);
	appendStringInfoString(buf, ") AND NOT ");
	ms_append_after(buf, d, 2);
}

/*
 * MsSqlBackfillBounds returns the query that delimits the next backfill
 * batch: at most $3 source keys after text[] $1 and up to text[] $2, read
 * from the key index alone.  Its one row holds how many there are and the
 * last one, as text[]; there is no row when none is left.
 */
char *
MsSqlBackfillBounds(const MsDirection *d)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "SELECT pg_catalog.count(*) OVER (), ");
	ms_append_key_text(&buf, d);
	appendStringInfoString(&buf, " FROM (SELECT ");
	for (int k = 0; k < d->nkeys; k++)
		appendStringInfo(&buf, "%s%s", k ? ", " : "", ms_src_key_col(d, k));
	appendStringInfo(&buf, " FROM %s WHERE ", MsTableSourceClause(d));
	ms_append_range(&buf, d);
	appendStringInfoString(&buf, " ORDER BY ");
	ms_append_key_order(&buf, d, false);
	appendStringInfo(&buf, " LIMIT $3) AS %s ORDER BY ", d->src_alias);
	ms_append_key_order(&buf, d, true);
	appendStringInfoString(&buf, " LIMIT 1");
	return buf.data;
}

/*
 * MsSqlBackfillCopy returns the statement that copies the source rows after
 * the key in text[] $1 and up to the key in text[] $2 through the mapping.
 * The rows are locked FOR SHARE, so that a writer who changes or deletes
 * one of them waits for the batch and then syncs its own change over it.
 * A plain INSERT (upsert false) fails on a key the target has already; the
 * upsert rewrites such a row where it differs.
 */
char *
MsSqlBackfillCopy(const MsDirection *d, bool upsert)
{
	StringInfoData buf;

	initStringInfo(&buf);
	ms_append_insert_head(&buf, d);
	appendStringInfoString(&buf, "SELECT ");
	for (int t = 0; t < d->ntargets; t++)
		appendStringInfo(&buf, "%s%s", t ? ", " : "", d->targets[t].expr);
	appendStringInfo(&buf, " FROM %s WHERE ", MsTableSourceClause(d));
	ms_append_range(&buf, d);
	appendStringInfo(&buf, " FOR SHARE OF %s", d->src_alias);
	if (upsert)
	{
		ms_append_on_conflict(&buf, d, true);
		if (ms_compared_columns(d) > 0)
		{
			appendStringInfoString(&buf, " WHERE ");
			ms_append_image_ne(&buf, d, MS_TARGET_ALIAS, "EXCLUDED");
		}
	}
	return buf.data;
}

/*
 * MsSqlDiff returns the query of the keys on which source and target
 * disagree through the mapping, in one full join on the key: columns k1..
 * (the key, in the target's types), "problem" ('missing in <side>' or
 * 'differs'), and, with values, s_<column> and t_<column> for each compared
 * column: what the source row maps to and what the target row holds.
 */
char *
MsSqlDiff(const MsDirection *d, const char *src_side, const char *dst_side,
		  bool values)
{
	StringInfoData buf;
	int			ncompared = ms_compared_columns(d);

	initStringInfo(&buf);
	appendStringInfoString(&buf, "SELECT ");
	for (int k = 0; k < d->nkeys; k++)
		appendStringInfo(&buf, "COALESCE(s.k%d, t.k%d) AS k%d, ", k + 1, k + 1, k + 1);
	appendStringInfo(&buf, "CASE WHEN t.p IS NULL THEN 'missing in %s' "
					 "WHEN s.p IS NULL THEN 'missing in %s' ELSE 'differs' END AS problem",
					 dst_side, src_side);
	for (int t = 0; values && t < d->ntargets; t++)
		if (!d->targets[t].is_key && d->targets[t].reads_source)
			appendStringInfo(&buf, ", s.%s AS s_%d, t.%s AS t_%d",
							 quote_identifier(d->targets[t].column), t,
							 quote_identifier(d->targets[t].column), t);

	/* the source rows, mapped */
	appendStringInfoString(&buf, " FROM (SELECT true AS p");
	for (int k = 0; k < d->nkeys; k++)
		for (int t = 0; t < d->ntargets; t++)
			if (d->targets[t].attno == d->dst_key[k])
				appendStringInfo(&buf, ", CAST(%s AS %s) AS k%d", d->targets[t].expr,
								 format_type_be_qualified(get_atttype(d->dst_relid, d->dst_key[k])),
								 k + 1);
	for (int t = 0; t < d->ntargets; t++)
		if (!d->targets[t].is_key && d->targets[t].reads_source)
		{
			Oid			typid;
			int32		typmod;
			Oid			collid;

			get_atttypetypmodcoll(d->dst_relid, d->targets[t].attno, &typid, &typmod, &collid);
			appendStringInfo(&buf, ", CAST(%s AS %s) AS %s", d->targets[t].expr,
							 format_type_with_typemod(typid, typmod),
							 quote_identifier(d->targets[t].column));
		}
	appendStringInfo(&buf, " FROM %s) AS s", MsTableSourceClause(d));

	/* the target rows */
	appendStringInfoString(&buf, " FULL JOIN (SELECT true AS p");
	for (int k = 0; k < d->nkeys; k++)
		appendStringInfo(&buf, ", %s.%s AS k%d", MS_TARGET_ALIAS,
						 quote_identifier(get_attname(d->dst_relid, d->dst_key[k], false)),
						 k + 1);
	for (int t = 0; t < d->ntargets; t++)
		if (!d->targets[t].is_key && d->targets[t].reads_source)
			appendStringInfo(&buf, ", %s.%s", MS_TARGET_ALIAS,
							 quote_identifier(d->targets[t].column));
	appendStringInfo(&buf, " FROM ONLY %s AS %s) AS t ON ",
					 MsQualifiedRelName(d->dst_relid), MS_TARGET_ALIAS);
	for (int k = 0; k < d->nkeys; k++)
		appendStringInfo(&buf, "%ss.k%d %s t.k%d", k ? " AND " : "", k + 1,
						 ms_operator_sql(d->key_eqop[k]), k + 1);

	appendStringInfoString(&buf, " WHERE s.p IS NULL OR t.p IS NULL");
	if (ncompared > 0)
	{
		appendStringInfoString(&buf, " OR ");
		ms_append_image_ne(&buf, d, "s", "t");
	}
	return buf.data;
}

/*
 * MsSqlRepair returns the statement that makes the target match the source
 * for exactly the keys of the diff: inserts the rows missing in the target,
 * rewrites the ones that differ, deletes the ones the source does not have.
 * It returns the three counts.
 */
char *
MsSqlRepair(const MsDirection *d, const char *src_side, const char *dst_side)
{
	StringInfoData buf;
	StringInfoData keymatch_src;
	StringInfoData keymatch_dst;
	StringInfoData from;

	/* d.k = the source row's key, and the target row's */
	initStringInfo(&keymatch_src);
	initStringInfo(&keymatch_dst);
	for (int k = 0; k < d->nkeys; k++)
	{
		for (int t = 0; t < d->ntargets; t++)
			if (d->targets[t].attno == d->dst_key[k])
				appendStringInfo(&keymatch_src, "%sd.k%d %s CAST(%s AS %s)",
								 k ? " AND " : "", k + 1, ms_operator_sql(d->key_eqop[k]),
								 d->targets[t].expr,
								 format_type_be_qualified(get_atttype(d->dst_relid, d->dst_key[k])));
		appendStringInfo(&keymatch_dst, "%s%s.%s %s d.k%d", k ? " AND " : "", MS_TARGET_ALIAS,
						 quote_identifier(get_attname(d->dst_relid, d->dst_key[k], false)),
						 ms_operator_sql(d->key_eqop[k]), k + 1);
	}

	initStringInfo(&buf);
	appendStringInfo(&buf, "WITH d AS MATERIALIZED (%s), ins AS (",
					 MsSqlDiff(d, src_side, dst_side, false));
	initStringInfo(&from);
	appendStringInfo(&from, "%s JOIN d ON d.problem = 'missing in %s' AND %s",
					 MsTableSourceClause(d), dst_side, keymatch_src.data);
	appendStringInfoString(&buf, MsSqlUpsert(d, from.data, true));
	appendStringInfoString(&buf, " RETURNING 1), upd AS (");
	ms_append_set(&buf, d, false);
	appendStringInfo(&buf, " FROM %s, d WHERE d.problem = 'differs' AND %s AND %s RETURNING 1), ",
					 MsTableSourceClause(d), keymatch_src.data, keymatch_dst.data);
	appendStringInfo(&buf, "del AS (DELETE FROM ONLY %s AS %s USING d WHERE d.problem = 'missing in %s' AND %s RETURNING 1) ",
					 MsQualifiedRelName(d->dst_relid), MS_TARGET_ALIAS, src_side,
					 keymatch_dst.data);
	appendStringInfoString(&buf, "SELECT (SELECT pg_catalog.count(*) FROM ins), "
						   "(SELECT pg_catalog.count(*) FROM upd), (SELECT pg_catalog.count(*) FROM del)");
	return buf.data;
}
