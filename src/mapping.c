/*-------------------------------------------------------------------------
 *
 * mapping.c
 *	  Validate and compile a link definition into an MsLinkDef.
 *
 * The "columns" argument of mailsync.link is a JSON object keyed by
 * current-table column:
 *
 *	  "name": "name"				same value, same column name
 *	  "kind": "type"				a rename: current.kind <-> legacy.type
 *	  "kind": {"up": "lower(legacy.type)",
 *			   "down": "upper(current.kind)", "to": "type"}
 *									a transform each way; "up" alone makes a
 *									one-way column
 *
 * Everything is checked here, when the link is made, so that no write ever
 * finds out first: columns exist, expressions parse against the right row
 * and assign to the target column's type, keys are mapped by name and have
 * a unique index on both sides, and no NOT NULL column would be left empty.
 *
 * Expressions are parsed with the caller's search path, then deparsed under
 * mailsync's pinned path (pg_catalog only), so the stored text names every
 * object outside pg_catalog with its schema.  That normalised text is what
 * mailsync.links keeps, what pg_dump carries, and what the triggers compile
 * again, under the same pinned path, in every backend.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/sysattr.h"
#include "access/table.h"
#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_index.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "lib/stringinfo.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_coerce.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_node.h"
#include "parser/parse_relation.h"
#include "parser/parser.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"

#include "mailsync.h"

/* One entry of the "columns" object, as the user wrote it */
typedef struct MsMapEntry
{
	char	   *column;			/* current-table column (the JSON key) */
	char	   *rename;			/* legacy column, for a string mapping */
	char	   *up;				/* "up" expression text */
	char	   *down;			/* "down" expression text */
	char	   *to;				/* legacy column that "down" writes */
	char	   *from;			/* legacy column of a value map */
	JsonbValue	map;			/* the value map: legacy value -> current */
	MsShapeKind shape;			/* a list, document or join mapping */
	JsonbValue	spec;			/* its object, as written */
} MsMapEntry;

/* Error context of one expression being compiled */
typedef struct MsExprErrorContext
{
	const char *column;
	const char *which;
	const char *sql;
} MsExprErrorContext;

static const char *const side_name[2] = {"legacy", "current"};

/*
 * ms_expr_error_callback reports errors inside a mapping expression as
 * errors of an internal query, with the caret on the expression text
 * rather than on the caller's statement, and says which mapping it was.
 */
static void
ms_expr_error_callback(void *arg)
{
	MsExprErrorContext *ctx = (MsExprErrorContext *) arg;
	int			pos = geterrposition();

	if (pos > 0)
	{
		errposition(0);
		internalerrposition(pos);
		internalerrquery(ctx->sql);
	}
	errcontext("mapping for column \"%s\", \"%s\" expression",
			   ctx->column, ctx->which);
}

/*
 * MsCheckLinkName refuses names that could not be part of a trigger name.
 */
void
MsCheckLinkName(const char *name)
{
	size_t		len = strlen(name);
	bool		ok = len >= 1 && len <= MS_MAX_LINK_NAME;

	for (const char *p = name; ok && *p; p++)
		ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			(*p >= '0' && *p <= '9') || *p == '_';
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid link name \"%s\"", name),
				 errhint("A link name is 1 to %d letters, digits or underscores.",
						 MS_MAX_LINK_NAME)));
}

/*
 * MsCheckDirection refuses a direction word other than both, up or down.
 */
void
MsCheckDirection(const char *direction)
{
	if (strcmp(direction, "both") != 0 && strcmp(direction, "up") != 0 &&
		strcmp(direction, "down") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid direction \"%s\"", direction),
				 errhint("Use 'both', 'up' (legacy to current) or 'down' (current to legacy).")));
}

/*
 * MsCheckLinkableTable refuses relations a link cannot be made on.
 * "role" is "legacy" or "current", for the message.
 */
void
MsCheckLinkableTable(Relation rel, const char *role)
{
	char	   *display = MsRelDisplayName(RelationGetRelid(rel));
	char		relkind = rel->rd_rel->relkind;
	Oid			nsp = RelationGetNamespace(rel);

	if (relkind == RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s table \"%s\" is partitioned", role, display),
				 errhint("mailsync links plain tables; link a plain table or one partition.")));
	if (relkind == RELKIND_FOREIGN_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s table \"%s\" is a foreign table", role, display),
				 errhint("mailsync links tables of this database only.")));
	if (relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("%s relation \"%s\" is not a table", role, display),
				 errhint("mailsync links plain tables, not views, sequences or indexes.")));
	if (rel->rd_rel->relhassubclass || rel->rd_rel->relispartition ||
		has_superclass(RelationGetRelid(rel)))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s table \"%s\" takes part in table inheritance", role, display),
				 errhint("mailsync links plain tables; a statement on a parent or child would not be seen whole.")));
	if (rel->rd_rel->relpersistence == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s table \"%s\" is a temporary table", role, display),
				 errhint("A link outlives the session; link permanent tables.")));
	if (IsCatalogNamespace(nsp) || IsToastNamespace(nsp) ||
		nsp == get_namespace_oid("mailsync", true))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s table \"%s\" is a system table", role, display),
				 errhint("mailsync links the application's tables, not PostgreSQL's or its own.")));
}

/*
 * MsTextArrayToList turns a text[] argument into a List of C strings,
 * refusing NULL elements, more than one dimension and empty arrays.
 */
List *
MsTextArrayToList(ArrayType *arr, const char *argname)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *result = NIL;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("\"%s\" must be a one-dimensional array", argname)));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" must name at least one column", argname),
				 errhint("Pass NULL to use the current table's primary key.")));
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("\"%s\" must not contain NULL", argname)));
		result = lappend(result, TextDatumGetCString(elems[i]));
	}
	return result;
}

/*
 * MsLookupColumn returns the attribute number of a user column, or
 * raises 42703 naming the column, the table and what was expected there.
 */
AttrNumber
MsLookupColumn(Relation rel, const char *colname, int side, const char *hint)
{
	AttrNumber	attno = get_attnum(RelationGetRelid(rel), colname);

	if (attno == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of %s table \"%s\" does not exist",
						colname, side_name[side],
						MsRelDisplayName(RelationGetRelid(rel))),
				 errhint("%s", hint)));
	if (attno < 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("column \"%s\" of %s table \"%s\" is a system column",
						colname, side_name[side],
						MsRelDisplayName(RelationGetRelid(rel))),
				 errhint("Map user columns only.")));
	return attno;
}

/*
 * ms_json_string returns the C string of a JSON string value, or raises
 * an error naming the mapping.
 */
static char *
ms_json_string(JsonbValue *v, const char *column, const char *field)
{
	if (v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" in the mapping for column \"%s\" must be a string",
						field, column)));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * ms_map_literal returns a scalar of a value map as an SQL literal.
 */
static char *
ms_map_literal(JsonbValue *v, const char *column)
{
	switch (v->type)
	{
		case jbvString:
			return quote_literal_cstr(pnstrdup(v->val.string.val, v->val.string.len));
		case jbvNumeric:
			return quote_literal_cstr(DatumGetCString(DirectFunctionCall1(numeric_out,
																		  NumericGetDatum(v->val.numeric))));
		case jbvBool:
			return pstrdup(v->val.boolean ? "'true'" : "'false'");
		default:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("value map for column \"%s\" maps to a value that is not a string, number or boolean",
							column),
					 errhint("Each entry of \"map\" pairs one legacy value with one current value.")));
	}
	return NULL;				/* keep compiler quiet */
}

/*
 * ms_expand_value_map turns a value map into the transform it stands for:
 * "up" a CASE over the legacy column from each legacy value to its current
 * value, "down" the CASE back, any other value unchanged both ways.  The
 * map must pair values one to one, or a value could not find its way back.
 */
static void
ms_expand_value_map(MsMapEntry *e)
{
	JsonbIterator *it = JsonbIteratorInit(e->map.val.binary.data);
	JsonbIteratorToken tok;
	JsonbValue	k;
	StringInfoData up;
	StringInfoData down;
	List	   *seen = NIL;
	char	   *legacy_col = psprintf("legacy.%s", quote_identifier(e->from));
	char	   *current_col = psprintf("current.%s", quote_identifier(e->column));

	initStringInfo(&up);
	initStringInfo(&down);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		JsonbValue	val;
		char	   *from;
		char	   *to;
		ListCell   *lc;

		if (tok != WJB_KEY)
			continue;
		from = quote_literal_cstr(pnstrdup(k.val.string.val, k.val.string.len));
		tok = JsonbIteratorNext(&it, &val, true);
		to = ms_map_literal(&val, e->column);
		foreach(lc, seen)
			if (strcmp((char *) lfirst(lc), to) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("value map for column \"%s\" maps two legacy values to %s", e->column, to),
						 errhint("A value map must pair values one to one, so that each value finds its way back.")));
		seen = lappend(seen, to);
		appendStringInfo(&up, " WHEN %s THEN %s", from, to);
		appendStringInfo(&down, " WHEN %s THEN %s", to, from);
	}
	if (seen == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("value map for column \"%s\" is empty", e->column),
				 errhint("Write \"%s\": \"%s\" for a plain rename.", e->column, e->from)));
	e->up = psprintf("CASE %s%s ELSE %s END", legacy_col, up.data, legacy_col);
	e->down = psprintf("CASE %s%s ELSE %s END", current_col, down.data, current_col);
	e->to = e->from;
}

/*
 * ms_parse_entry reads one "column": mapping pair of the JSON object.
 */
static MsMapEntry *
ms_parse_entry(char *column, JsonbValue *v)
{
	MsMapEntry *e = palloc0(sizeof(MsMapEntry));
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	k;

	e->column = column;
	if (v->type == jbvString)
	{
		e->rename = pnstrdup(v->val.string.val, v->val.string.len);
		return e;
	}
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("mapping for column \"%s\" must be a string or an object", column),
				 errhint("Write \"%s\": \"legacy_column\" for a rename, or an object with \"up\", \"down\" and \"to\" for a transform.",
						 column)));

	/* a list or a document: its own object, checked with the shape */
	for (int s = MS_SHAPE_LIST; s <= MS_SHAPE_JOIN; s++)
	{
		const char *word = MsShapeKindName((MsShapeKind) s);

		if (getKeyJsonValueFromContainer(v->val.binary.data, word,
										 strlen(word), NULL) != NULL)
		{
			e->shape = (MsShapeKind) s;
			e->spec = *v;
			return e;
		}
	}

	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		JsonbValue	val;
		char	   *field;

		if (tok != WJB_KEY)
			continue;
		field = pnstrdup(k.val.string.val, k.val.string.len);
		tok = JsonbIteratorNext(&it, &val, true);
		Assert(tok == WJB_VALUE);
		if (strcmp(field, "from") == 0)
			e->from = ms_json_string(&val, column, field);
		else if (strcmp(field, "map") == 0)
		{
			if (val.type != jbvBinary || !JsonContainerIsObject(val.val.binary.data))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("\"map\" in the mapping for column \"%s\" must be a JSON object", column),
						 errhint("Write \"map\": {\"legacy value\": \"current value\", ...}.")));
			e->map = val;
		}
		else if (strcmp(field, "up") == 0)
			e->up = ms_json_string(&val, column, field);
		else if (strcmp(field, "down") == 0)
			e->down = ms_json_string(&val, column, field);
		else if (strcmp(field, "to") == 0)
			e->to = ms_json_string(&val, column, field);
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("mapping for column \"%s\" has unknown key \"%s\"",
							column, field),
					 errhint("A mapping object takes \"up\", \"down\" and \"to\"; \"from\" and \"map\"; \"list\"; \"document\"; or \"join\".")));
	}

	if (e->from || e->map.type == jbvBinary)
	{
		if (e->up || e->down || e->to)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("mapping for column \"%s\" mixes a value map with expressions", column),
					 errhint("Use \"from\" and \"map\", or \"up\", \"down\" and \"to\", not both.")));
		if (!e->from || e->map.type != jbvBinary)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("value map for column \"%s\" needs both \"from\" and \"map\"", column),
					 errhint("Write \"%s\": {\"from\": \"legacy_column\", \"map\": {\"legacy value\": \"current value\"}}.",
							 column)));
		ms_expand_value_map(e);
		return e;
	}

	if (e->down && !e->to)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("mapping for column \"%s\" has \"down\" but no \"to\"", column),
				 errhint("Name the legacy column that \"down\" writes with \"to\".")));
	if (e->to && !e->down)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("mapping for column \"%s\" has \"to\" but no \"down\"", column),
				 errhint("Give a \"down\" expression, or write \"%s\": \"%s\" for a plain rename.",
						 column, e->to)));
	if (!e->up && !e->down)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("mapping for column \"%s\" has neither \"up\" nor \"down\"", column),
				 errhint("Leave the column out of the mapping to let it keep its default.")));
	return e;
}

/*
 * ms_parse_columns reads the "columns" object into a list of MsMapEntry.
 */
static List *
ms_parse_columns(Jsonb *columns)
{
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;
	List	   *entries = NIL;

	if (!JB_ROOT_IS_OBJECT(columns))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"columns\" must be a JSON object"),
				 errhint("Write it as '{\"current_column\": \"legacy_column\", ...}'.")));

	it = JsonbIteratorInit(&columns->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *column;

		if (tok != WJB_KEY)
			continue;
		column = pnstrdup(v.val.string.val, v.val.string.len);
		tok = JsonbIteratorNext(&it, &v, true);
		Assert(tok == WJB_VALUE);
		entries = lappend(entries, ms_parse_entry(column, &v));
	}
	if (entries == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"columns\" maps no column"),
				 errhint("Map at least the key columns, for example '{\"id\": \"id\"}'.")));
	return entries;
}

/*
 * ms_compile_expr parses one mapping expression against the source row,
 * checks that it is a plain scalar expression whose value can be assigned
 * to the target column, records the source columns it reads, and returns
 * its text deparsed under the pinned search path, its parsed tree (source
 * row as range table entry 1) in *node, and that tree coerced to the
 * target column's type, as an assignment would, in *assign.
 */
static char *
ms_compile_expr(const char *text, Relation src, int src_side,
				Form_pg_attribute target, const char *column,
				const char *which, Bitmapset **src_attrs, Node **node,
				Node **assign)
{
	const char *alias = side_name[src_side];
	char	   *sql = psprintf("SELECT %s", text);
	MsExprErrorContext ctx = {column, which, sql};
	ErrorContextCallback errcb;
	List	   *raw;
	SelectStmt *stmt = NULL;
	ResTarget  *rt = NULL;
	ParseState *pstate;
	ParseNamespaceItem *nsitem;
	Node	   *expr;
	Bitmapset  *attrs = NULL;
	char	   *result;
	int			x;

	if (strspn(text, " \t\r\n") == strlen(text))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" expression for column \"%s\" is empty", which, column)));

	errcb.callback = ms_expr_error_callback;
	errcb.arg = &ctx;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	raw = raw_parser(sql, RAW_PARSE_DEFAULT);
	if (list_length(raw) == 1 && IsA(((RawStmt *) linitial(raw))->stmt, SelectStmt))
		stmt = (SelectStmt *) ((RawStmt *) linitial(raw))->stmt;
	if (stmt != NULL && list_length(stmt->targetList) == 1)
		rt = (ResTarget *) linitial(stmt->targetList);
	if (rt == NULL || rt->name != NULL || stmt->op != SETOP_NONE ||
		stmt->fromClause || stmt->whereClause || stmt->groupClause ||
		stmt->havingClause || stmt->windowClause || stmt->sortClause ||
		stmt->limitOffset || stmt->limitCount || stmt->lockingClause ||
		stmt->withClause || stmt->distinctClause || stmt->intoClause ||
		stmt->valuesLists)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("\"%s\" for column \"%s\" is not a single SQL expression",
						which, column),
				 errhint("Write one expression over the %s row, such as lower(%s.name); no FROM, WHERE, alias or second statement.",
						 alias, alias)));

	pstate = make_parsestate(NULL);
	pstate->p_sourcetext = sql;
	nsitem = addRangeTableEntryForRelation(pstate, src, AccessShareLock,
										   makeAlias(alias, NIL), false, true);
	addNSItemToQuery(pstate, nsitem, true, true, true);
	expr = transformExpr(pstate, rt->val, EXPR_KIND_SELECT_TARGET);
	if (pstate->p_hasAggs || pstate->p_hasWindowFuncs ||
		pstate->p_hasTargetSRFs || pstate->p_hasSubLinks)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("\"%s\" for column \"%s\" uses a subquery, an aggregate, a window function or a set-returning function",
						which, column),
				 errhint("A mapping expression computes one value from one row; wrap a lookup in a function.")));
	assign_expr_collations(pstate, expr);

	*assign = coerce_to_target_type(pstate, copyObject(expr), exprType(expr),
									target->atttypid, target->atttypmod,
									COERCION_ASSIGNMENT, COERCE_IMPLICIT_CAST,
									-1);
	if (*assign == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("\"%s\" for column \"%s\" is of type %s, which cannot be assigned to column \"%s\" of type %s",
						which, column, format_type_be(exprType(expr)),
						NameStr(target->attname),
						format_type_with_typemod(target->atttypid, target->atttypmod)),
				 errhint("Add an explicit cast to the expression.")));

	pull_varattnos(expr, 1, &attrs);
	x = -1;
	while ((x = bms_next_member(attrs, x)) >= 0)
	{
		AttrNumber	attno = x + FirstLowInvalidHeapAttributeNumber;

		if (attno <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("\"%s\" for column \"%s\" reads a system column or the whole row",
							which, column),
					 errhint("Read the %s row's columns by name.", alias)));
		*src_attrs = bms_add_member(*src_attrs, attno);
	}
	*node = expr;

	MsPushPinnedPath();
	result = deparse_expression(expr,
								deparse_context_for(alias, RelationGetRelid(src)),
								true, false);
	MsPopPinnedPath();

	free_parsestate(pstate);
	error_context_stack = errcb.previous;
	return result;
}

/*
 * ms_assign_rename returns the tree of a plain rename: the source column,
 * coerced to the target column's type as an assignment would.  A rename
 * between types that do not cast is refused.
 */
static Node *
ms_assign_rename(Form_pg_attribute src, Form_pg_attribute dst,
				 const char *column)
{
	Node	   *assign = coerce_to_target_type(NULL,
											   (Node *) makeVar(1, src->attnum, src->atttypid,
																src->atttypmod, src->attcollation, 0),
											   src->atttypid, dst->atttypid, dst->atttypmod,
											   COERCION_ASSIGNMENT, COERCE_IMPLICIT_CAST,
											   -1);

	if (assign == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of type %s cannot be assigned to column \"%s\" of type %s",
						NameStr(src->attname), format_type_be(src->atttypid),
						NameStr(dst->attname), format_type_be(dst->atttypid)),
				 errcontext("mapping for column \"%s\"", column),
				 errhint("Map the column with \"up\" and \"down\" expressions that cast the value.")));
	return assign;
}

/*
 * ms_check_writable refuses target columns that PostgreSQL computes.
 */
static void
ms_check_writable(Relation rel, AttrNumber attno)
{
	Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), attno - 1);
	char	   *display = MsRelDisplayName(RelationGetRelid(rel));

	if (att->attgenerated)
		ereport(ERROR,
				(errcode(ERRCODE_GENERATED_ALWAYS),
				 errmsg("column \"%s\" of table \"%s\" is a generated column",
						NameStr(att->attname), display),
				 errhint("Leave it out of the mapping; PostgreSQL computes it.")));
	if (att->attidentity == ATTRIBUTE_IDENTITY_ALWAYS)
		ereport(ERROR,
				(errcode(ERRCODE_GENERATED_ALWAYS),
				 errmsg("column \"%s\" of table \"%s\" is GENERATED ALWAYS AS IDENTITY",
						NameStr(att->attname), display),
				 errhint("Run ALTER TABLE %s ALTER COLUMN %s SET GENERATED BY DEFAULT, so that rows from the other table keep their values.",
						 MsQualifiedRelName(RelationGetRelid(rel)),
						 quote_identifier(NameStr(att->attname)))));
}

/*
 * MsFindKeyIndex looks for a unique index that ON CONFLICT can use as
 * arbiter for exactly the given columns: valid, immediate, not partial, no
 * expressions.  It returns the index, and the equality operator of each
 * key column in eqops (in the order of attnos), or InvalidOid when there is
 * no such index.
 */
Oid
MsFindKeyIndex(Relation rel, int nkeys, const AttrNumber *attnos, Oid *eqops)
{
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	Oid			found = InvalidOid;

	foreach(lc, indexes)
	{
		Relation	idx = index_open(lfirst_oid(lc), AccessShareLock);
		Form_pg_index ind = idx->rd_index;
		bool		match = ind->indisunique && ind->indimmediate &&
			ind->indisvalid && ind->indnkeyatts == nkeys &&
			RelationGetIndexPredicate(idx) == NIL &&
			RelationGetIndexExpressions(idx) == NIL;

		for (int i = 0; match && i < nkeys; i++)
		{
			int			j;

			for (j = 0; j < nkeys; j++)
				if (ind->indkey.values[j] == attnos[i])
					break;
			if (j == nkeys || idx->rd_rel->relam != BTREE_AM_OID)
				match = false;
			else
			{
				eqops[i] = get_opfamily_member(idx->rd_opfamily[j],
											   idx->rd_opcintype[j],
											   idx->rd_opcintype[j],
											   BTEqualStrategyNumber);
				if (!OidIsValid(eqops[i]))
					match = false;
			}
		}
		index_close(idx, AccessShareLock);
		if (match)
		{
			found = lfirst_oid(lc);
			break;
		}
	}
	list_free(indexes);
	return found;
}

/*
 * ms_key_list_text joins key column names for messages.
 */
static char *
ms_key_list_text(int nkeys, char **names)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < nkeys; i++)
		appendStringInfo(&buf, "%s%s", i ? ", " : "", quote_identifier(names[i]));
	return buf.data;
}

/*
 * ms_add_target appends a target column to a direction, refusing a column
 * that two mappings would write.  "expr" is the expression's SQL over the
 * source alias, "node" its parsed tree, "assign" that tree coerced to the
 * column's type, "attrs" the source columns it reads.
 */
static void
ms_add_target(MsDirection *d, Relation dst, int dst_side, AttrNumber attno,
			  char *expr, Node *node, Node *assign, Bitmapset *attrs)
{
	MsTarget   *t;
	Form_pg_attribute att = TupleDescAttr(RelationGetDescr(dst), attno - 1);

	for (int i = 0; i < d->ntargets; i++)
		if (d->targets[i].attno == attno)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_COLUMN),
					 errmsg("%s column \"%s\" is written by two mappings",
							side_name[dst_side], NameStr(att->attname)),
					 errhint("Let one mapping write it; make the other one-way.")));
	t = &d->targets[d->ntargets++];
	t->column = pstrdup(NameStr(att->attname));
	t->attno = attno;
	t->expr = expr;
	t->node = node;
	t->assign = assign;
	t->reads_source = !bms_is_empty(attrs);
	t->is_key = false;
	d->src_attrs = bms_add_members(d->src_attrs, attrs);
}

/*
 * ms_column_var returns the tree of a plain reference to a source column.
 */
static Node *
ms_column_var(Form_pg_attribute att)
{
	return (Node *) makeVar(1, att->attnum, att->atttypid, att->atttypmod,
							att->attcollation, 0);
}

/*
 * MsPrimaryKeyColumns returns the names of the current table's primary key
 * columns: a link's key when none is given.
 */
List *
MsPrimaryKeyColumns(Relation current)
{
	Oid			pk = RelationGetPrimaryKeyIndex(current);
	Relation	idx;
	List	   *key = NIL;

	if (!OidIsValid(pk))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
				 errmsg("current table \"%s\" has no primary key",
						MsRelDisplayName(RelationGetRelid(current))),
				 errhint("Pass key => ARRAY['column', ...] naming columns that a unique index covers on both tables.")));
	idx = index_open(pk, AccessShareLock);
	for (int i = 0; i < idx->rd_index->indnkeyatts; i++)
		key = lappend(key, get_attname(RelationGetRelid(current),
									   idx->rd_index->indkey.values[i], false));
	index_close(idx, AccessShareLock);
	return key;
}

/*
 * MsCheckNotNullWritten refuses a table mailsync would insert rows into
 * while leaving a NOT NULL column without value: every insert would fail.
 * written lists the columns the inserts give a value.
 */
void
MsCheckNotNullWritten(Relation rel, int side, int nwritten,
					  const AttrNumber *written, const char *hint_fmt)
{
	TupleDesc	desc = RelationGetDescr(rel);

	for (int a = 0; a < desc->natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, a);
		bool		covered = false;

		if (att->attisdropped || !att->attnotnull || att->atthasdef ||
			att->attidentity || att->attgenerated)
			continue;
		for (int i = 0; i < nwritten && !covered; i++)
			covered = written[i] == att->attnum;
		if (!covered)
			ereport(ERROR,
					(errcode(ERRCODE_NOT_NULL_VIOLATION),
					 errmsg("column \"%s\" of %s table \"%s\" is NOT NULL without a default, and no mapping writes it",
							NameStr(att->attname), side_name[side],
							MsRelDisplayName(RelationGetRelid(rel))),
					 errhint(hint_fmt, NameStr(att->attname))));
	}
}

/*
 * ms_check_not_null_covered refuses a direction that would insert rows
 * with a NOT NULL column left without value.
 */
static void
ms_check_not_null_covered(const MsDirection *d, Relation dst, int dst_side)
{
	AttrNumber *written = palloc(sizeof(AttrNumber) * (d->ntargets + 1));

	for (int i = 0; i < d->ntargets; i++)
		written[i] = d->targets[i].attno;
	MsCheckNotNullWritten(dst, dst_side, d->ntargets, written,
						  dst_side == MS_CURRENT_SIDE ?
						  "Map it, for example \"%s\": {\"up\": \"mailsync.uuid_v7()\"} for a uuid, or give the column a default." :
						  "Map it with \"to\", give the column a default, or link with direction 'up'.");
}

/*
 * ms_append_json_field appends "name": "value" to a JSON object under
 * construction.
 */
static void
ms_append_json_field(StringInfo buf, bool *first, const char *name,
					 const char *value)
{
	if (value == NULL)
		return;
	if (!*first)
		appendStringInfoString(buf, ", ");
	*first = false;
	escape_json(buf, name);
	appendStringInfoString(buf, ": ");
	escape_json(buf, value);
}

/*
 * MsCompileLink validates a link definition and returns it compiled.
 *
 * "key" lists current-table key columns, or is NIL for the current table's
 * primary key.  Relations must be open and locked by the caller.  The
 * result is allocated in the current memory context.
 */
MsLinkDef *
MsCompileLink(const char *name, Relation legacy, Relation current,
			  Jsonb *columns, List *key, const char *direction)
{
	MsLinkDef  *def = palloc0(sizeof(MsLinkDef));
	Relation	rels[2] = {legacy, current};
	List	   *entries;
	ListCell   *lc;
	int			nentries;
	StringInfoData json;
	bool		first_entry = true;
	char	   *cur_hint;
	char	   *leg_hint;

	def->name = pstrdup(name);
	def->legacy = RelationGetRelid(legacy);
	def->current = RelationGetRelid(current);
	def->direction = pstrdup(direction);

	entries = ms_parse_columns(columns);
	nentries = list_length(entries);
	cur_hint = psprintf("The keys of \"columns\" name columns of the current table %s.",
						MsRelDisplayName(def->current));
	leg_hint = psprintf("Renames and \"to\" name columns of the legacy table %s.",
						MsRelDisplayName(def->legacy));

	for (int side = MS_UP; side <= MS_DOWN; side++)
	{
		MsDirection *d = &def->dir[side];

		d->enabled = strcmp(direction, "both") == 0 ||
			strcmp(direction, side == MS_UP ? "up" : "down") == 0;
		d->src_relid = side == MS_UP ? def->legacy : def->current;
		d->dst_relid = side == MS_UP ? def->current : def->legacy;
		d->src_alias = side_name[side == MS_UP ? MS_LEGACY_SIDE : MS_CURRENT_SIDE];
		d->targets = palloc0(sizeof(MsTarget) * nentries);
	}

	initStringInfo(&json);
	appendStringInfoChar(&json, '{');

	/* a list, document or join link: its own validation, renames beside */
	{
		MsMapEntry *shape = NULL;
		List	   *renames = NIL;
		List	   *shaped = NIL;
		const char *what;

		foreach(lc, entries)
		{
			MsMapEntry *e = (MsMapEntry *) lfirst(lc);

			if (e->shape == MS_SHAPE_ROWS)
				continue;
			if (shape != NULL && (e->shape != MS_SHAPE_JOIN || shape->shape != MS_SHAPE_JOIN))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("columns \"%s\" and \"%s\" are two shapes of one link", shape->column, e->column),
						 errhint("A link has at most one list or document mapping, and no other shape beside it; make a link for each.")));
			shape = e;
			shaped = lappend(shaped, list_make2(e->column, &e->spec));
		}
		if (shape != NULL)
		{
			what = MsShapeKindName(shape->shape);
			foreach(lc, entries)
			{
				MsMapEntry *e = (MsMapEntry *) lfirst(lc);

				if (e->shape != MS_SHAPE_ROWS)
					continue;
				if (e->rename == NULL)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("column \"%s\" is mapped by an expression in a %s link", e->column, what),
							 errhint("Beside a list, a document or joined columns, a link maps columns by name only.")));
				renames = lappend(renames, list_make2(e->column, e->rename));
				escape_json(&json, e->column);
				appendStringInfoString(&json, ": ");
				escape_json(&json, e->rename);
				appendStringInfoString(&json, ", ");
			}
			MsCompileShape(def, legacy, current, shape->shape, shaped,
						   renames, key, &json);
			appendStringInfoChar(&json, '}');
			def->columns = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
															  CStringGetDatum(json.data)));
			return def;
		}
	}

	foreach(lc, entries)
	{
		MsMapEntry *e = (MsMapEntry *) lfirst(lc);
		AttrNumber	cur_attno = MsLookupColumn(current, e->column,
												 MS_CURRENT_SIDE, cur_hint);
		Form_pg_attribute cur_att = TupleDescAttr(RelationGetDescr(current),
												  cur_attno - 1);

		if (!first_entry)
			appendStringInfoString(&json, ", ");
		first_entry = false;
		escape_json(&json, e->column);
		appendStringInfoString(&json, ": ");

		if (e->rename)
		{
			AttrNumber	leg_attno = MsLookupColumn(legacy, e->rename,
													 MS_LEGACY_SIDE, leg_hint);
			Form_pg_attribute leg_att = TupleDescAttr(RelationGetDescr(legacy),
													  leg_attno - 1);

			if (def->dir[MS_UP].enabled)
				ms_add_target(&def->dir[MS_UP], current, MS_CURRENT_SIDE,
							  cur_attno,
							  psprintf("legacy.%s", quote_identifier(e->rename)),
							  ms_column_var(leg_att),
							  ms_assign_rename(leg_att, cur_att, e->column),
							  bms_make_singleton(leg_attno));
			if (def->dir[MS_DOWN].enabled)
				ms_add_target(&def->dir[MS_DOWN], legacy, MS_LEGACY_SIDE,
							  leg_attno,
							  psprintf("current.%s", quote_identifier(e->column)),
							  ms_column_var(cur_att),
							  ms_assign_rename(cur_att, leg_att, e->column),
							  bms_make_singleton(cur_attno));
			escape_json(&json, e->rename);
			continue;
		}

		/* a transform: compile each expression it has */
		{
			bool		first = true;
			char	   *up_sql = NULL;
			char	   *down_sql = NULL;

			if ((strcmp(direction, "up") == 0 && !e->up) ||
				(strcmp(direction, "down") == 0 && !e->down))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("mapping for column \"%s\" has no \"%s\" expression, but the link's direction is '%s'",
								e->column, direction, direction),
						 errhint("Add \"%s\", or leave the column out of the mapping.",
								 direction)));

			if (e->up)
			{
				Node	   *node;
				Node	   *assign;
				Bitmapset  *attrs = NULL;

				up_sql = ms_compile_expr(e->up, legacy, MS_LEGACY_SIDE,
										 cur_att, e->column, "up",
										 &attrs, &node, &assign);
				if (def->dir[MS_UP].enabled)
					ms_add_target(&def->dir[MS_UP], current, MS_CURRENT_SIDE,
								  cur_attno, up_sql, node, assign, attrs);
			}
			if (e->down)
			{
				AttrNumber	to_attno = MsLookupColumn(legacy, e->to,
														MS_LEGACY_SIDE, leg_hint);
				Form_pg_attribute to_att = TupleDescAttr(RelationGetDescr(legacy),
														 to_attno - 1);
				Node	   *node;
				Node	   *assign;
				Bitmapset  *attrs = NULL;

				down_sql = ms_compile_expr(e->down, current, MS_CURRENT_SIDE,
										   to_att, e->column, "down",
										   &attrs, &node, &assign);
				if (def->dir[MS_DOWN].enabled)
					ms_add_target(&def->dir[MS_DOWN], legacy, MS_LEGACY_SIDE,
								  to_attno, down_sql, node, assign, attrs);
			}
			appendStringInfoChar(&json, '{');
			if (e->from)
			{
				Jsonb	   *map = JsonbValueToJsonb(&e->map);

				ms_append_json_field(&json, &first, "from", e->from);
				appendStringInfoString(&json, ", \"map\": ");
				appendStringInfoString(&json, JsonbToCString(NULL, &map->root, VARSIZE(map)));
			}
			else
			{
				ms_append_json_field(&json, &first, "up", up_sql);
				ms_append_json_field(&json, &first, "down", down_sql);
				ms_append_json_field(&json, &first, "to", e->to);
			}
			appendStringInfoChar(&json, '}');
		}
	}
	appendStringInfoChar(&json, '}');
	def->columns = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
													  CStringGetDatum(json.data)));

	/* the key: current-side columns, each mapped by name to a legacy column */
	if (key == NIL)
		key = MsPrimaryKeyColumns(current);

	def->nkeys = list_length(key);
	def->key = palloc(sizeof(char *) * def->nkeys);
	def->legacy_key = palloc(sizeof(char *) * def->nkeys);
	{
		AttrNumber *cur_keys = palloc(sizeof(AttrNumber) * def->nkeys);
		AttrNumber *leg_keys = palloc(sizeof(AttrNumber) * def->nkeys);
		Oid		   *eqops[2];
		Oid			keyidx[2];
		int			i = 0;

		foreach(lc, key)
		{
			char	   *col = (char *) lfirst(lc);
			MsMapEntry *entry = NULL;
			ListCell   *lc2;

			cur_keys[i] = MsLookupColumn(current, col, MS_CURRENT_SIDE,
										   "Key columns are columns of the current table.");
			for (int j = 0; j < i; j++)
				if (cur_keys[j] == cur_keys[i])
					ereport(ERROR,
							(errcode(ERRCODE_DUPLICATE_COLUMN),
							 errmsg("key column \"%s\" is named twice", col)));
			foreach(lc2, entries)
				if (strcmp(((MsMapEntry *) lfirst(lc2))->column, col) == 0)
					entry = (MsMapEntry *) lfirst(lc2);
			if (entry == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
						 errmsg("key column \"%s\" is not mapped", col),
						 errhint("Add \"%s\": \"<legacy column>\" to columns.", col)));
			if (entry->rename == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("key column \"%s\" is mapped by an expression", col),
						 errhint("Both tables share key values: map it by name, as \"%s\": \"<legacy column>\".",
								 col)));
			def->key[i] = pstrdup(get_attname(def->current, cur_keys[i], false));
			def->legacy_key[i] = entry->rename;
			leg_keys[i] = get_attnum(def->legacy, entry->rename);
			i++;
		}

		for (int side = MS_CURRENT_SIDE; side >= MS_LEGACY_SIDE; side--)
		{
			AttrNumber *attnos = side == MS_LEGACY_SIDE ? leg_keys : cur_keys;
			char	  **names = side == MS_LEGACY_SIDE ? def->legacy_key : def->key;

			eqops[side] = palloc(sizeof(Oid) * def->nkeys);
			keyidx[side] = MsFindKeyIndex(rels[side], def->nkeys, attnos, eqops[side]);
			for (int k = 0; k < def->nkeys; k++)
				if (!TupleDescAttr(RelationGetDescr(rels[side]), attnos[k] - 1)->attnotnull)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
							 errmsg("key column \"%s\" of %s table \"%s\" allows NULL",
									names[k], side_name[side],
									MsRelDisplayName(RelationGetRelid(rels[side]))),
							 errdetail("A row with a NULL key could not be found again on the other table."),
							 errhint("ALTER TABLE %s ALTER COLUMN %s SET NOT NULL, or link on NOT NULL columns.",
									 MsQualifiedRelName(RelationGetRelid(rels[side])),
									 quote_identifier(names[k]))));
			if (!OidIsValid(keyidx[side]))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
						 errmsg("no unique index on %s table \"%s\" covers exactly the key (%s)",
								side_name[side],
								MsRelDisplayName(RelationGetRelid(rels[side])),
								ms_key_list_text(def->nkeys, names)),
						 errhint("CREATE UNIQUE INDEX ON %s (%s); it must not be partial, deferrable or on expressions.",
								 MsQualifiedRelName(RelationGetRelid(rels[side])),
								 ms_key_list_text(def->nkeys, names))));
		}

		for (int side = MS_UP; side <= MS_DOWN; side++)
		{
			MsDirection *d = &def->dir[side];
			bool		up = side == MS_UP;

			d->nkeys = def->nkeys;
			d->src_key = up ? leg_keys : cur_keys;
			d->dst_key = up ? cur_keys : leg_keys;
			d->key_eqop = eqops[up ? MS_CURRENT_SIDE : MS_LEGACY_SIDE];
			d->dst_keyidx = keyidx[up ? MS_CURRENT_SIDE : MS_LEGACY_SIDE];
			d->src_keyidx = keyidx[up ? MS_LEGACY_SIDE : MS_CURRENT_SIDE];
			for (int t = 0; t < d->ntargets; t++)
				for (int k = 0; k < d->nkeys; k++)
					if (d->targets[t].attno == d->dst_key[k])
						d->targets[t].is_key = true;
		}
	}

	for (int side = MS_UP; side <= MS_DOWN; side++)
	{
		MsDirection *d = &def->dir[side];
		int			dst_side = side == MS_UP ? MS_CURRENT_SIDE : MS_LEGACY_SIDE;

		if (!d->enabled)
			continue;
		for (int t = 0; t < d->ntargets; t++)
			ms_check_writable(rels[dst_side], d->targets[t].attno);
		ms_check_not_null_covered(d, rels[dst_side], dst_side);
	}

	return def;
}
