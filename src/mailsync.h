/*-------------------------------------------------------------------------
 *
 * mailsync.h
 *	  Shared declarations of the mailsync extension.
 *
 * A link pairs a legacy (v1) table with its refactored current (v2) table.
 * Its definition lives in mailsync.links; compiled, it is an MsLinkDef: for
 * each direction (up = legacy -> current, down = current -> legacy) the
 * target columns it writes, the SQL expression over the source row that
 * gives each of them, and the key that pairs the rows.  The same compiled
 * definition feeds the row triggers, the link-time backfill and, later,
 * the set-based paths, so a value is never mapped two ways.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MAILSYNC_H
#define MAILSYNC_H

#include "postgres.h"

#include "access/attnum.h"
#include "lib/stringinfo.h"
#include "nodes/bitmapset.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "nodes/execnodes.h"
#include "utils/relcache.h"

#include "compat.h"

/* Directions, used as indexes into MsLinkDef.dir */
#define MS_UP		0			/* legacy -> current */
#define MS_DOWN		1			/* current -> legacy */

/* Sides, used as indexes into per-table arrays: the source side of MS_UP */
#define MS_LEGACY_SIDE	0
#define MS_CURRENT_SIDE 1

/* Longest link name: trigger names "mailsync_<name>_apply_delete" must fit */
#define MS_MAX_LINK_NAME	40

/* First key of the session advisory lock a backfill holds on its link */
#define MS_ADVISORY_CLASS	43110

/* Seconds between two progress NOTICEs of a long-running procedure */
#define MS_PROGRESS_SECS	5

/* Table alias that target rows carry in generated statements */
#define MS_TARGET_ALIAS		"ms_target"

/* Names the sync triggers give their transition tables */
#define MS_OLD_TABLE		"mailsync_old"
#define MS_NEW_TABLE		"mailsync_new"

/* The events a link has a trigger for, in the order of MsTriggerName */
typedef enum MsEvent
{
	MS_EVENT_INSERT = 0,
	MS_EVENT_UPDATE,
	MS_EVENT_DELETE,
	MS_EVENT_TRUNCATE
} MsEvent;

#define MS_NUM_EVENTS	4

/*
 * MsTarget: one column that a direction writes on its target table.
 */
typedef struct MsTarget
{
	char	   *column;			/* target column name, unquoted */
	AttrNumber	attno;			/* its attribute number */
	char	   *expr;			/* SQL expression over the source alias */
	Node	   *node;			/* its parsed tree, source row as RTE 1 */
	Node	   *assign;			/* that tree coerced to the column's type */
	bool		reads_source;	/* does expr read any source column? */
	bool		is_key;			/* is it a key column? */
} MsTarget;

/*
 * MsDirection: everything one direction of a link needs to build SQL.
 */
typedef struct MsDirection
{
	bool		enabled;		/* does the link sync this way? */
	Oid			src_relid;
	Oid			dst_relid;
	const char *src_alias;		/* "legacy" or "current" */
	int			ntargets;
	MsTarget   *targets;
	Bitmapset  *src_attrs;		/* source attnos the expressions read */
	int			nkeys;
	AttrNumber *src_key;		/* source key attnos */
	AttrNumber *dst_key;		/* target key attnos, same order */
	Oid		   *key_eqop;		/* equality operator of each target key */
	Oid			dst_keyidx;		/* the target's unique index on the key */
	Oid			src_keyidx;		/* the source's */
} MsDirection;

/*
 * MsShapeKind: how the rows of a link's two tables correspond.  A rows
 * link pairs one row with one row by key; a list link pairs a parent row
 * whose column holds a delimited list with one child row per element; a
 * document link pairs key/value rows with the entries of a jsonb document;
 * a join link pairs rows by key, some current columns living in a row of
 * a third table that the legacy row references.
 */
typedef enum MsShapeKind
{
	MS_SHAPE_ROWS = 0,
	MS_SHAPE_LIST,
	MS_SHAPE_DOCUMENT,
	MS_SHAPE_JOIN
} MsShapeKind;

/*
 * MsShape: what a list, document or join link adds to its key (shape.c).
 * The key of the link (MsLinkDef.key, legacy_key) is the parent key of a
 * list, the group key (may be empty) of a document, and the row key of a
 * join link.
 */
typedef struct MsShape
{
	MsShapeKind kind;
	char	   *column;			/* current column: list element, or document */
	char	   *legacy_column;	/* legacy column: the list, or the setting name */
	char	   *value_column;	/* legacy column of a setting's value */
	char	   *separator;		/* list separator */
	char	   *config;			/* document options, normalised JSON */
	Oid			join_relid;		/* join: the joined table */
	char	   *via;			/* join: legacy column referencing it */
	char	   *join_key;		/* join: its key column */
	Oid			join_seq;		/* join: the sequence of that key */
	int			njoin;
	char	  **join_cols;		/* join: joined table columns */
	char	  **join_targets;	/* join: the current columns they are */
	int			nren;
	char	  **ren_cur;		/* join: other renamed columns, current */
	char	  **ren_leg;		/* and legacy */
} MsShape;

/*
 * MsLinkDef: a validated, normalised link definition.
 */
typedef struct MsLinkDef
{
	char	   *name;
	Oid			legacy;
	Oid			current;
	char	   *direction;		/* "both", "up" or "down" */
	int			nkeys;
	char	  **key;			/* current-side key column names */
	char	  **legacy_key;		/* legacy-side key column names */
	Jsonb	   *columns;		/* normalised mapping, as stored */
	MsDirection dir[2];			/* MS_UP, MS_DOWN */
	Oid			shared_seq;		/* the sequence both keys draw from, or 0 */
	bool		replica;		/* do its triggers fire for logical replication? */
	MsShape    *shape;			/* NULL for a rows link */
} MsLinkDef;

/*
 * MsDirectPlan: what every statement that writes a direction's rows
 * directly shares (direct.c).
 */
typedef struct MsDirectPlan
{
	Expr	  **planned;		/* per target: its planned assign expression */
	int			nidx;			/* key index columns */
	RegProcedure *key_proc;		/* per key index column: equality function */
} MsDirectPlan;

/*
 * MsDirectState: a target table opened to write a statement's rows
 * directly (direct.c).
 */
typedef struct MsDirectState
{
	const MsDirection *d;
	Relation	rel;
	Relation	idx;			/* the target's key index */
	EState	   *estate;
	ResultRelInfo *rri;
	EPQState	epq;
	ExprContext *econtext;
	const MsDirectPlan *plan;
	ExprState **target_state;	/* per target: its state, made on first use */
	ExprState **default_state;	/* per attribute: its default, on insert */
	TupleTableSlot *newslot;
	TupleTableSlot *keyslot;
	TupleTableSlot *foundslot;
} MsDirectState;

/* mailsync.c */
typedef enum MsSetBasedMode
{
	MS_SET_BASED_AUTO,
	MS_SET_BASED_ON,
	MS_SET_BASED_OFF
} MsSetBasedMode;

extern int	MsSetBased;
extern void _PG_init(void);

/* util.c */
extern void MsPushPinnedPath(void);
extern void MsCommitPinned(void);
extern void MsPopPinnedPath(void);
extern char *MsQualifiedRelName(Oid relid);
extern char *MsRelDisplayName(Oid relid);
extern Oid	MsExtensionOwner(void);
extern Oid	MsLinksRelid(bool missing_ok);
extern void MsCheckNotNullArg(FunctionCallInfo fcinfo, int argno,
							  const char *argname, const char *funcname);
extern void MsCheckTableOwner(Oid relid);
extern void MsSpiExec(const char *sql, int expected);
extern void MsSpiExecWithArgs(const char *sql, int nargs, Oid *argtypes,
							  Datum *values, const char *nulls, int expected);
extern void MsCatalogExec(const char *sql, int nargs, Oid *argtypes,
						  Datum *values, const char *nulls, int expected);
extern void MsSleep(long ms);
extern void MsSpiExecRetryLock(const char *sql, int expected);
extern bool MsSpiExecWithArgsRetryLock(const char *sql, int nargs, Oid *argtypes,
									   Datum *values, const char *nulls,
									   int expected, int soft_sqlstate);
extern char *MsLockTimeoutValue(void);

/* mapping.c */
extern MsLinkDef *MsCompileLink(const char *name, Relation legacy,
								Relation current, Jsonb *columns,
								List *key, const char *direction);
extern Oid	MsFindKeyIndex(Relation rel, int nkeys, const AttrNumber *attnos,
						   Oid *eqops);
extern void MsCheckLinkName(const char *name);
extern void MsCheckDirection(const char *direction);
extern void MsCheckLinkableTable(Relation rel, const char *role);
extern List *MsTextArrayToList(ArrayType *arr, const char *argname);
extern AttrNumber MsLookupColumn(Relation rel, const char *colname, int side,
								 const char *hint);
extern List *MsPrimaryKeyColumns(Relation current);
extern void MsCheckNotNullWritten(Relation rel, int side, int nwritten,
								  const AttrNumber *written, const char *hint_fmt);

/* link.c */
extern MsLinkDef *MsLoadLink(const char *name, bool from_trigger);
extern Oid	MsColumnSequence(Relation rel, AttrNumber attno, bool *is_identity,
							 bool *has_default);
extern void MsPushLinkContext(ErrorContextCallback *cb, const char *link);
extern void MsPopLinkContext(ErrorContextCallback *cb);

/* sqlgen.c */
extern char *MsTableSourceClause(const MsDirection *d);
extern char *MsTransitionSourceClause(const MsDirection *d, const char *enr);
extern char *MsSqlUpsert(const MsDirection *d, const char *from,
						 bool update_existing);
extern char *MsSqlInsertRow(const MsDirection *d);
extern char *MsSqlUpdateRow(const MsDirection *d);
extern char *MsSqlUpdate(const MsDirection *d, const char *from);
extern char *MsSqlDelete(const MsDirection *d, const char *from);
extern char *MsSqlTruncate(const MsDirection *d);
extern char *MsTriggerName(const char *link, bool shape, MsEvent event,
						   bool apply);
extern char *MsSqlLastKey(const MsDirection *d);
extern char *MsSqlCountUpTo(const MsDirection *d);
extern char *MsSqlBackfillBounds(const MsDirection *d);
extern char *MsSqlBackfillCopy(const MsDirection *d, bool upsert);
extern char *MsSqlDiff(const MsDirection *d, const char *src_side,
					   const char *dst_side, bool values);
extern char *MsSqlRepair(const MsDirection *d, const char *src_side,
						 const char *dst_side);

/* shape.c */
extern void MsCompileShape(MsLinkDef *def, Relation legacy, Relation current,
						   MsShapeKind kind, List *shaped, List *renames,
						   List *key, StringInfo json);
extern char *MsShapeJoinSql(const MsLinkDef *def);
extern const char *MsShapeKindName(MsShapeKind kind);
extern int64 MsShapeCopy(const MsLinkDef *def, int side, bool retry);
extern char *MsShapeTriggerSql(const MsLinkDef *def, int side, MsEvent event);
extern char *MsShapeVerifySql(const MsLinkDef *def);
extern char *MsShapeRepairSql(const MsLinkDef *def, int side);

/* backfill.c */
struct LOCKTAG;
extern void MsAdvisoryLockTag(struct LOCKTAG *tag, const char *link);

/* direct.c */
extern bool MsDirectEligible(Relation dst, const char *link, Oid trigger_fn,
							 bool capture_only);
extern MsDirectPlan *MsDirectPlanBuild(const MsDirection *d);
extern void MsDirectBegin(MsDirectState *st, const MsDirection *d,
						  const MsDirectPlan *plan, bool deleting);
extern void MsDirectEnd(MsDirectState *st);
extern void MsDirectUpsert(MsDirectState *st, TupleTableSlot *src);
extern void MsDirectUpdate(MsDirectState *st, TupleTableSlot *oldsrc,
						   TupleTableSlot *newsrc);
extern void MsDirectDelete(MsDirectState *st, TupleTableSlot *oldsrc);

/* sync.c */
extern void MsSyncInit(void);
extern void MsGuardPush(const char *link);
extern void MsGuardPop(void);
extern void MsSkipOwnCapture(Oid dst_relid, const char *link);

/* uuid.c */
extern void MsUuidV7Bytes(unsigned char *out);
extern void MsUuidV4Bytes(unsigned char *out);

#endif							/* MAILSYNC_H */
