/*-------------------------------------------------------------------------
 *
 * uuid.c
 *	  UUID generation for credential rows: mailsync.uuid_v4(),
 *	  mailsync.uuid_v7() and mailsync.uuid_time(uuid).
 *
 * Random bits come from the kernel (getrandom), drawn 4 KiB at a time into
 * a per-backend pool rather than with one system call per UUID; each byte
 * is handed out once and wiped.  Where getrandom is unavailable, libuuid's
 * random generator (which falls back to /dev/urandom) fills the pool.
 *
 * uuid_v7 follows RFC 9562: 48 bits of Unix time in milliseconds, the
 * version, 12 bits of sub-millisecond time (method 3 of section 6.2), the
 * variant and 62 random bits.  Within a backend every value is greater
 * than the one before, even within one millisecond or when the clock steps
 * back: the 60-bit time stamp is bumped by one past the last one issued.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <errno.h>
#include <sys/random.h>
#include <time.h>
#include <uuid/uuid.h>

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "mailsync.h"

PG_FUNCTION_INFO_V1(mailsync_uuid_v4);
PG_FUNCTION_INFO_V1(mailsync_uuid_v7);
PG_FUNCTION_INFO_V1(mailsync_uuid_time);

#define MS_POOL_SIZE	4096

static unsigned char pool[MS_POOL_SIZE];
static size_t pool_pos = MS_POOL_SIZE;

/* Last v7 time stamp issued: (Unix ms << 12) | sub-ms fraction */
static uint64 last_v7_stamp = 0;

/* 100 ns intervals between 1582-10-15 (UUID v1/v6 epoch) and 1970-01-01 */
#define MS_GREGORIAN_OFFSET UINT64CONST(0x01B21DD213814000)

/*
 * ms_refill_pool fills the random pool from the kernel, or from libuuid's
 * generator when the kernel call is not available.
 */
static void
ms_refill_pool(void)
{
	size_t		got = 0;

	while (got < MS_POOL_SIZE)
	{
		ssize_t		r = getrandom(pool + got, MS_POOL_SIZE - got, 0);

		if (r > 0)
			got += r;
		else if (r < 0 && errno == EINTR)
			continue;
		else
			break;
	}
	while (got < MS_POOL_SIZE)
	{
		/* a libuuid v4 is random but for its version (byte 6) and variant (byte 8) */
		static const int random_bytes[] = {0, 1, 2, 3, 4, 5, 7, 9, 10, 11, 12, 13, 14, 15};
		uuid_t		u;

		uuid_generate_random(u);
		for (int i = 0; i < (int) lengthof(random_bytes) && got < MS_POOL_SIZE; i++)
			pool[got++] = u[random_bytes[i]];
		memset(u, 0, sizeof(u));
	}
	pool_pos = 0;
}

/*
 * ms_random_bytes hands out n random bytes from the pool, once each.
 */
static inline void
ms_random_bytes(unsigned char *out, size_t n)
{
	if (pool_pos + n > MS_POOL_SIZE)
		ms_refill_pool();
	memcpy(out, pool + pool_pos, n);
	memset(pool + pool_pos, 0, n);
	pool_pos += n;
}

/*
 * MsUuidV4Bytes writes a random (version 4) UUID.
 */
void
MsUuidV4Bytes(unsigned char *out)
{
	ms_random_bytes(out, UUID_LEN);
	out[6] = (out[6] & 0x0f) | 0x40;
	out[8] = (out[8] & 0x3f) | 0x80;
}

/*
 * MsUuidV7Bytes writes a time-ordered (version 7) UUID, greater than every
 * UUID this backend made before.
 */
void
MsUuidV7Bytes(unsigned char *out)
{
	struct timespec ts;
	uint64		ms;
	uint64		frac;
	uint64		stamp;

	clock_gettime(CLOCK_REALTIME, &ts);
	ms = (uint64) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	frac = ((uint64) (ts.tv_nsec % 1000000) * 4096) / 1000000;
	stamp = (ms << 12) | frac;
	if (stamp <= last_v7_stamp)
		stamp = last_v7_stamp + 1;
	last_v7_stamp = stamp;

	ms = stamp >> 12;
	frac = stamp & 0xfff;
	out[0] = (unsigned char) (ms >> 40);
	out[1] = (unsigned char) (ms >> 32);
	out[2] = (unsigned char) (ms >> 24);
	out[3] = (unsigned char) (ms >> 16);
	out[4] = (unsigned char) (ms >> 8);
	out[5] = (unsigned char) ms;
	out[6] = 0x70 | (unsigned char) (frac >> 8);
	out[7] = (unsigned char) frac;
	ms_random_bytes(out + 8, 8);
	out[8] = (out[8] & 0x3f) | 0x80;
}

/*
 * mailsync_uuid_v4 implements mailsync.uuid_v4().
 */
Datum
mailsync_uuid_v4(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *uuid = palloc(UUID_LEN);

	MsUuidV4Bytes(uuid->data);
	PG_RETURN_UUID_P(uuid);
}

/*
 * mailsync_uuid_v7 implements mailsync.uuid_v7().
 */
Datum
mailsync_uuid_v7(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *uuid = palloc(UUID_LEN);

	MsUuidV7Bytes(uuid->data);
	PG_RETURN_UUID_P(uuid);
}

/*
 * mailsync_uuid_time implements mailsync.uuid_time(uuid): the time stamp
 * of an RFC 9562 UUID of version 1, 6 or 7 (to the millisecond for v7, to
 * the microsecond for v1 and v6), or NULL for versions that carry no time.
 */
Datum
mailsync_uuid_time(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *uuid = PG_GETARG_UUID_P(0);
	const unsigned char *d = uuid->data;
	int			version = d[6] >> 4;
	int64		unix_usec;

	if ((d[8] & 0xc0) != 0x80)
		PG_RETURN_NULL();

	if (version == 7)
	{
		uint64		ms = 0;

		for (int i = 0; i < 6; i++)
			ms = (ms << 8) | d[i];
		unix_usec = (int64) ms * 1000;
	}
	else if (version == 1 || version == 6)
	{
		uint64		ticks;

		if (version == 1)
			ticks = ((uint64) (d[6] & 0x0f) << 56) | ((uint64) d[7] << 48) |
				((uint64) d[4] << 40) | ((uint64) d[5] << 32) |
				((uint64) d[0] << 24) | ((uint64) d[1] << 16) |
				((uint64) d[2] << 8) | (uint64) d[3];
		else
			ticks = ((uint64) d[0] << 52) | ((uint64) d[1] << 44) |
				((uint64) d[2] << 36) | ((uint64) d[3] << 28) |
				((uint64) d[4] << 20) | ((uint64) d[5] << 12) |
				((uint64) (d[6] & 0x0f) << 8) | (uint64) d[7];
		unix_usec = ((int64) ticks - (int64) MS_GREGORIAN_OFFSET) / 10;
	}
	else
		PG_RETURN_NULL();

	PG_RETURN_TIMESTAMPTZ(unix_usec -
						  (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
}
