/*-------------------------------------------------------------------------
 *
 * shape.c
 *	  Links whose rows do not pair one to one: a delimited list column and
 *	  its child rows, key/value rows and one jsonb document.
 *
 * A list link: the legacy table is the parent, one of its columns holds a
 * list of elements ("a@x.org, b@x.org"); the current table holds one row
 * per element, (parent key, element).  The link's key is the parent key.
 *
 * A document link: the legacy table holds one row per setting, (group
 * key, name, value text); the current table holds one row per group (or
 * one row, without a key) whose jsonb column is the document
 * {"app": {"key": value}}.  How a legacy name and value become a path and
 * a typed JSON value, and back, is the SQL of mailsync._doc_* in the
 * install script, driven by the link's normalised options.
 *
 * Every statement here is one SQL statement over the transition tables of
 * the firing statement (mailsync_old, mailsync_new), so the trigger runs a
 * shape link the way it runs the set-based path of a rows link: as the
 * other table's owner, under the pinned search path, with the link's own
 * triggers silent.  The same builders, fed whole tables instead of
 * transition tables, give verify and repair (which is also what backfill
 * runs), so a write, a check and a repair can never map a value two ways.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "nodes/makefuncs.h"
#include "utils/regproc.h"
#include "utils/varlena.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "parser/parse_coerce.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "mailsync.h"

static const char *const side_name[2] = {"legacy", "current"};

/*
 * MsShapeKindName returns the word a shape is written with in a mapping.
 */
const char *
MsShapeKindName(MsShapeKind kind)
{
	switch (kind)
	{
		case MS_SHAPE_LIST:
			return "list";
		case MS_SHAPE_DOCUMENT:
			return "document";
		case MS_SHAPE_JOIN:
			return "join";
		case MS_SHAPE_ROWS:
			break;
	}
	return "rows";
}

/*
 * MsShapeCopy makes the other table of a shape link match the source table
 * of side, as repair does, and returns how many rows it wrote.  The
 * statement runs once, or with retry as a backfill batch is retried when
 * it waits too long for a lock.
 */
int64
MsShapeCopy(const MsLinkDef *def, int side, bool retry)
{
	char	   *sql = MsShapeRepairSql(def, side);
	int64		written = 0;

	if (retry)
		MsSpiExecRetryLock(sql, SPI_OK_SELECT);
	else
		MsSpiExec(sql, SPI_OK_SELECT);
	for (int c = 1; c <= 3; c++)
	{
		bool		isnull;

		written += DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, c, &isnull));
	}
	return written;
}

/*
 * ms_spec_string returns a string field of a shape's object, or dflt.
 */
static char *
ms_spec_string(JsonbContainer *spec, const char *field, const char *column,
			   const char *dflt)
{
	JsonbValue *v = getKeyJsonValueFromContainer(spec, field, strlen(field), NULL);

	if (v == NULL)
		return dflt ? pstrdup(dflt) : NULL;
	if (v->type != jbvString || v->val.string.len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" in the mapping for column \"%s\" must be a non-empty string",
						field, column)));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * ms_check_fields refuses a field of a shape's object that it does not
 * know, listing those it does.
 */
static void
ms_check_fields(JsonbContainer *spec, const char *column, const char *const *known,
				const char *hint)
{
	JsonbIterator *it = JsonbIteratorInit(spec);
	JsonbIteratorToken tok;
	JsonbValue	k;

	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		bool		ok = false;
		char	   *field;

		if (tok != WJB_KEY)
			continue;
		field = pnstrdup(k.val.string.val, k.val.string.len);
		for (int i = 0; known[i] && !ok; i++)
			ok = strcmp(known[i], field) == 0;
		if (!ok)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("mapping for column \"%s\" has unknown key \"%s\"", column, field),
					 errhint("%s", hint)));
	}
}

/*
 * ms_check_column_type refuses a shape column of the wrong kind of type.
 */
static void
ms_check_column_type(Relation rel, AttrNumber attno, int side, bool want_jsonb,
					 const char *role)
{
	Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), attno - 1);
	bool		ok;

	if (want_jsonb)
		ok = att->atttypid == JSONBOID;
	else
		ok = TypeCategory(getBaseType(att->atttypid)) == TYPCATEGORY_STRING;
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of %s table \"%s\" is of type %s, but %s must be %s",
						NameStr(att->attname), side_name[side],
						MsRelDisplayName(RelationGetRelid(rel)),
						format_type_be(att->atttypid), role,
						want_jsonb ? "jsonb" : "text or varchar"),
				 errhint("Map a column of that type, or change the column's type.")));
}

/*
 * ms_check_shape_not_null refuses a table a shape link inserts rows into
 * while leaving a NOT NULL column without value.
 */
static void
ms_check_shape_not_null(Relation rel, int side, int nwritten,
						const AttrNumber *written)
{
	MsCheckNotNullWritten(rel, side, nwritten, written,
						  "Give \"%s\" a default, or link in the other direction only.");
}

/*
 * ms_resolve_key resolves the key of a shape link: each current key column,
 * named once, mapped by one of the renames (list_make2(current, legacy))
 * to a legacy column.  It fills in def's key names
 * and the attribute numbers cur_keys and leg_keys, which the caller sizes.
 */
static void
ms_resolve_key(MsLinkDef *def, Relation legacy, Relation current, List *key,
			   List *renames, AttrNumber *cur_keys, AttrNumber *leg_keys)
{
	ListCell   *lc;
	int			i = 0;

	def->nkeys = list_length(key);
	def->key = palloc(sizeof(char *) * (def->nkeys + 1));
	def->legacy_key = palloc(sizeof(char *) * (def->nkeys + 1));
	foreach(lc, key)
	{
		char	   *col = (char *) lfirst(lc);
		char	   *leg = NULL;
		ListCell   *lc2;

		foreach(lc2, renames)
			if (strcmp((char *) linitial((List *) lfirst(lc2)), col) == 0)
				leg = (char *) lsecond((List *) lfirst(lc2));
		cur_keys[i] = MsLookupColumn(current, col, MS_CURRENT_SIDE,
									 "Key columns are columns of the current table.");
		for (int j = 0; j < i; j++)
			if (cur_keys[j] == cur_keys[i])
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_COLUMN),
						 errmsg("key column \"%s\" is named twice", col)));
		if (leg == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
					 errmsg("key column \"%s\" is not mapped", col),
					 errhint("Add \"%s\": \"<legacy column>\" to columns.", col)));
		leg_keys[i] = MsLookupColumn(legacy, leg, MS_LEGACY_SIDE,
									 "Renames name columns of the legacy table.");
		def->key[i] = pstrdup(get_attname(def->current, cur_keys[i], false));
		def->legacy_key[i] = pstrdup(leg);
		i++;
	}
}

/*
 * ms_check_key_not_null refuses a key column that allows NULL on either
 * side: a row with a NULL key could not be found again on the other table.
 */
static void
ms_check_key_not_null(const MsLinkDef *def, Relation legacy, Relation current,
					  const AttrNumber *cur_keys, const AttrNumber *leg_keys)
{
	for (int i = 0; i < def->nkeys; i++)
		for (int side = MS_LEGACY_SIDE; side <= MS_CURRENT_SIDE; side++)
		{
			Relation	rel = side == MS_LEGACY_SIDE ? legacy : current;
			AttrNumber	attno = side == MS_LEGACY_SIDE ? leg_keys[i] : cur_keys[i];

			if (!TupleDescAttr(RelationGetDescr(rel), attno - 1)->attnotnull)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
						 errmsg("key column \"%s\" of %s table \"%s\" allows NULL",
								NameStr(TupleDescAttr(RelationGetDescr(rel), attno - 1)->attname),
								side_name[side], MsRelDisplayName(RelationGetRelid(rel))),
						 errhint("Set it NOT NULL, or link on NOT NULL columns.")));
		}
}

/*
 * ms_compile_join validates a link whose current table has columns that
 * live, on the legacy side, in a row of a third table the legacy row
 * references: {"join": "v1.objectdates", "via": "dates_id", "column":
 * "creation"} (column defaults to the current column's name).  Every
 * joined column of a link comes from one table through one column; the
 * other mappings are renames.
 */
static void
ms_compile_join(MsLinkDef *def, Relation legacy, Relation current,
				List *shaped, List *renames, List *key, StringInfo json)
{
	static const char *const join_fields[] = {"join", "via", "column", NULL};
	MsShape    *sh = palloc0(sizeof(MsShape));
	char	   *join_name = NULL;
	Relation	jrel;
	Oid			pk;
	AttrNumber	jkey;
	AttrNumber	via;
	AttrNumber *cur_written;
	AttrNumber *leg_written;
	AttrNumber *cur_keys;
	AttrNumber *leg_keys;
	int			ncur = 0;
	int			nleg = 0;
	ListCell   *lc;
	int			i = 0;
	bool		is_identity;
	bool		has_default;

	sh->kind = MS_SHAPE_JOIN;
	sh->njoin = list_length(shaped);
	sh->join_cols = palloc(sizeof(char *) * sh->njoin);
	sh->join_targets = palloc(sizeof(char *) * sh->njoin);
	foreach(lc, shaped)
	{
		const char *column = (const char *) linitial((List *) lfirst(lc));
		JsonbContainer *obj = ((JsonbValue *) lsecond((List *) lfirst(lc)))->val.binary.data;
		char	   *table;
		char	   *v;

		ms_check_fields(obj, column, join_fields,
						"A joined column is {\"join\": \"schema.table\", \"via\": \"legacy_column\", \"column\": \"its column\"}.");
		table = ms_spec_string(obj, "join", column, NULL);
		v = ms_spec_string(obj, "via", column, NULL);
		if (v == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("joined column \"%s\" has no \"via\"", column),
					 errhint("Name the legacy column that references the joined table's key, as \"via\": \"dates_id\".")));
		if (join_name == NULL)
		{
			join_name = table;
			sh->via = v;
		}
		else if (strcmp(join_name, table) != 0 || strcmp(sh->via, v) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("joined columns \"%s\" and \"%s\" come from different tables or through different columns",
							sh->join_targets[0], column),
					 errhint("A link joins one table through one column; link another pair for another.")));
		sh->join_targets[i] = pstrdup(column);
		sh->join_cols[i] = ms_spec_string(obj, "column", column, column);
		i++;
	}

	/* the joined table: named like a table in SQL, resolved now */
	sh->join_relid = RangeVarGetRelid(makeRangeVarFromNameList(stringToQualifiedNameList(join_name)),
									  NoLock, true);
	if (!OidIsValid(sh->join_relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("joined table \"%s\" does not exist", join_name),
				 errhint("Name it with its schema, as \"v1.objectdates\".")));
	if (sh->join_relid == def->legacy || sh->join_relid == def->current)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("joined table \"%s\" is a table of the link itself", join_name),
				 errhint("The joined table is a third table that the legacy row references.")));
	jrel = table_open(sh->join_relid, AccessShareLock);
	MsCheckLinkableTable(jrel, "joined");
	pk = RelationGetPrimaryKeyIndex(jrel);
	jkey = InvalidAttrNumber;
	if (OidIsValid(pk))
	{
		Relation	idx = index_open(pk, AccessShareLock);

		if (idx->rd_index->indnkeyatts == 1)
			jkey = idx->rd_index->indkey.values[0];
		index_close(idx, AccessShareLock);
	}
	if (jkey == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
				 errmsg("joined table \"%s\" has no primary key of one column",
						MsRelDisplayName(sh->join_relid)),
				 errhint("The legacy column \"%s\" must reference a one-column primary key.", sh->via)));
	sh->join_key = pstrdup(get_attname(sh->join_relid, jkey, false));
	sh->join_seq = MsColumnSequence(jrel, jkey, &is_identity, &has_default);
	if (!OidIsValid(sh->join_seq))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
				 errmsg("key column \"%s\" of joined table \"%s\" does not draw from a sequence",
						sh->join_key, MsRelDisplayName(sh->join_relid)),
				 errhint("Rows written through the current table need new joined rows: make the key serial or an identity column.")));
	for (i = 0; i < sh->njoin; i++)
	{
		MsLookupColumn(jrel, sh->join_cols[i], MS_LEGACY_SIDE,
					   "\"column\" names a column of the joined table.");
		MsLookupColumn(current, sh->join_targets[i], MS_CURRENT_SIDE,
					   "The keys of \"columns\" name columns of the current table.");
	}
	via = MsLookupColumn(legacy, sh->via, MS_LEGACY_SIDE,
						 "\"via\" names the legacy column that references the joined table.");
	if (strcmp(def->direction, "up") != 0)
	{
		AttrNumber *jwritten = palloc(sizeof(AttrNumber) * (sh->njoin + 1));

		for (i = 0; i < sh->njoin; i++)
			jwritten[i] = get_attnum(sh->join_relid, sh->join_cols[i]);
		jwritten[sh->njoin] = jkey;
		MsCheckNotNullWritten(jrel, MS_LEGACY_SIDE, sh->njoin + 1, jwritten,
							  "Rows written through the current table need new joined rows: give \"%s\" a default, or link with direction 'up'.");
	}
	table_close(jrel, NoLock);

	/* the key, as a rows link has it: default the current primary key */
	if (key == NIL)
		key = MsPrimaryKeyColumns(current);
	sh->ren_cur = palloc(sizeof(char *) * (list_length(renames) + 1));
	sh->ren_leg = palloc(sizeof(char *) * (list_length(renames) + 1));
	cur_written = palloc(sizeof(AttrNumber) * (list_length(renames) + sh->njoin + 1));
	leg_written = palloc(sizeof(AttrNumber) * (list_length(renames) + 2));
	foreach(lc, renames)
	{
		char	   *cur = (char *) linitial((List *) lfirst(lc));
		char	   *leg = (char *) lsecond((List *) lfirst(lc));
		bool		in_key = false;
		ListCell   *lc2;

		cur_written[ncur++] = MsLookupColumn(current, cur, MS_CURRENT_SIDE,
											 "The keys of \"columns\" name columns of the current table.");
		leg_written[nleg++] = MsLookupColumn(legacy, leg, MS_LEGACY_SIDE,
											 "Renames name columns of the legacy table.");
		if (leg_written[nleg - 1] == via)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("legacy column \"%s\" is both mapped and the reference to the joined table", leg)));
		foreach(lc2, key)
			in_key = in_key || strcmp((char *) lfirst(lc2), cur) == 0;
		if (!in_key)
		{
			sh->ren_cur[sh->nren] = cur;
			sh->ren_leg[sh->nren++] = leg;
		}
	}
	cur_keys = palloc(sizeof(AttrNumber) * (list_length(key) + 1));
	leg_keys = palloc(sizeof(AttrNumber) * (list_length(key) + 1));
	ms_resolve_key(def, legacy, current, key, renames, cur_keys, leg_keys);
	ms_check_key_not_null(def, legacy, current, cur_keys, leg_keys);
	for (int side = MS_LEGACY_SIDE; side <= MS_CURRENT_SIDE; side++)
	{
		Relation	rel = side == MS_LEGACY_SIDE ? legacy : current;
		Oid		   *eqops = palloc(sizeof(Oid) * (def->nkeys + 1));

		if (!OidIsValid(MsFindKeyIndex(rel, def->nkeys,
									   side == MS_LEGACY_SIDE ? leg_keys : cur_keys, eqops)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
					 errmsg("no unique index on %s table \"%s\" covers exactly the key",
							side_name[side], MsRelDisplayName(RelationGetRelid(rel))),
					 errhint("Create a unique index on exactly the key columns of %s.",
							 MsQualifiedRelName(RelationGetRelid(rel)))));
	}
	for (i = 0; i < sh->njoin; i++)
		cur_written[ncur++] = get_attnum(def->current, sh->join_targets[i]);
	leg_written[nleg++] = via;
	if (strcmp(def->direction, "down") != 0)
		ms_check_shape_not_null(current, MS_CURRENT_SIDE, ncur, cur_written);
	if (strcmp(def->direction, "up") != 0)
		ms_check_shape_not_null(legacy, MS_LEGACY_SIDE, nleg, leg_written);
	def->shape = sh;

	for (i = 0; i < sh->njoin; i++)
	{
		appendStringInfoString(json, i ? ", " : "");
		escape_json(json, sh->join_targets[i]);
		appendStringInfoString(json, ": {\"join\": ");
		escape_json(json, MsQualifiedRelName(sh->join_relid));
		appendStringInfoString(json, ", \"via\": ");
		escape_json(json, sh->via);
		appendStringInfoString(json, ", \"column\": ");
		escape_json(json, sh->join_cols[i]);
		appendStringInfoChar(json, '}');
	}
}

/*
 * MsCompileShape validates a list, document or join link and fills in def.
 * renames lists the other mappings, each list_make2(current, legacy);
 * they must be exactly the key.  The normalised mapping is appended to
 * json, an object under construction.
 */
void
MsCompileShape(MsLinkDef *def, Relation legacy, Relation current,
			   MsShapeKind kind, List *shaped, List *renames, List *key,
			   StringInfo json)
{
	static const char *const list_fields[] = {"list", "separator", NULL};
	static const char *const doc_fields[] = {"document", NULL};
	MemoryContext cxt = CurrentMemoryContext;
	MsShape    *shape = palloc0(sizeof(MsShape));
	const char *column = (const char *) linitial((List *) linitial(shaped));
	JsonbValue *spec = (JsonbValue *) lsecond((List *) linitial(shaped));
	JsonbContainer *obj = spec->val.binary.data;
	const char *what = MsShapeKindName(kind);
	AttrNumber	col_attno;
	AttrNumber *cur_keys;
	AttrNumber *leg_keys;
	AttrNumber	leg_col;
	AttrNumber	leg_value = InvalidAttrNumber;
	ListCell   *lc;
	int			i;

	if (kind == MS_SHAPE_JOIN)
	{
		ms_compile_join(def, legacy, current, shaped, renames, key, json);
		return;
	}
	shape->kind = kind;
	shape->column = pstrdup(column);
	col_attno = MsLookupColumn(current, column, MS_CURRENT_SIDE,
							   "The keys of \"columns\" name columns of the current table.");

	if (kind == MS_SHAPE_LIST)
	{
		ms_check_fields(obj, column, list_fields,
						"A list mapping takes \"list\" (the legacy column) and \"separator\".");
		shape->legacy_column = ms_spec_string(obj, "list", column, NULL);
		shape->separator = ms_spec_string(obj, "separator", column, ",");
		leg_col = MsLookupColumn(legacy, shape->legacy_column, MS_LEGACY_SIDE,
								 "\"list\" names the legacy column that holds the list.");
		ms_check_column_type(legacy, leg_col, MS_LEGACY_SIDE, false, "a list");
		ms_check_column_type(current, col_attno, MS_CURRENT_SIDE, false, "a list element");
		if (key == NIL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("list link \"%s\" has no key", def->name),
					 errhint("Pass key => ARRAY['parent_id'], the current columns that hold the parent row's key.")));
	}
	else
	{
		JsonbValue *opts = getKeyJsonValueFromContainer(obj, "document", 8, NULL);
		Jsonb	   *options;
		Oid			argtype = JSONBOID;
		Datum		arg;

		ms_check_fields(obj, column, doc_fields,
						"A document mapping is {\"document\": {options}}.");
		if (opts->type != jbvBinary || !JsonContainerIsObject(opts->val.binary.data))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("\"document\" in the mapping for column \"%s\" must be a JSON object", column),
					 errhint("Write \"%s\": {\"document\": {\"name\": \"name\", \"value\": \"value\"}}.", column)));
		shape->legacy_column = ms_spec_string(opts->val.binary.data, "name", column, "name");
		shape->value_column = ms_spec_string(opts->val.binary.data, "value", column, "value");
		leg_col = MsLookupColumn(legacy, shape->legacy_column, MS_LEGACY_SIDE,
								 "\"name\" names the legacy column of the setting's name.");
		leg_value = MsLookupColumn(legacy, shape->value_column, MS_LEGACY_SIDE,
								   "\"value\" names the legacy column of the setting's value.");
		if (leg_col == leg_value)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("document mapping for column \"%s\" uses legacy column \"%s\" as both name and value",
							column, shape->legacy_column)));
		ms_check_column_type(legacy, leg_col, MS_LEGACY_SIDE, false, "a setting's name");
		ms_check_column_type(legacy, leg_value, MS_LEGACY_SIDE, false, "a setting's value");
		ms_check_column_type(current, col_attno, MS_CURRENT_SIDE, true, "a document");

		/* the options are checked and completed by the SQL that uses them */
		options = JsonbValueToJsonb(opts);
		arg = JsonbPGetDatum(options);
		MsSpiExecWithArgs("SELECT mailsync._doc_config($1)::pg_catalog.text",
						  1, &argtype, &arg, NULL, SPI_OK_SELECT);
		/* SPI leaves its own context current: the result belongs to def's */
		MemoryContextSwitchTo(cxt);
		shape->config = pstrdup(SPI_getvalue(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1));
	}

	/* the other mappings are the key, each a rename */
	foreach(lc, renames)
	{
		List	   *pair = (List *) lfirst(lc);
		bool		in_key = false;
		ListCell   *lc2;

		foreach(lc2, key)
			in_key = in_key || strcmp((char *) lfirst(lc2), (char *) linitial(pair)) == 0;
		if (!in_key)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("column \"%s\" is mapped, but a %s link maps only its key besides the %s",
							(char *) linitial(pair), what, what),
					 errhint("Name it in key => ARRAY[...], or leave it out of the mapping (link it with a rows link of its own).")));
	}
	cur_keys = palloc(sizeof(AttrNumber) * (list_length(key) + 2));
	leg_keys = palloc(sizeof(AttrNumber) * (list_length(key) + 3));
	ms_resolve_key(def, legacy, current, key, renames, cur_keys, leg_keys);
	for (i = 0; i < def->nkeys; i++)
	{
		if (cur_keys[i] == col_attno)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("column \"%s\" is both a key and the %s", def->key[i], what)));
		if (leg_keys[i] == leg_col || leg_keys[i] == leg_value)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("legacy column \"%s\" is both a key and part of the %s",
							def->legacy_key[i], what)));
	}
	ms_check_key_not_null(def, legacy, current, cur_keys, leg_keys);

	/* the unique indexes the statements rely on */
	{
		Oid		   *eqops = palloc(sizeof(Oid) * (def->nkeys + 2));
		int			nleg = def->nkeys + (kind == MS_SHAPE_DOCUMENT ? 1 : 0);
		const char *leg_what = kind == MS_SHAPE_DOCUMENT ?
			psprintf("the key and the setting's name \"%s\"", shape->legacy_column) :
			pstrdup("the parent key");

		if (kind == MS_SHAPE_DOCUMENT)
		{
			leg_keys[def->nkeys] = leg_col;
			if (!TupleDescAttr(RelationGetDescr(legacy), leg_col - 1)->attnotnull)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
						 errmsg("column \"%s\" of legacy table \"%s\" allows NULL",
								shape->legacy_column, MsRelDisplayName(def->legacy)),
						 errhint("A setting's name identifies its row: set it NOT NULL.")));
		}
		if (!OidIsValid(MsFindKeyIndex(legacy, nleg, leg_keys, eqops)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
					 errmsg("no unique index on legacy table \"%s\" covers exactly %s",
							MsRelDisplayName(def->legacy), leg_what),
					 errhint("Create a unique index on exactly those columns of %s.",
							 MsQualifiedRelName(def->legacy))));
		if (kind == MS_SHAPE_DOCUMENT && def->nkeys > 0 &&
			!OidIsValid(MsFindKeyIndex(current, def->nkeys, cur_keys, eqops)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
					 errmsg("no unique index on current table \"%s\" covers exactly the key",
							MsRelDisplayName(def->current)),
					 errhint("One document a key: create a unique index on the key columns of %s.",
							 MsQualifiedRelName(def->current))));
	}

	/* rows mailsync inserts must get every NOT NULL column */
	cur_keys[def->nkeys] = col_attno;
	if (strcmp(def->direction, "down") != 0)
		ms_check_shape_not_null(current, MS_CURRENT_SIDE, def->nkeys + 1, cur_keys);
	if (kind == MS_SHAPE_DOCUMENT && strcmp(def->direction, "up") != 0)
	{
		leg_keys[def->nkeys + 1] = leg_value;
		ms_check_shape_not_null(legacy, MS_LEGACY_SIDE, def->nkeys + 2, leg_keys);
	}

	for (int side = MS_UP; side <= MS_DOWN; side++)
	{
		MsDirection *d = &def->dir[side];

		d->nkeys = def->nkeys;
		d->src_key = side == MS_UP ? leg_keys : cur_keys;
		d->dst_key = side == MS_UP ? cur_keys : leg_keys;
	}
	def->shape = shape;

	{
		Jsonb	   *stored = JsonbValueToJsonb(spec);

		escape_json(json, column);
		appendStringInfoString(json, ": ");
		appendStringInfoString(json, JsonbToCString(NULL, &stored->root, VARSIZE(stored)));
	}
}

/* ---------------------------------------------------------------------
 * SQL builders
 * ---------------------------------------------------------------------
 */

static char *ms_join_trigger_sql(const MsLinkDef *def, int side, MsEvent event);
static char *ms_join_up(const MsLinkDef *def, const char *rows, bool counts);
static char *ms_join_down(const MsLinkDef *def, const char *rows, bool all);
static char *ms_join_verify_sql(const MsLinkDef *def);
static char *ms_list_adopt(const MsLinkDef *def);

/*
 * ms_cols returns "a.x, a.y" for column names (alias may be NULL), or with
 * as "a.x AS <as><first>, a.y AS <as><first + 1>, ...".
 */
static char *
ms_cols(const char *alias, char **names, int n, const char *as, int first)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < n; i++)
	{
		appendStringInfoString(&buf, i ? ", " : "");
		if (alias)
			appendStringInfo(&buf, "%s.", alias);
		appendStringInfoString(&buf, quote_identifier(names[i]));
		if (as)
			appendStringInfo(&buf, " AS %s%d", as, first + i);
	}
	return buf.data;
}

/*
 * ms_key_cols returns "a.k1, a.k2" for key names, or with as_k the same
 * renamed k1..kn.
 */
static char *
ms_key_cols(const char *alias, char **names, int n, bool as_k)
{
	return ms_cols(alias, names, n, as_k ? "k" : NULL, 1);
}

/*
 * ms_k_cols returns "a.k1, a.k2": the renamed key columns of an alias.
 */
static char *
ms_k_cols(const char *alias, int n)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int k = 0; k < n; k++)
		appendStringInfo(&buf, "%s%s.k%d", k ? ", " : "", alias, k + 1);
	return buf.data;
}

/*
 * ms_key_match returns "l.x1 = r.k1 AND ..." matching the named columns of
 * alias l (names NULL: l.k1..) with the renamed columns of r, then "AND "
 * to prefix what follows; "" when there is no key.
 */
static char *
ms_key_match(const char *l, char **names, const char *r, int n)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int k = 0; k < n; k++)
	{
		if (names)
			appendStringInfo(&buf, "%s.%s = %s.k%d AND ", l,
							 quote_identifier(names[k]), r, k + 1);
		else
			appendStringInfo(&buf, "%s.k%d = %s.k%d AND ", l, k + 1, r, k + 1);
	}
	return buf.data;
}

/*
 * ms_source returns the relation of a transition table of the firing
 * statement, or, for an event that has none, an empty relation of the
 * same columns.  Callers give it an alias.
 */
static char *
ms_source(Oid relid, const char *enr, bool present)
{
	if (present)
		return pstrdup(enr);
	return psprintf("(SELECT * FROM ONLY %s WHERE false)", MsQualifiedRelName(relid));
}

static char *
ms_counts(const char *ins, const char *upd, const char *del)
{
	return psprintf(" SELECT %s, %s, %s",
					ins ? psprintf("(SELECT pg_catalog.count(*) FROM %s)", ins) : "0::pg_catalog.int8",
					upd ? psprintf("(SELECT pg_catalog.count(*) FROM %s)", upd) : "0::pg_catalog.int8",
					del ? psprintf("(SELECT pg_catalog.count(*) FROM %s)", del) : "0::pg_catalog.int8");
}

/*
 * ms_same_key returns "a.x1 = b.y1 AND ..." for two tables' key columns.
 */
static char *
ms_same_key(const char *a, char **anames, const char *b, char **bnames, int n)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int k = 0; k < n; k++)
		appendStringInfo(&buf, "%s.%s = %s.%s AND ", a, quote_identifier(anames[k]),
						 b, quote_identifier(bnames[k]));
	appendStringInfoString(&buf, "true");
	return buf.data;
}

/*
 * List, legacy to current: the parents in newrows get exactly the child
 * rows their lists name, and the keys of oldrows that newrows no longer
 * has lose theirs; with orphans, so do child rows whose parent key the
 * legacy table does not have.  changed_only skips the rows of newrows
 * that oldrows holds with the same key and list (an UPDATE of other
 * columns).
 */
static char *
ms_list_up(const MsLinkDef *def, const char *newrows, const char *oldrows,
		   bool changed_only, bool orphans)
{
	const MsShape *sh = def->shape;
	int			n = def->nkeys;
	char	  **lk = def->legacy_key;
	char	   *child = MsQualifiedRelName(def->current);
	const char *list = quote_identifier(sh->legacy_column);
	const char *elem = quote_identifier(sh->column);
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "WITH n AS MATERIALIZED (SELECT %s, legacy.%s::pg_catalog.text AS list FROM %s AS legacy",
					 ms_key_cols("legacy", lk, n, true), list, newrows);
	if (changed_only)
		appendStringInfo(&buf, " WHERE NOT EXISTS (SELECT FROM %s AS o WHERE %s AND o.%s IS NOT DISTINCT FROM legacy.%s)",
						 oldrows, ms_same_key("o", lk, "legacy", lk, n), list, list);
	appendStringInfo(&buf, "), s AS MATERIALIZED (SELECT %s, e.elem, e.ord FROM n "
					 "CROSS JOIN LATERAL mailsync._list_elements(n.list, %s) AS e)",
					 ms_k_cols("n", n), quote_literal_cstr(sh->separator));
	appendStringInfo(&buf, ", p AS MATERIALIZED (SELECT %s FROM n UNION SELECT %s FROM %s AS o "
					 "WHERE NOT EXISTS (SELECT FROM %s AS x WHERE %s)",
					 ms_k_cols("n", n), ms_key_cols("o", lk, n, true), oldrows,
					 newrows, ms_same_key("x", lk, "o", lk, n));
	if (orphans)
		appendStringInfo(&buf, " UNION SELECT %s FROM ONLY %s AS c WHERE NOT EXISTS "
						 "(SELECT FROM ONLY %s AS l WHERE %s)",
						 ms_key_cols("c", def->key, n, true), child,
						 MsQualifiedRelName(def->legacy), ms_same_key("l", lk, "c", def->key, n));
	appendStringInfo(&buf, "), del AS (DELETE FROM ONLY %s AS t USING p WHERE %sNOT EXISTS "
					 "(SELECT FROM s WHERE %ss.elem = t.%s::pg_catalog.text) RETURNING 1)",
					 child, ms_key_match("t", def->key, "p", n),
					 ms_key_match("t", def->key, "s", n), elem);
	appendStringInfo(&buf, ", ins AS (INSERT INTO %s (%s, %s) SELECT %s, s.elem FROM s "
					 "WHERE NOT EXISTS (SELECT FROM ONLY %s AS t WHERE %st.%s::pg_catalog.text = s.elem) "
					 "ORDER BY %s, s.ord RETURNING 1)",
					 child, ms_key_cols(NULL, def->key, n, false), elem,
					 ms_k_cols("s", n), child, ms_key_match("t", def->key, "s", n), elem,
					 ms_k_cols("s", n));
	appendStringInfoString(&buf, ms_counts("ins", NULL, "del"));
	return buf.data;
}

/*
 * List, legacy to current, for new parent rows: their elements get child
 * rows, and child rows that were there before the parent (written through
 * the current table, waiting for it) join its list instead of being
 * deleted.
 */
static char *
ms_list_adopt(const MsLinkDef *def)
{
	const MsShape *sh = def->shape;
	int			n = def->nkeys;
	char	  **lk = def->legacy_key;
	char	   *child = MsQualifiedRelName(def->current);
	const char *list = quote_identifier(sh->legacy_column);
	const char *elem = quote_identifier(sh->column);
	char	   *sep = quote_literal_cstr(sh->separator);
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "INSERT INTO %s (%s, %s) SELECT %s, e.elem FROM %s AS legacy "
					 "CROSS JOIN LATERAL mailsync._list_elements(legacy.%s::pg_catalog.text, %s) AS e "
					 "WHERE NOT EXISTS (SELECT FROM ONLY %s AS t WHERE %s AND t.%s::pg_catalog.text = e.elem) "
					 "ORDER BY %s, e.ord; ",
					 child, ms_key_cols(NULL, def->key, n, false), elem,
					 ms_key_cols("legacy", lk, n, false), MS_NEW_TABLE, list, sep,
					 child, ms_same_key("t", def->key, "legacy", lk, n), elem,
					 ms_key_cols("legacy", lk, n, false));
	appendStringInfo(&buf, "UPDATE ONLY %s AS t SET %s = x.list FROM (SELECT %s, mailsync._list_merge(l.%s::pg_catalog.text, %s, "
					 "ARRAY(SELECT e.elem FROM mailsync._list_elements(l.%s::pg_catalog.text, %s) AS e ORDER BY e.ord) "
					 "OPERATOR(pg_catalog.||) ARRAY(SELECT c.%s::pg_catalog.text FROM ONLY %s AS c WHERE %s ORDER BY c.%s)) AS list "
					 "FROM %s AS l) AS x WHERE %s AND t.%s::pg_catalog.text IS DISTINCT FROM x.list",
					 MsQualifiedRelName(def->legacy), list, ms_key_cols("l", lk, n, true), list, sep,
					 list, sep, elem, child, ms_same_key("c", def->key, "l", lk, n), elem,
					 MS_NEW_TABLE, psprintf("%strue", ms_key_match("t", lk, "x", n)), list);
	return buf.data;
}

/*
 * List, current to legacy: each parent of a key in newrows or oldrows gets
 * the list of its child rows, the elements it had keeping their places.
 * The parents are locked first, in key order: the list is then read under
 * a snapshot that has every committed child row of theirs.
 */
static char *
ms_list_down(const MsLinkDef *def, const char *newrows, const char *oldrows,
			 bool all)
{
	const MsShape *sh = def->shape;
	int			n = def->nkeys;
	char	   *parent = MsQualifiedRelName(def->legacy);
	char	   *child = MsQualifiedRelName(def->current);
	const char *list = quote_identifier(sh->legacy_column);
	const char *elem = quote_identifier(sh->column);
	char	   *keys;
	StringInfoData buf;
	StringInfoData children;

	keys = all ? psprintf("SELECT %s FROM ONLY %s AS l", ms_key_cols("l", def->legacy_key, n, true), parent) :
		psprintf("SELECT %s FROM %s AS current UNION SELECT %s FROM %s AS current",
				 ms_key_cols("current", def->key, n, true), newrows,
				 ms_key_cols("current", def->key, n, true), oldrows);
	initStringInfo(&children);
	appendStringInfo(&children, "mailsync._list_merge(t.%s::pg_catalog.text, %s, "
					 "ARRAY(SELECT c.%s::pg_catalog.text FROM ONLY %s AS c WHERE ",
					 list, quote_literal_cstr(sh->separator), elem, child);
	for (int k = 0; k < n; k++)
		appendStringInfo(&children, "c.%s = t.%s AND ", quote_identifier(def->key[k]),
						 quote_identifier(def->legacy_key[k]));
	appendStringInfo(&children, "true ORDER BY c.%s))", elem);

	initStringInfo(&buf);
	if (!all)
	{
		appendStringInfo(&buf, "SELECT FROM ONLY %s AS t WHERE (%s) IN (%s) ORDER BY %s FOR NO KEY UPDATE; ",
						 parent, ms_key_cols("t", def->legacy_key, n, false), keys,
						 ms_key_cols("t", def->legacy_key, n, false));
	}
	appendStringInfo(&buf, "WITH upd AS (UPDATE ONLY %s AS t SET %s = %s WHERE (%s) IN (%s) "
					 "AND t.%s::pg_catalog.text IS DISTINCT FROM %s RETURNING 1)",
					 parent, list, children.data,
					 ms_key_cols("t", def->legacy_key, n, false), keys,
					 list, children.data);
	appendStringInfoString(&buf, ms_counts(NULL, "upd", NULL));
	return buf.data;
}

/*
 * ms_doc_flat returns a FROM item of (k1.., name, value) from legacy rows
 * (legacy true: the rows whose name maps) or from documents (flattened).
 */
static char *
ms_doc_flat(const MsLinkDef *def, const char *rows, bool legacy, const char *cfg)
{
	const MsShape *sh = def->shape;
	int			n = def->nkeys;

	if (legacy)
		return psprintf("(SELECT %s%slegacy.%s::pg_catalog.text AS name, legacy.%s::pg_catalog.text AS value, "
						"NULL::pg_catalog.jsonb AS raw FROM %s AS legacy WHERE mailsync._doc_path(%s, legacy.%s::pg_catalog.text) IS NOT NULL)",
						ms_key_cols("legacy", def->legacy_key, n, true), n ? ", " : "",
						quote_identifier(sh->legacy_column), quote_identifier(sh->value_column),
						rows, cfg, quote_identifier(sh->legacy_column));
	return psprintf("(SELECT %s%sf.name, f.value, f.raw FROM %s AS current "
					"CROSS JOIN LATERAL mailsync._doc_flatten(%s, current.%s) AS f)",
					ms_key_cols("current", def->key, n, true), n ? ", " : "",
					rows, cfg, quote_identifier(sh->column));
}

/*
 * ms_doc_changes returns the FROM item of the settings on which the
 * flattened rows o and n differ: (k1.., name, value, gone), value being
 * n's and gone telling that n lacks it.
 */
static char *
ms_doc_changes(const MsLinkDef *def, const char *o, const char *n_)
{
	int			n = def->nkeys;
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "(SELECT ");
	for (int k = 0; k < n; k++)
		appendStringInfo(&buf, "COALESCE(n.k%d, o.k%d) AS k%d, ", k + 1, k + 1, k + 1);
	appendStringInfo(&buf, "COALESCE(n.name, o.name) AS name, n.value, n.name IS NULL AS gone "
					 "FROM %s AS o FULL JOIN %s AS n ON %so.name = n.name "
					 "WHERE o.name IS NULL OR n.name IS NULL OR o.value IS DISTINCT FROM n.value)",
					 o, n_, ms_key_match("o", NULL, "n", n));
	return buf.data;
}

/*
 * ms_doc_raw_changes returns the FROM item of the settings on which the
 * documents of oldrows and newrows differ, as ms_doc_changes does; the
 * entries are compared as JSON first, so that only the changed ones are
 * mapped to legacy names and text.
 */
static char *
ms_doc_raw_changes(const MsLinkDef *def, const char *oldrows, const char *newrows,
				   const char *cfg)
{
	int			n = def->nkeys;
	const char *doc = quote_identifier(def->shape->column);
	StringInfoData buf;
	char	   *raw[2];

	for (int i = 0; i < 2; i++)
		raw[i] = psprintf("(SELECT %s%sa.key AS app, e.key, e.value AS raw FROM %s AS current "
						  "CROSS JOIN LATERAL pg_catalog.jsonb_each(CASE WHEN pg_catalog.jsonb_typeof(current.%s) = 'object' "
						  "THEN current.%s ELSE '{}' END) AS a "
						  "CROSS JOIN LATERAL pg_catalog.jsonb_each(CASE WHEN pg_catalog.jsonb_typeof(a.value) = 'object' "
						  "THEN a.value ELSE '{}' END) AS e)",
						  ms_key_cols("current", def->key, n, true), n ? ", " : "",
						  i == 0 ? oldrows : newrows, doc, doc);
	initStringInfo(&buf);
	appendStringInfo(&buf, "(SELECT %s%sx.name, mailsync._doc_encode(%s, x.name, x.raw) AS value, x.gone FROM (SELECT ",
					 ms_k_cols("x", n), n ? ", " : "", cfg);
	for (int k = 0; k < n; k++)
		appendStringInfo(&buf, "COALESCE(n.k%d, o.k%d) AS k%d, ", k + 1, k + 1, k + 1);
	appendStringInfo(&buf, "mailsync._doc_name(%s, COALESCE(n.app, o.app), COALESCE(n.key, o.key)) AS name, "
					 "n.raw, n.app IS NULL AS gone FROM %s AS o FULL JOIN %s AS n ON %so.app = n.app AND o.key = n.key "
					 "WHERE o.app IS NULL OR n.app IS NULL OR o.raw IS DISTINCT FROM n.raw) AS x WHERE x.name IS NOT NULL)",
					 cfg, raw[0], raw[1], ms_key_match("o", NULL, "n", n));
	return buf.data;
}

/*
 * Document, current to legacy: the legacy rows become what the changes
 * say, inserted, rewritten or deleted.
 */
static char *
ms_doc_down(const MsLinkDef *def, const char *changes)
{
	const MsShape *sh = def->shape;
	int			n = def->nkeys;
	char	   *legacy = MsQualifiedRelName(def->legacy);
	const char *name = quote_identifier(sh->legacy_column);
	const char *value = quote_identifier(sh->value_column);
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "WITH ch AS MATERIALIZED %s, "
					 "del AS (DELETE FROM ONLY %s AS t USING ch WHERE ch.gone AND %st.%s = ch.name RETURNING 1), "
					 "ins AS (INSERT INTO %s AS t (%s%s%s, %s) SELECT %s%sch.name, ch.value FROM ch WHERE NOT ch.gone "
					 "ON CONFLICT (%s%s%s) DO UPDATE SET %s = EXCLUDED.%s WHERE t.%s IS DISTINCT FROM EXCLUDED.%s "
					 "RETURNING t.xmax OPERATOR(pg_catalog.=) 0 AS fresh)"
					 " SELECT (SELECT pg_catalog.count(*) FROM ins WHERE fresh), "
					 "(SELECT pg_catalog.count(*) FROM ins WHERE NOT fresh), (SELECT pg_catalog.count(*) FROM del)",
					 changes, legacy, ms_key_match("t", def->legacy_key, "ch", n), name,
					 legacy, ms_key_cols(NULL, def->legacy_key, n, false), n ? ", " : "", name, value,
					 ms_k_cols("ch", n), n ? ", " : "",
					 ms_key_cols(NULL, def->legacy_key, n, false), n ? ", " : "", name,
					 value, value, value, value);
	return buf.data;
}

/*
 * Document, legacy to current: each group's document gets the settings of
 * newrows set and those of oldrows that newrows no longer has removed; a
 * group without a document row gets one.  The document is patched from
 * the row being updated, so that two writers of one document compose.
 */
static char *
ms_doc_up(const MsLinkDef *def, const char *newrows, const char *oldrows,
		  const char *cfg)
{
	const MsShape *sh = def->shape;
	int			n = def->nkeys;
	char	   *current = MsQualifiedRelName(def->current);
	const char *doc = quote_identifier(sh->column);
	const char *name = quote_identifier(sh->legacy_column);
	const char *value = quote_identifier(sh->value_column);
	char	   *patch;
	StringInfoData buf;

	initStringInfo(&buf);

	/*
	 * One document for the whole table: whoever creates it holds a lock
	 * until commit, and the statement after it, with a new snapshot, finds
	 * the row another session created meanwhile and patches it.
	 */
	if (n == 0)
		appendStringInfo(&buf, "SELECT pg_catalog.pg_advisory_xact_lock(%d, %d) WHERE NOT EXISTS (SELECT FROM ONLY %s); ",
						 MS_ADVISORY_CLASS, (int32) def->current, current);
	appendStringInfo(&buf, "WITH s AS (SELECT %s%slegacy.%s::pg_catalog.text AS n, legacy.%s::pg_catalog.text AS v, false AS del FROM %s AS legacy "
					 "UNION ALL SELECT %s%so.%s::pg_catalog.text, NULL, true FROM %s AS o WHERE NOT EXISTS "
					 "(SELECT FROM %s AS legacy WHERE ",
					 ms_key_cols("legacy", def->legacy_key, n, true), n ? ", " : "", name, value, newrows,
					 ms_key_cols("o", def->legacy_key, n, true), n ? ", " : "", name,
					 oldrows, newrows);
	for (int k = 0; k < n; k++)
		appendStringInfo(&buf, "legacy.%s = o.%s AND ", quote_identifier(def->legacy_key[k]),
						 quote_identifier(def->legacy_key[k]));
	appendStringInfo(&buf, "legacy.%s = o.%s)), ", name, name);
	appendStringInfo(&buf, "p AS (SELECT %s%spg_catalog.jsonb_object_agg(s.n, s.v) FILTER (WHERE NOT s.del) AS sets, "
					 "pg_catalog.array_agg(s.n) FILTER (WHERE s.del) AS dels FROM s%s%s)",
					 ms_k_cols("s", n), n ? ", " : "", n ? " GROUP BY " : "", ms_k_cols("s", n));
	patch = psprintf("mailsync._doc_patch(%s, t.%s, p.sets, p.dels)", cfg, doc);
	appendStringInfo(&buf, ", upd AS (UPDATE ONLY %s AS t SET %s = %s FROM p WHERE %st.%s IS DISTINCT FROM %s RETURNING 1)",
					 current, doc, patch, ms_key_match("t", def->key, "p", n), doc, patch);
	appendStringInfo(&buf, ", ins AS (INSERT INTO %s AS t (%s%s%s) SELECT %s%smailsync._doc_patch(%s, NULL, p.sets, NULL) "
					 "FROM p WHERE p.sets IS NOT NULL AND NOT EXISTS (SELECT FROM ONLY %s AS t WHERE %strue)",
					 current, ms_key_cols(NULL, def->key, n, false), n ? ", " : "", doc,
					 ms_k_cols("p", n), n ? ", " : "", cfg, current,
					 ms_key_match("t", def->key, "p", n));
	if (n > 0)
		appendStringInfo(&buf, " ON CONFLICT (%s) DO UPDATE SET %s = mailsync._doc_merge(t.%s, EXCLUDED.%s)",
						 ms_key_cols(NULL, def->key, n, false), doc, doc, doc);
	appendStringInfoString(&buf, " RETURNING 1)");
	appendStringInfoString(&buf, ms_counts("ins", "upd", NULL));
	return buf.data;
}

static char *
ms_cfg(const MsLinkDef *def)
{
	return psprintf("CAST(%s AS pg_catalog.jsonb)", quote_literal_cstr(def->shape->config));
}

/*
 * MsShapeTriggerSql returns what the trigger of a shape link runs for one
 * event on the source table of side, over the statement's transition
 * tables.  It returns three counts: rows inserted, updated, deleted.
 */
char *
MsShapeTriggerSql(const MsLinkDef *def, int side, MsEvent event)
{
	const MsShape *sh = def->shape;
	Oid			src = side == MS_UP ? def->legacy : def->current;
	bool		has_new = event == MS_EVENT_INSERT || event == MS_EVENT_UPDATE;
	bool		has_old = event == MS_EVENT_UPDATE || event == MS_EVENT_DELETE;
	char	   *newrows = ms_source(src, MS_NEW_TABLE, has_new);
	char	   *oldrows = ms_source(src, MS_OLD_TABLE, has_old);
	char	   *cfg = sh->kind == MS_SHAPE_DOCUMENT ? ms_cfg(def) : NULL;

	if (sh->kind == MS_SHAPE_JOIN)
		return ms_join_trigger_sql(def, side, event);
	if (event == MS_EVENT_TRUNCATE)
	{
		if (sh->kind == MS_SHAPE_LIST && side == MS_UP)
			return psprintf("DELETE FROM ONLY %s", MsQualifiedRelName(def->current));
		if (sh->kind == MS_SHAPE_LIST)
			return psprintf("UPDATE ONLY %s AS t SET %s = mailsync._list_merge(t.%s::pg_catalog.text, %s, '{}') "
							"WHERE t.%s::pg_catalog.text IS DISTINCT FROM mailsync._list_merge(t.%s::pg_catalog.text, %s, '{}')",
							MsQualifiedRelName(def->legacy), quote_identifier(sh->legacy_column),
							quote_identifier(sh->legacy_column), quote_literal_cstr(sh->separator),
							quote_identifier(sh->legacy_column), quote_identifier(sh->legacy_column),
							quote_literal_cstr(sh->separator));
		if (side == MS_UP)
			return psprintf("UPDATE ONLY %s AS t SET %s = mailsync._doc_strip(%s, t.%s) "
							"WHERE t.%s IS DISTINCT FROM mailsync._doc_strip(%s, t.%s)",
							MsQualifiedRelName(def->current), quote_identifier(sh->column),
							cfg, quote_identifier(sh->column), quote_identifier(sh->column),
							cfg, quote_identifier(sh->column));
		return psprintf("DELETE FROM ONLY %s AS t WHERE mailsync._doc_path(%s, t.%s::pg_catalog.text) IS NOT NULL",
						MsQualifiedRelName(def->legacy), cfg,
						quote_identifier(sh->legacy_column));
	}

	if (sh->kind == MS_SHAPE_LIST && side == MS_UP && event == MS_EVENT_INSERT)
		return ms_list_adopt(def);
	if (sh->kind == MS_SHAPE_LIST)
		return side == MS_UP ?
			ms_list_up(def, newrows, oldrows, event == MS_EVENT_UPDATE, false) :
			ms_list_down(def, newrows, oldrows, false);
	if (side == MS_UP)
		return ms_doc_up(def, newrows, oldrows, cfg);
	return ms_doc_down(def, ms_doc_raw_changes(def, oldrows, newrows, cfg));
}

/*
 * MsShapeRepairSql returns the statement that makes the other table match
 * the source table of side, whole: what repair and backfill run.
 */
char *
MsShapeRepairSql(const MsLinkDef *def, int side)
{
	const MsShape *sh = def->shape;
	char	   *legacy = psprintf("ONLY %s", MsQualifiedRelName(def->legacy));
	char	   *current = psprintf("ONLY %s", MsQualifiedRelName(def->current));
	char	   *none = ms_source(def->legacy, NULL, false);

	if (sh->kind == MS_SHAPE_JOIN)
		return side == MS_UP ? ms_join_up(def, legacy, true) :
			ms_join_down(def, current, true);

	if (sh->kind == MS_SHAPE_LIST)
		return side == MS_UP ? ms_list_up(def, legacy, none, false, true) :
			ms_list_down(def, NULL, NULL, true);
	if (side == MS_DOWN)
	{
		char	   *cfg = ms_cfg(def);

		return ms_doc_down(def, ms_doc_changes(def, ms_doc_flat(def, legacy, true, cfg),
											   ms_doc_flat(def, current, false, cfg)));
	}

	/* legacy to current: every document rebuilt from the legacy rows */
	{
		int			n = def->nkeys;
		char	   *cfg = ms_cfg(def);
		char	   *cur = MsQualifiedRelName(def->current);
		const char *doc = quote_identifier(sh->column);
		const char *name = quote_identifier(sh->legacy_column);
		const char *value = quote_identifier(sh->value_column);
		char	   *rebuilt;
		StringInfoData buf;
		StringInfoData sets;

		initStringInfo(&sets);
		appendStringInfo(&sets, "(SELECT p.sets FROM p WHERE %strue)",
						 ms_key_match("t", def->key, "p", n));
		rebuilt = psprintf("mailsync._doc_patch(%s, mailsync._doc_strip(%s, t.%s), %s, NULL)",
						   cfg, cfg, doc, sets.data);
		initStringInfo(&buf);
		appendStringInfo(&buf, "WITH p AS MATERIALIZED (SELECT %s%spg_catalog.jsonb_object_agg(legacy.%s, legacy.%s) AS sets "
						 "FROM %s AS legacy WHERE mailsync._doc_path(%s, legacy.%s::pg_catalog.text) IS NOT NULL%s%s)",
						 ms_key_cols("legacy", def->legacy_key, n, true), n ? ", " : "",
						 name, value, legacy, cfg, name,
						 n ? " GROUP BY " : "", ms_key_cols("legacy", def->legacy_key, n, false));
		appendStringInfo(&buf, ", upd AS (UPDATE ONLY %s AS t SET %s = %s WHERE t.%s IS DISTINCT FROM %s RETURNING 1)",
						 cur, doc, rebuilt, doc, rebuilt);
		appendStringInfo(&buf, ", ins AS (INSERT INTO %s (%s%s%s) SELECT %s%smailsync._doc_patch(%s, NULL, p.sets, NULL) "
						 "FROM p WHERE p.sets IS NOT NULL AND NOT EXISTS (SELECT FROM ONLY %s AS t WHERE %strue) RETURNING 1)",
						 cur, ms_key_cols(NULL, def->key, n, false), n ? ", " : "", doc,
						 ms_k_cols("p", n), n ? ", " : "", cfg, cur,
						 ms_key_match("t", def->key, "p", n));
		appendStringInfoString(&buf, ms_counts("ins", "upd", NULL));
		return buf.data;
	}
}

/*
 * MsShapeVerifySql returns verify's query for a shape link: the key (with
 * the setting's name for a document), the problem, and each side's value:
 * for a list, its elements, sorted; for a document, the setting's value as
 * legacy stores it, and on the current side its path and JSON value.
 */
char *
MsShapeVerifySql(const MsLinkDef *def)
{
	const MsShape *sh = def->shape;
	int			n = def->nkeys;
	char	   *legacy = psprintf("ONLY %s", MsQualifiedRelName(def->legacy));
	char	   *current = psprintf("ONLY %s", MsQualifiedRelName(def->current));
	StringInfoData key;
	StringInfoData buf;

	if (sh->kind == MS_SHAPE_JOIN)
		return ms_join_verify_sql(def);
	initStringInfo(&key);
	appendStringInfoString(&key, "pg_catalog.jsonb_build_object(");
	for (int k = 0; k < n; k++)
		appendStringInfo(&key, "%s%s, COALESCE(l.k%d, c.k%d)", k ? ", " : "",
						 quote_literal_cstr(def->key[k]), k + 1, k + 1);

	initStringInfo(&buf);
	if (sh->kind == MS_SHAPE_LIST)
	{
		char	   *col = quote_literal_cstr(sh->column);

		appendStringInfo(&buf, "SELECT %s), CASE WHEN c.k1 IS NULL THEN 'missing in current' "
						 "WHEN l.k1 IS NULL THEN 'missing in legacy' ELSE 'differs' END, "
						 "CASE WHEN l.k1 IS NOT NULL THEN pg_catalog.jsonb_build_object(%s, l.elems) END, "
						 "CASE WHEN c.k1 IS NOT NULL THEN pg_catalog.jsonb_build_object(%s, c.elems) END "
						 "FROM (SELECT * FROM (SELECT %s, ARRAY(SELECT e.elem FROM mailsync._list_elements(legacy.%s::pg_catalog.text, %s) AS e ORDER BY e.elem) AS elems FROM %s AS legacy) AS x "
						 "WHERE pg_catalog.cardinality(x.elems) > 0) AS l "
						 "FULL JOIN (SELECT %s, pg_catalog.array_agg(current.%s::pg_catalog.text ORDER BY current.%s::pg_catalog.text) AS elems FROM %s AS current GROUP BY %s) AS c "
						 "ON %strue "
						 "WHERE l.k1 IS NULL OR c.k1 IS NULL OR l.elems <> c.elems ORDER BY 1",
						 key.data, col, col,
						 ms_key_cols("legacy", def->legacy_key, n, true),
						 quote_identifier(sh->legacy_column), quote_literal_cstr(sh->separator), legacy,
						 ms_key_cols("current", def->key, n, true),
						 quote_identifier(sh->column), quote_identifier(sh->column), current,
						 ms_key_cols("current", def->key, n, false),
						 ms_key_match("l", NULL, "c", n));
		return buf.data;
	}

	{
		char	   *cfg = ms_cfg(def);

		appendStringInfo(&buf, "SELECT %s%s%s, COALESCE(l.name, c.name)), "
						 "CASE WHEN c.name IS NULL THEN 'missing in current' "
						 "WHEN l.name IS NULL THEN 'missing in legacy' ELSE 'differs' END, "
						 "CASE WHEN l.name IS NOT NULL THEN pg_catalog.jsonb_build_object(%s, l.value) END, "
						 "CASE WHEN c.name IS NOT NULL THEN pg_catalog.jsonb_build_object('path', "
						 "pg_catalog.array_to_string(mailsync._doc_path(%s, c.name), '.'), 'value', c.raw) END "
						 "FROM %s AS l FULL JOIN %s AS c ON %sl.name = c.name "
						 "WHERE l.name IS NULL OR c.name IS NULL OR l.value IS DISTINCT FROM c.value ORDER BY 1",
						 key.data, n ? ", " : "", quote_literal_cstr(sh->legacy_column),
						 quote_literal_cstr(sh->value_column), cfg,
						 ms_doc_flat(def, legacy, true, cfg), ms_doc_flat(def, current, false, cfg),
						 ms_key_match("l", NULL, "c", n));
	}
	return buf.data;
}

/* ---------------------------------------------------------------------
 * Join links
 * ---------------------------------------------------------------------
 */

/* the sequence of the joined table's key, for new joined rows */
static char *
ms_join_nextval(const MsShape *sh)
{
	return psprintf("pg_catalog.nextval(CAST(%u AS pg_catalog.regclass))", sh->join_seq);
}

/*
 * ms_join_rekey returns the statement that carries the key changes of an
 * UPDATE to the other table: the statement's OLD and NEW rows, paired in
 * the order the transition tables hold them, rewrite the other table's
 * key from the old value to the new.
 */
static char *
ms_join_rekey(const MsLinkDef *def, int side)
{
	int			n = def->nkeys;
	char	  **src = side == MS_UP ? def->legacy_key : def->key;
	char	  **dst = side == MS_UP ? def->key : def->legacy_key;
	Oid			dst_relid = side == MS_UP ? def->current : def->legacy;
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "UPDATE ONLY %s AS t SET (%s) = ROW(",
					 MsQualifiedRelName(dst_relid), ms_cols(NULL, dst, n, NULL, 0));
	for (int k = 0; k < n; k++)
		appendStringInfo(&buf, "%sp.n%d", k ? ", " : "", k + 1);
	appendStringInfoString(&buf, ") FROM (SELECT ");
	for (int k = 0; k < n; k++)
		appendStringInfo(&buf, "%so.%s AS o%d, n.%s AS n%d", k ? ", " : "",
						 quote_identifier(src[k]), k + 1, quote_identifier(src[k]), k + 1);
	appendStringInfo(&buf, " FROM (SELECT pg_catalog.row_number() OVER () AS ms_rn, x.* FROM %s AS x) AS o "
					 "JOIN (SELECT pg_catalog.row_number() OVER () AS ms_rn, x.* FROM %s AS x) AS n "
					 "ON o.ms_rn = n.ms_rn WHERE ROW(%s) IS DISTINCT FROM ROW(%s)) AS p WHERE ",
					 MS_OLD_TABLE, MS_NEW_TABLE, ms_cols("o", src, n, NULL, 0),
					 ms_cols("n", src, n, NULL, 0));
	for (int k = 0; k < n; k++)
		appendStringInfo(&buf, "%st.%s = p.o%d", k ? " AND " : "", quote_identifier(dst[k]), k + 1);
	return buf.data;
}

/*
 * ms_join_up returns the upsert of legacy rows (rows, a relation) into
 * the current table, their joined columns read through the reference.
 * With counts it returns (inserted, updated, 0).
 */
static char *
ms_join_up(const MsLinkDef *def, const char *rows, bool counts)
{
	const MsShape *sh = def->shape;
	int			n = def->nkeys;
	StringInfoData buf;
	char	   *cur_cols = psprintf("%s%s%s", ms_cols(NULL, sh->ren_cur, sh->nren, NULL, 0),
									sh->nren ? ", " : "", ms_cols(NULL, sh->join_targets, sh->njoin, NULL, 0));

	initStringInfo(&buf);
	if (counts)
		appendStringInfoString(&buf, "WITH ins AS (");
	appendStringInfo(&buf, "INSERT INTO %s AS t (%s, %s) SELECT %s, %s%s%s FROM %s AS l "
					 "LEFT JOIN ONLY %s AS j ON j.%s = l.%s ON CONFLICT (%s) DO UPDATE SET (%s) = ROW(%s) "
					 "WHERE ROW(%s) IS DISTINCT FROM ROW(%s)",
					 MsQualifiedRelName(def->current), ms_cols(NULL, def->key, n, NULL, 0), cur_cols,
					 ms_cols("l", def->legacy_key, n, NULL, 0),
					 ms_cols("l", sh->ren_leg, sh->nren, NULL, 0), sh->nren ? ", " : "",
					 ms_cols("j", sh->join_cols, sh->njoin, NULL, 0), rows,
					 MsQualifiedRelName(sh->join_relid), quote_identifier(sh->join_key),
					 quote_identifier(sh->via), ms_cols(NULL, def->key, n, NULL, 0), cur_cols,
					 psprintf("%s%s%s", ms_cols("EXCLUDED", sh->ren_cur, sh->nren, NULL, 0),
							  sh->nren ? ", " : "", ms_cols("EXCLUDED", sh->join_targets, sh->njoin, NULL, 0)),
					 psprintf("%s%s%s", ms_cols("t", sh->ren_cur, sh->nren, NULL, 0),
							  sh->nren ? ", " : "", ms_cols("t", sh->join_targets, sh->njoin, NULL, 0)),
					 psprintf("%s%s%s", ms_cols("EXCLUDED", sh->ren_cur, sh->nren, NULL, 0),
							  sh->nren ? ", " : "", ms_cols("EXCLUDED", sh->join_targets, sh->njoin, NULL, 0)));
	if (counts)
		appendStringInfo(&buf, " RETURNING t.xmax OPERATOR(pg_catalog.=) 0 AS fresh), "
						 "del AS (DELETE FROM ONLY %s AS t WHERE NOT EXISTS (SELECT FROM ONLY %s AS l WHERE %s) RETURNING 1) "
						 "SELECT (SELECT pg_catalog.count(*) FROM ins WHERE fresh), "
						 "(SELECT pg_catalog.count(*) FROM ins WHERE NOT fresh), (SELECT pg_catalog.count(*) FROM del)",
						 MsQualifiedRelName(def->current), MsQualifiedRelName(def->legacy),
						 ms_same_key("l", def->legacy_key, "t", def->key, n));
	return buf.data;
}

/*
 * ms_join_down returns what carries current rows (rows, a relation) to
 * the legacy table and the joined table: new keys get a new joined row
 * and a legacy row that references it; existing ones have their renamed
 * columns and their joined row rewritten where they differ.  With all
 * (repair), legacy rows the current table lacks are deleted and the
 * statement returns (inserted, updated, deleted).
 */
static char *
ms_join_down(const MsLinkDef *def, const char *rows, bool all)
{
	const MsShape *sh = def->shape;
	int			n = def->nkeys;
	char	   *legacy = MsQualifiedRelName(def->legacy);
	char	   *joined = MsQualifiedRelName(sh->join_relid);
	char	   *jkey = (char *) quote_identifier(sh->join_key);
	char	   *via = (char *) quote_identifier(sh->via);
	StringInfoData buf;

	/* first, legacy rows that reference no joined row get one */
	initStringInfo(&buf);
	appendStringInfo(&buf, "WITH src AS MATERIALIZED (SELECT %s, %s AS ms_jid, %s FROM %s AS c JOIN ONLY %s AS l ON %s "
					 "WHERE l.%s IS NULL), j AS (INSERT INTO %s (%s, %s) SELECT s.ms_jid, %s FROM src AS s) "
					 "UPDATE ONLY %s AS t SET %s = s.ms_jid FROM src AS s WHERE %s; ",
					 ms_key_cols("l", def->legacy_key, n, true), ms_join_nextval(sh),
					 ms_cols("c", sh->join_targets, sh->njoin, NULL, 0), rows, legacy,
					 ms_same_key("l", def->legacy_key, "c", def->key, n), via,
					 joined, jkey, ms_cols(NULL, sh->join_cols, sh->njoin, NULL, 0),
					 ms_cols("s", sh->join_targets, sh->njoin, NULL, 0), legacy, via,
					 psprintf("%strue", ms_key_match("t", def->legacy_key, "s", n)));
	appendStringInfo(&buf, "WITH src AS MATERIALIZED (SELECT c.*, %s AS ms_jid FROM %s AS c "
					 "WHERE NOT EXISTS (SELECT FROM ONLY %s AS l WHERE %s)), "
					 "j AS (INSERT INTO %s (%s, %s) SELECT c.ms_jid, %s FROM src AS c RETURNING 1), "
					 "ins AS (INSERT INTO %s (%s%s%s, %s) SELECT %s%s%s, c.ms_jid FROM src AS c RETURNING 1)",
					 ms_join_nextval(sh), rows, legacy, ms_same_key("l", def->legacy_key, "c", def->key, n),
					 joined, jkey, ms_cols(NULL, sh->join_cols, sh->njoin, NULL, 0),
					 ms_cols("c", sh->join_targets, sh->njoin, NULL, 0),
					 legacy, ms_cols(NULL, def->legacy_key, n, NULL, 0), sh->nren ? ", " : "",
					 ms_cols(NULL, sh->ren_leg, sh->nren, NULL, 0), via,
					 ms_cols("c", def->key, n, NULL, 0), sh->nren ? ", " : "",
					 ms_cols("c", sh->ren_cur, sh->nren, NULL, 0));
	if (sh->nren > 0)
		appendStringInfo(&buf, ", updl AS (UPDATE ONLY %s AS t SET (%s) = ROW(%s) FROM %s AS c "
						 "WHERE %s AND ROW(%s) IS DISTINCT FROM ROW(%s) RETURNING 1)",
						 legacy, ms_cols(NULL, sh->ren_leg, sh->nren, NULL, 0),
						 ms_cols("c", sh->ren_cur, sh->nren, NULL, 0), rows,
						 ms_same_key("t", def->legacy_key, "c", def->key, n),
						 ms_cols("t", sh->ren_leg, sh->nren, NULL, 0),
						 ms_cols("c", sh->ren_cur, sh->nren, NULL, 0));
	appendStringInfo(&buf, ", updj AS (UPDATE ONLY %s AS t SET (%s) = ROW(%s) FROM %s AS c JOIN ONLY %s AS l ON %s "
					 "WHERE t.%s = l.%s AND ROW(%s) IS DISTINCT FROM ROW(%s) RETURNING 1)",
					 joined, ms_cols(NULL, sh->join_cols, sh->njoin, NULL, 0),
					 ms_cols("c", sh->join_targets, sh->njoin, NULL, 0), rows, legacy,
					 ms_same_key("l", def->legacy_key, "c", def->key, n), jkey, via,
					 ms_cols("t", sh->join_cols, sh->njoin, NULL, 0),
					 ms_cols("c", sh->join_targets, sh->njoin, NULL, 0));
	if (all)
		appendStringInfo(&buf, ", del AS (DELETE FROM ONLY %s AS t WHERE NOT EXISTS (SELECT FROM %s AS c WHERE %s) RETURNING 1)",
						 legacy, rows, ms_same_key("c", def->key, "t", def->legacy_key, n));
	appendStringInfo(&buf, " SELECT (SELECT pg_catalog.count(*) FROM ins), %s(SELECT pg_catalog.count(*) FROM updj), %s",
					 sh->nren ? "(SELECT pg_catalog.count(*) FROM updl) + " : "",
					 all ? "(SELECT pg_catalog.count(*) FROM del)" : "0::pg_catalog.int8");

	/*
	 * The joined rows just written may be shared: the other current rows
	 * whose legacy rows reference them get their values, as when the
	 * joined table is updated directly.
	 */
	if (!all)
		appendStringInfo(&buf, "; UPDATE ONLY %s AS t SET (%s) = ROW(%s) FROM ONLY %s AS j JOIN ONLY %s AS l ON l.%s = j.%s "
						 "WHERE %s AND j.%s IN (SELECT l2.%s FROM %s AS c JOIN ONLY %s AS l2 ON %s) "
						 "AND ROW(%s) IS DISTINCT FROM ROW(%s)",
						 MsQualifiedRelName(def->current),
						 ms_cols(NULL, sh->join_targets, sh->njoin, NULL, 0),
						 ms_cols("j", sh->join_cols, sh->njoin, NULL, 0), joined, legacy, via, jkey,
						 ms_same_key("t", def->key, "l", def->legacy_key, n), jkey, via, rows, legacy,
						 ms_same_key("l2", def->legacy_key, "c", def->key, n),
						 ms_cols("t", sh->join_targets, sh->njoin, NULL, 0),
						 ms_cols("j", sh->join_cols, sh->njoin, NULL, 0));

	return buf.data;
}

/*
 * ms_join_trigger_sql returns what a join link runs for one event on the
 * source table of side.
 */
static char *
ms_join_trigger_sql(const MsLinkDef *def, int side, MsEvent event)
{
	Oid			dst = side == MS_UP ? def->current : def->legacy;
	char	  **src_key = side == MS_UP ? def->legacy_key : def->key;
	char	  **dst_key = side == MS_UP ? def->key : def->legacy_key;

	switch (event)
	{
		case MS_EVENT_TRUNCATE:
			return psprintf("DELETE FROM ONLY %s", MsQualifiedRelName(dst));
		case MS_EVENT_DELETE:
			return psprintf("DELETE FROM ONLY %s AS t USING %s AS s WHERE %s",
							MsQualifiedRelName(dst), MS_OLD_TABLE,
							ms_same_key("t", dst_key, "s", src_key, def->nkeys));
		case MS_EVENT_INSERT:
			return side == MS_UP ? ms_join_up(def, MS_NEW_TABLE, false) :
				ms_join_down(def, MS_NEW_TABLE, false);
		case MS_EVENT_UPDATE:
			return psprintf("%s; %s", ms_join_rekey(def, side),
							side == MS_UP ? ms_join_up(def, MS_NEW_TABLE, false) :
							ms_join_down(def, MS_NEW_TABLE, false));
	}
	return NULL;				/* keep compiler quiet */
}

/*
 * MsShapeJoinSql returns what a join link runs for an UPDATE of the joined
 * table: the current rows whose legacy rows reference a changed joined
 * row get its values.
 */
char *
MsShapeJoinSql(const MsLinkDef *def)
{
	const MsShape *sh = def->shape;

	return psprintf("UPDATE ONLY %s AS t SET (%s) = ROW(%s) FROM %s AS n JOIN ONLY %s AS l ON l.%s = n.%s "
					"WHERE %s AND ROW(%s) IS DISTINCT FROM ROW(%s)",
					MsQualifiedRelName(def->current),
					ms_cols(NULL, sh->join_targets, sh->njoin, NULL, 0),
					ms_cols("n", sh->join_cols, sh->njoin, NULL, 0), MS_NEW_TABLE,
					MsQualifiedRelName(def->legacy), quote_identifier(sh->via),
					quote_identifier(sh->join_key),
					ms_same_key("t", def->key, "l", def->legacy_key, def->nkeys),
					ms_cols("t", sh->join_targets, sh->njoin, NULL, 0),
					ms_cols("n", sh->join_cols, sh->njoin, NULL, 0));
}

/*
 * ms_join_verify_sql returns verify's query of a join link: the key, the
 * problem, and each side's renamed and joined columns.
 */
static char *
ms_join_verify_sql(const MsLinkDef *def)
{
	const MsShape *sh = def->shape;
	int			n = def->nkeys;
	int			nv = sh->nren + sh->njoin;
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "SELECT pg_catalog.jsonb_build_object(");
	for (int k = 0; k < n; k++)
		appendStringInfo(&buf, "%s%s, COALESCE(l.k%d, c.k%d)", k ? ", " : "",
						 quote_literal_cstr(def->key[k]), k + 1, k + 1);
	appendStringInfoString(&buf, "), CASE WHEN c.k1 IS NULL THEN 'missing in current' "
						   "WHEN l.k1 IS NULL THEN 'missing in legacy' ELSE 'differs' END");
	for (int s = 0; s < 2; s++)
	{
		const char *a = s == 0 ? "l" : "c";

		appendStringInfo(&buf, ", CASE WHEN %s.k1 IS NOT NULL THEN pg_catalog.jsonb_build_object(", a);
		for (int v = 0; v < nv; v++)
			appendStringInfo(&buf, "%s%s, %s.v%d", v ? ", " : "",
							 quote_literal_cstr(v < sh->nren ? sh->ren_cur[v] : sh->join_targets[v - sh->nren]),
							 a, v + 1);
		appendStringInfoString(&buf, ") END");
	}
	appendStringInfo(&buf, " FROM (SELECT %s, %s%s%s FROM ONLY %s AS l LEFT JOIN ONLY %s AS j ON j.%s = l.%s) AS l",
					 ms_key_cols("l", def->legacy_key, n, true),
					 ms_cols("l", sh->ren_leg, sh->nren, "v", 1), sh->nren ? ", " : "",
					 ms_cols("j", sh->join_cols, sh->njoin, "v", sh->nren + 1),
					 MsQualifiedRelName(def->legacy), MsQualifiedRelName(sh->join_relid),
					 quote_identifier(sh->join_key), quote_identifier(sh->via));
	appendStringInfo(&buf, " FULL JOIN (SELECT %s, %s%s%s FROM ONLY %s AS c) AS c ON %strue",
					 ms_key_cols("c", def->key, n, true),
					 ms_cols("c", sh->ren_cur, sh->nren, "v", 1), sh->nren ? ", " : "",
					 ms_cols("c", sh->join_targets, sh->njoin, "v", sh->nren + 1),
					 MsQualifiedRelName(def->current), ms_key_match("l", NULL, "c", n));
	appendStringInfoString(&buf, " WHERE l.k1 IS NULL OR c.k1 IS NULL OR ROW(");
	for (int v = 0; v < nv; v++)
		appendStringInfo(&buf, "%sl.v%d", v ? ", " : "", v + 1);
	appendStringInfoString(&buf, ") IS DISTINCT FROM ROW(");
	for (int v = 0; v < nv; v++)
		appendStringInfo(&buf, "%sc.v%d", v ? ", " : "", v + 1);
	appendStringInfoString(&buf, ") ORDER BY 1");
	return buf.data;
}
