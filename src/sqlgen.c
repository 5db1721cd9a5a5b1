/*-------------------------------------------------------------------------
 *
 * sqlgen.c
 *	  Build the SQL statements that carry a write from one table of a link
 *	  to the other.
 *
 * Every statement reads the source row through a FROM item aliased like
 * the source side ("legacy" or "current"), so the mapping expressions are
 * used verbatim whatever the source is: one row passed as parameters
 * (the row triggers), the whole source table (backfill), or later a
 * transition table.  The planner pulls the one-row subquery up, so the row
 * form costs no more than a VALUES list.
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
 * MsRowSourceClause returns the FROM item that presents one source row,
 * passed as parameters $1..$n (the source columns that the mapping reads,
 * in attribute order), under the source alias.
 */
char *
MsRowSourceClause(const MsDirection *d, Relation src)
{
	StringInfoData buf;
	TupleDesc	desc = RelationGetDescr(src);
	int			x = -1;
	int			param = 0;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "(SELECT ");
	while ((x = bms_next_member(d->src_attrs, x)) >= 0)
	{
		Form_pg_attribute att = TupleDescAttr(desc, x - 1);

		appendStringInfo(&buf, "%s$%d", param ? ", " : "", param + 1);
		if (OidIsValid(att->attcollation) &&
			att->attcollation != get_typcollation(att->atttypid))
			appendStringInfo(&buf, " COLLATE %s",
							 generate_collation_name(att->attcollation));
		appendStringInfo(&buf, " AS %s", quote_identifier(NameStr(att->attname)));
		param++;
	}
	appendStringInfo(&buf, ") AS %s", d->src_alias);
	return buf.data;
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
 * MsSqlUpsert returns INSERT ... SELECT ... ON CONFLICT for a direction:
 * rows new to the target are inserted; rows whose key exists there are
 * updated (update_existing) or left alone.  Columns whose expression reads
 * nothing of the source, such as a generated uuid, are set on insert only.
 */
char *
MsSqlUpsert(const MsDirection *d, const char *from, bool update_existing)
{
	StringInfoData buf;
	int			nset = 0;

	initStringInfo(&buf);
	appendStringInfo(&buf, "INSERT INTO %s AS %s (",
					 MsQualifiedRelName(d->dst_relid), MS_TARGET_ALIAS);
	for (int t = 0; t < d->ntargets; t++)
		appendStringInfo(&buf, "%s%s", t ? ", " : "",
						 quote_identifier(d->targets[t].column));
	appendStringInfoString(&buf, ") SELECT ");
	for (int t = 0; t < d->ntargets; t++)
		appendStringInfo(&buf, "%s%s", t ? ", " : "", d->targets[t].expr);
	appendStringInfo(&buf, " FROM %s ON CONFLICT (", from);
	for (int k = 0; k < d->nkeys; k++)
		appendStringInfo(&buf, "%s%s", k ? ", " : "",
						 quote_identifier(get_attname(d->dst_relid, d->dst_key[k], false)));
	appendStringInfoString(&buf, ") DO ");
	for (int t = 0; update_existing && t < d->ntargets; t++)
	{
		const MsTarget *tg = &d->targets[t];

		if (tg->is_key || !tg->reads_source)
			continue;
		appendStringInfo(&buf, "%s%s = EXCLUDED.%s",
						 nset ? ", " : "UPDATE SET ",
						 quote_identifier(tg->column),
						 quote_identifier(tg->column));
		nset++;
	}
	if (nset == 0)
		appendStringInfoString(&buf, "NOTHING");
	return buf.data;
}

/*
 * MsSqlUpdate returns the UPDATE that rewrites the target row found by the
 * source's old key (parameters first_key_param...) from the new source
 * row: every column whose expression reads the source, keys included, so
 * a changed key moves the target row too.  With first_key_param 0 the
 * target rows are found by the key of the source rows in "from" (a set of
 * rows whose keys did not change).
 */
char *
MsSqlUpdate(const MsDirection *d, const char *from, int first_key_param)
{
	StringInfoData buf;
	int			nset = 0;

	initStringInfo(&buf);
	appendStringInfo(&buf, "UPDATE %s AS %s SET ",
					 MsQualifiedRelName(d->dst_relid), MS_TARGET_ALIAS);
	for (int t = 0; t < d->ntargets; t++)
	{
		const MsTarget *tg = &d->targets[t];

		if (!tg->reads_source)
			continue;
		appendStringInfo(&buf, "%s%s = %s", nset ? ", " : "",
						 quote_identifier(tg->column), tg->expr);
		nset++;
	}
	appendStringInfo(&buf, " FROM %s WHERE ", from);
	ms_append_key_match(&buf, d, first_key_param);
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
