# mailsync: PGXS build.  `make`, `make install`, then `make installcheck`
# against a running server (scripts/test.sh does all of it on a throwaway
# cluster).

EXTENSION	= mailsync
EXTVERSION	= 1.0
MODULE_big	= mailsync
OBJS		= mailsync.o \
			  src/util.o \
			  src/mapping.o \
			  src/sqlgen.o \
			  src/link.o \
			  src/sync.o \
			  src/direct.o \
			  src/backfill.o \
			  src/verify.o \
			  src/uuid.o \
			  src/ensure_uuid.o \
			  src/shape.o
PGFILEDESC	= "mailsync - keep legacy and refactored tables in sync"

DATA		= mailsync--$(EXTVERSION).sql

REGRESS		= install link link_errors sync keys cache roles uuid ensure_uuid backfill verify \
			  security hostile_names lifecycle bad_inputs shapes shape_errors join


ISOLATION	= concurrent_update update_delete key_change insert_race upsert_race \
			  cache_invalidation backfill_concurrent settings_race list_race
ISOLATION_OPTS = --inputdir=. --outputdir=output_iso --load-extension=mailsync

TAP_TESTS	= 1

SHLIB_LINK	+= -luuid
PG_CPPFLAGS	= -I$(srcdir)/src
# -Wextra minus the parts PostgreSQL's own headers trip over; the test
# command adds COPT=-Werror.
PG_CFLAGS	= -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers

EXTRA_CLEAN	= output_iso tmp_check_iso

PG_CONFIG	?= pg_config
PGXS		:= $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# every object includes the shared headers
$(OBJS): src/mailsync.h src/compat.h
