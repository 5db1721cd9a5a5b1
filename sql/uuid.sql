--
-- uuid: mailsync.uuid_v4(), mailsync.uuid_v7() and mailsync.uuid_time().
--
CREATE TEMP TABLE v4 AS SELECT n, mailsync.uuid_v4() AS u FROM generate_series(1, 20000) n;
CREATE TEMP TABLE v7 AS SELECT n, mailsync.uuid_v7() AS u FROM generate_series(1, 20000) n;

-- version and variant bits (RFC 9562: version 4 / 7, variant 10), all distinct
SELECT 'v4' AS gen, count(*) AS n, count(DISTINCT u) AS distinct_values,
	   bool_and(substr(u::text, 15, 1) = '4') AS version_ok,
	   bool_and(substr(u::text, 20, 1) IN ('8', '9', 'a', 'b')) AS variant_ok
FROM v4
UNION ALL
SELECT 'v7', count(*), count(DISTINCT u),
	   bool_and(substr(u::text, 15, 1) = '7'),
	   bool_and(substr(u::text, 20, 1) IN ('8', '9', 'a', 'b'))
FROM v7;

-- every random hex digit of v4 takes all 16 values over 20000 UUIDs
-- (positions 15 and 20 hold the version and the variant)
SELECT count(*) AS positions, min(values_seen) AS fewest_values
FROM (SELECT p, count(DISTINCT substr(replace(u::text, '-', ''), p, 1)) AS values_seen
	  FROM v4, generate_series(1, 32) p
	  WHERE p NOT IN (13, 17)
	  GROUP BY p) s;

-- v7 values increase strictly in the order they were made, though many
-- fall in the same millisecond
SELECT count(*) FILTER (WHERE u <= prev) AS out_of_order,
	   count(DISTINCT substr(u::text, 1, 13)) < 20000 AS shared_milliseconds
FROM (SELECT u, lag(u) OVER (ORDER BY n) AS prev FROM v7) s;

-- and across statements of the same session
SELECT (SELECT u FROM v7 ORDER BY u DESC LIMIT 1) < mailsync.uuid_v7() AS later_is_greater;

-- uuid_time of a fresh v7 is now, to the millisecond
SELECT abs(extract(epoch FROM mailsync.uuid_time(mailsync.uuid_v7()) - clock_timestamp())) < 1 AS is_now;

-- the RFC 9562 test vectors: v1, v6 and v7 of 2022-02-22 14:22:22 -05:00
SELECT v, mailsync.uuid_time(u::uuid) AT TIME ZONE 'UTC' AS utc
FROM (VALUES ('v1', 'C232AB00-9414-11EC-B3C8-9F6BDECED846'),
			 ('v6', '1EC9414C-232A-6B00-B3C8-9F6BDECED846'),
			 ('v7', '017F22E2-79B0-7CC3-98C4-DC0C0C07398F')) AS t(v, u);

-- versions without a time stamp, the nil UUID and NULL give NULL
SELECT mailsync.uuid_time(mailsync.uuid_v4()) AS v4,
	   mailsync.uuid_time(gen_random_uuid()) AS gen_random_uuid,
	   mailsync.uuid_time('00000000-0000-0000-0000-000000000000') AS nil,
	   mailsync.uuid_time(NULL) AS null_in;

-- a column default made from them
CREATE TEMP TABLE tokens (id serial, token uuid NOT NULL DEFAULT mailsync.uuid_v7());
INSERT INTO tokens (id) SELECT g FROM generate_series(1, 100) g;
SELECT count(DISTINCT token) = 100 AS distinct_tokens,
	   (array_agg(token ORDER BY id) = array_agg(token ORDER BY token)) AS index_order_is_insert_order
FROM tokens;
