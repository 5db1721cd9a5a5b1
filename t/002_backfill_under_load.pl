# A backfill of 200,000 legacy rows runs while two writers keep inserting,
# updating and deleting rows through both tables of the link, before, at
# and beyond the backfill's position.  Half-way the backfill is cancelled
# with pg_cancel_backend(); the next call resumes from the recorded
# position.  The backfill must finish while the writers go on, and the two
# tables must then agree row for row.
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

# second call: resumes, and finishes while the writers go on
my $commits_before = $node->safe_psql('postgres', $commits_sql);
my ($ret, $stdout, $stderr) = $node->psql('postgres',
	q{CALL mailsync.backfill('boxes', batch_size => 2000, pause => '10ms')});
is($ret, 0, 'the second backfill finished');
like($stderr, qr/resum/i, 'and said it resumed');
my $commits_after = $node->safe_psql('postgres', $commits_sql);
cmp_ok($commits_after, '>', $commits_before, 'the writers committed while the resumed backfill ran');

$node->safe_psql('postgres', 'UPDATE writers_stop SET stop = true');
for my $w (@writers)
{
	$w->{run}->finish;
	is($w->{err}, '', 'a writer ended cleanly');
}

is($node->safe_psql('postgres', q{SELECT state FROM mailsync.backfills WHERE link = 'boxes'}),
	'done', 'the backfill is recorded as done');

is($node->safe_psql('postgres', q{SELECT count(*) FROM mailsync.verify('boxes')}), '0',
	'verify finds no drift');

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

$node->stop;
done_testing();
