# A backfill of 200,000 legacy rows runs while two writers keep inserting,
# updating and deleting rows through both tables of the link, before, at
# and beyond the backfill's position.  Half-way the backfill is cancelled
# with pg_cancel_backend(); the next call resumes from the recorded
# position, while pgbench joins in with four more clients (a custom script
# of inserts, upserts, updates, deletes and multi-row statements on both
# tables).  The backfill must finish while all of them go on, and the two
# tables must then agree row for row: by verify, by an EXCEPT of both sides
# through the mapping, and by counts and ordered md5 checksums.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = PostgreSQL::Test::Cluster->new('backfill');
$node->init;
$node->append_conf('postgresql.conf', "deadlock_timeout = 50ms\n");
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION mailsync;
	CREATE TABLE v1_boxes (id integer PRIMARY KEY, address text NOT NULL, quota_mb integer NOT NULL, active boolean NOT NULL);
	CREATE TABLE v2_boxes (id integer PRIMARY KEY, email text NOT NULL, quota bigint NOT NULL, state text NOT NULL);
	INSERT INTO v1_boxes SELECT g, 'box' || g || '@example.org', 100 + g % 50, g % 7 <> 0
	FROM generate_series(1, 200000) g;
	SELECT mailsync.link('boxes', 'v1_boxes', 'v2_boxes', $${
		"id": "id",
		"email": "address",
		"quota": {"up": "legacy.quota_mb::bigint * 1048576", "down": "(current.quota / 1048576)::integer",
				  "to": "quota_mb"},
		"state": {"up": "CASE WHEN legacy.active THEN 'active' ELSE 'disabled' END",
				  "down": "current.state = 'active'", "to": "active"}}$$);

	-- pgbench counts its transactions here, and takes new keys from here
	CREATE SEQUENCE bench_tx;
	CREATE SEQUENCE fresh_ids START 1000000;

	-- the writers run until told to stop, and count what they did
	CREATE TABLE writers_stop (stop boolean NOT NULL);
	INSERT INTO writers_stop VALUES (false);
	CREATE TABLE writer_progress (w integer PRIMARY KEY, commits bigint NOT NULL, retried bigint NOT NULL);
	CREATE PROCEDURE writer(me integer) LANGUAGE plpgsql AS $$
	DECLARE
		k	integer;
		i	bigint := 0;
	BEGIN
		INSERT INTO writer_progress VALUES (me, 0, 0);
		COMMIT;
		WHILE NOT (SELECT stop FROM writers_stop) LOOP
			k := 1 + floor(random() * 220000)::integer;
			BEGIN
				CASE i % 7
					WHEN 0 THEN
						INSERT INTO v1_boxes VALUES (k, 'w' || k || '@example.org', 7, true)
						ON CONFLICT (id) DO UPDATE SET quota_mb = v1_boxes.quota_mb + 1;
					WHEN 1 THEN
						UPDATE v1_boxes SET active = NOT active, address = 'v1-' || k || '@example.org' WHERE id = k;
					WHEN 2 THEN
						INSERT INTO v2_boxes VALUES (k, 'v2-' || k || '@example.org', 5 * 1048576, 'disabled')
						ON CONFLICT (id) DO UPDATE SET quota = v2_boxes.quota + 1048576;
					WHEN 3 THEN
						UPDATE v2_boxes SET state = 'active', email = 'V2-' || k || '@example.org' WHERE id = k;
					WHEN 4 THEN
						DELETE FROM v1_boxes WHERE id = k;
					WHEN 5 THEN
						DELETE FROM v2_boxes WHERE id = k;
					ELSE
						UPDATE v1_boxes SET quota_mb = quota_mb + 1 WHERE id BETWEEN k AND k + 20;
				END CASE;
			EXCEPTION WHEN deadlock_detected OR serialization_failure THEN
				UPDATE writer_progress SET retried = retried + 1 WHERE w = me;
			END;
			UPDATE writer_progress SET commits = commits + 1 WHERE w = me;
			COMMIT;
			i := i + 1;
		END LOOP;
	END $$;
});

# run statements in the background through psql, each on its own as
# CALL of a procedure that commits needs
sub start_psql
{
	my @sql = @_;
	my %h = (out => '', err => '');
	$h{run} = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), map { ('-c', $_) } @sql ],
		'>', \$h{out}, '2>', \$h{err});
	return \%h;
}

my $commits_sql = 'SELECT coalesce(sum(commits), 0) FROM writer_progress';

my @writers = map { start_psql("CALL writer($_)") } (1, 2);
$node->poll_query_until('postgres', 'SELECT count(*) = 2 AND min(commits) > 0 FROM writer_progress')
  or die 'the writers did not start';

# first call: cancelled once a quarter of the rows is done
my $first = start_psql(
	'SET client_min_messages = warning',
	q{CALL mailsync.backfill('boxes', batch_size => 2000, pause => '10ms')});
$node->poll_query_until('postgres',
	q{SELECT rows_done >= 50000 FROM mailsync.backfills WHERE link = 'boxes'})
  or die 'the backfill did not get going';
$node->safe_psql('postgres', q{
	SELECT pg_cancel_backend(pid) FROM pg_stat_activity
	WHERE query LIKE '%CALL mailsync.backfill(%' AND pid <> pg_backend_pid()});
$first->{run}->finish;
like($first->{err}, qr/canceling statement due to user request/, 'the first backfill was cancelled');

my ($state, $done, $total) = split /\|/, $node->safe_psql('postgres',
	q{SELECT state, rows_done, rows_total FROM mailsync.backfills WHERE link = 'boxes'});
is($state, 'running', 'the cancelled backfill left its position behind');
cmp_ok($done, '>=', 50000, 'it had recorded at least a quarter of the rows');
cmp_ok($done, '<', $total, 'and not all of them');
is($node->safe_psql('postgres', q{SELECT backfill FROM mailsync.status() WHERE name = 'boxes'}),
	'up: interrupted', 'status() calls it interrupted');

# pgbench joins the writers for the second call: four clients, each
# transaction one of these scripts (weights after the @), on keys before,
# at and beyond the backfill's position and on new keys past its end.
# Deadlocks between writers and with the backfill's batches are retried.
my %scripts = (
	'v1_upsert@3' => q{
		\set k random(1, 220000)
		SELECT nextval('bench_tx');
		INSERT INTO v1_boxes VALUES (:k, 'pb' || :k || '@example.org', 9, false)
			ON CONFLICT (id) DO UPDATE SET quota_mb = v1_boxes.quota_mb + 2, active = NOT v1_boxes.active;
	},
	'v2_upsert@3' => q{
		\set k random(1, 220000)
		SELECT nextval('bench_tx');
		INSERT INTO v2_boxes VALUES (:k, 'PB' || :k || '@example.org', 11 * 1048576, 'active')
			ON CONFLICT (id) DO UPDATE SET quota = v2_boxes.quota + 3 * 1048576;
	},
	'v1_update@3' => q{
		\set k random(1, 220000)
		SELECT nextval('bench_tx');
		UPDATE v1_boxes SET address = 'pb1-' || :k || '@example.org', quota_mb = quota_mb + 3 WHERE id = :k;
	},
	'v2_update@3' => q{
		\set k random(1, 220000)
		SELECT nextval('bench_tx');
		UPDATE v2_boxes SET email = 'pb2-' || :k || '@example.org',
			state = CASE WHEN state = 'active' THEN 'disabled' ELSE 'active' END WHERE id = :k;
	},
	'v1_delete@1' => q{
		\set k random(1, 220000)
		SELECT nextval('bench_tx');
		DELETE FROM v1_boxes WHERE id = :k;
	},
	'v2_delete@1' => q{
		\set k random(1, 220000)
		SELECT nextval('bench_tx');
		DELETE FROM v2_boxes WHERE id = :k;
	},
	'v1_insert_new@1' => q{
		SELECT nextval('bench_tx');
		INSERT INTO v1_boxes VALUES (nextval('fresh_ids'), 'new1@example.org', 1, true);
	},
	'v2_insert_new@1' => q{
		SELECT nextval('bench_tx');
		INSERT INTO v2_boxes VALUES (nextval('fresh_ids'), 'new2@example.org', 2 * 1048576, 'disabled');
	},
	'v1_range_update@1' => q{
		\set k random(1, 220000)
		SELECT nextval('bench_tx');
		UPDATE v1_boxes SET quota_mb = quota_mb + 1, active = true WHERE id BETWEEN :k AND :k + 39;
	},
	'v2_range_update@1' => q{
		\set k random(1, 220000)
		SELECT nextval('bench_tx');
		UPDATE v2_boxes SET quota = quota + 1048576 WHERE id BETWEEN :k AND :k + 39;
	},
	'both_tables_one_transaction@1' => q{
		\set a random(1, 220000)
		\set b random(1, 220000)
		SELECT nextval('bench_tx');
		BEGIN;
		UPDATE v2_boxes SET state = 'disabled' WHERE id = :a;
		DELETE FROM v1_boxes WHERE id = :b;
		INSERT INTO v2_boxes VALUES (:b, 'moved' || :b || '@example.org', 1048576, 'active')
			ON CONFLICT (id) DO NOTHING;
		COMMIT;
	});
my @script_args;
for my $name (sort keys %scripts)
{
	my ($file, $weight) = split /@/, $name;
	$file = $node->basedir . "/$file.sql";
	PostgreSQL::Test::Utils::append_to_file($file, $scripts{$name});
	push @script_args, '-f', "$file\@$weight";
}
my ($bench_out, $bench_err) = ('', '');
my $bench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '4', '-j', '2', '-T', '6', '--max-tries=100', @script_args,
	  $node->connstr('postgres') ],
	'>', \$bench_out, '2>', \$bench_err);
$node->poll_query_until('postgres', q{SELECT last_value > 100 FROM bench_tx})
  or die "pgbench did not get going: $bench_err";

# second call: resumes, and finishes while the writers and pgbench go on
my $commits_before = $node->safe_psql('postgres', $commits_sql);
my $bench_before = $node->safe_psql('postgres', 'SELECT last_value FROM bench_tx');
my ($ret, $stdout, $stderr) = $node->psql('postgres',
	q{CALL mailsync.backfill('boxes', batch_size => 2000, pause => '10ms')});
is($ret, 0, 'the second backfill finished');
like($stderr, qr/resum/i, 'and said it resumed');
my $commits_after = $node->safe_psql('postgres', $commits_sql);
my $bench_after = $node->safe_psql('postgres', 'SELECT last_value FROM bench_tx');
cmp_ok($commits_after, '>', $commits_before, 'the writers committed while the resumed backfill ran');
cmp_ok($bench_after, '>', $bench_before, 'and so did pgbench');

# pgbench runs for its time, and must have had no failure but retries
$bench->finish;
note(join("\n", grep { /^number of|^tps/ } split /\n/, $bench_out));
is($?, 0, 'pgbench ended cleanly') or diag("pgbench stdout:\n$bench_out\nstderr:\n$bench_err");
like($bench_out, qr/^number of failed transactions: 0 /m, 'no pgbench transaction failed')
  or diag($bench_out);

$node->safe_psql('postgres', 'UPDATE writers_stop SET stop = true');
for my $w (@writers)
{
	$w->{run}->finish;
	is($w->{err}, '', 'a writer ended cleanly');
}

is($node->safe_psql('postgres', q{SELECT state FROM mailsync.backfills WHERE link = 'boxes'}),
	'done', 'the backfill is recorded as done');

is($node->safe_psql('postgres', q{SELECT count(*) FROM mailsync.verify('boxes')}), '0',
	'verify finds no drift')
  or diag($node->safe_psql('postgres', q{SELECT * FROM mailsync.verify('boxes') LIMIT 20}));

# the same check without mailsync's own code
my $drift = $node->safe_psql('postgres', q{
	SELECT count(*) FROM (
		(SELECT id, address, quota_mb::bigint * 1048576, CASE WHEN active THEN 'active' ELSE 'disabled' END FROM v1_boxes
		 EXCEPT SELECT id, email, quota, state FROM v2_boxes)
		UNION ALL
		(SELECT id, email, quota, state FROM v2_boxes
		 EXCEPT SELECT id, address, quota_mb::bigint * 1048576, CASE WHEN active THEN 'active' ELSE 'disabled' END FROM v1_boxes)
	) AS d});
is($drift, '0', 'no row differs between the tables through the mapping');
cmp_ok($node->safe_psql('postgres', 'SELECT count(*) FROM v2_boxes'), '>', 150000,
	'the current table holds the copied rows');

# counts, and md5 checksums of each side in key order, both through the
# mapping: the legacy rows as the up mapping turns them into current rows,
# and the current rows as the down mapping turns them into legacy rows
my $sums = $node->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM v1_boxes), (SELECT count(*) FROM v2_boxes),
		(SELECT md5(string_agg(concat_ws('|', id, address, quota_mb::bigint * 1048576,
				CASE WHEN active THEN 'active' ELSE 'disabled' END), E'\n' ORDER BY id)) FROM v1_boxes),
		(SELECT md5(string_agg(concat_ws('|', id, email, quota, state), E'\n' ORDER BY id)) FROM v2_boxes),
		(SELECT md5(string_agg(concat_ws('|', id, address, quota_mb, active), E'\n' ORDER BY id)) FROM v1_boxes),
		(SELECT md5(string_agg(concat_ws('|', id, email, (quota / 1048576)::integer, state = 'active'),
				E'\n' ORDER BY id)) FROM v2_boxes)});
my ($v1_count, $v2_count, $up_v1, $up_v2, $down_v1, $down_v2) = split /\|/, $sums;
is($v2_count, $v1_count, 'both tables have the same number of rows');
is($up_v2, $up_v1, 'md5 of the current rows = md5 of the legacy rows mapped up, in key order')
  or diag($node->safe_psql('postgres', q{
	SELECT id, l.address, l.quota_mb, l.active, c.email, c.quota, c.state
	FROM v1_boxes l FULL JOIN v2_boxes c USING (id)
	WHERE (l.address, l.quota_mb::bigint * 1048576, CASE WHEN l.active THEN 'active' ELSE 'disabled' END)
		  IS DISTINCT FROM (c.email, c.quota, c.state)
	ORDER BY 1 LIMIT 20}));
is($down_v1, $down_v2, 'md5 of the legacy rows = md5 of the current rows mapped down, in key order');

$node->stop;
done_testing();
