# Crashes (pg_ctl stop -m immediate, then crash recovery) while mailsync
# is at work:
#
# 1. in the middle of a backfill: some batches committed, one batch
#    half-written and waiting for a row lock.  After the restart status()
#    calls the backfill interrupted, the recorded position is exactly what
#    the committed batches copied, the half-written batch left nothing, and
#    the next call resumes after that position instead of starting over:
#    every row copied once, none missing, verify empty.
# 2. with open transactions: writes committed through v1 and v2 (row by
#    row and set-based) survive on both sides; writes of transactions still
#    open at the crash (idle in transaction, one statement waiting for a
#    lock, large set-based statements) are on neither side; two prepared
#    transactions survive the crash and are then committed and rolled back
#    on both sides together.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf('postgresql.conf', qq{
deadlock_timeout = 50ms
max_prepared_transactions = 5
});
$node->start;

# A PostfixAdmin-style mailbox table and its successor: a rename, two
# transforms, a column copied as it is.
$node->safe_psql('postgres', q{
	CREATE EXTENSION mailsync;
	CREATE EXTENSION pageinspect;
	CREATE TABLE v1_mailbox (id integer PRIMARY KEY, username text NOT NULL, domain text NOT NULL,
		quota_kb bigint NOT NULL, active smallint NOT NULL);
	CREATE TABLE v2_mailboxes (id integer PRIMARY KEY, email text NOT NULL, domain text NOT NULL,
		quota_bytes bigint NOT NULL, enabled boolean NOT NULL);
	INSERT INTO v1_mailbox
	SELECT g, 'user' || g || '@d' || g % 40 || '.example', 'd' || g % 40 || '.example',
		   1024 * (100 + g % 50), (g % 9 <> 0)::integer
	FROM generate_series(1, 50000) g;
	SELECT mailsync.link('mailboxes', 'v1_mailbox', 'v2_mailboxes', $${
		"id": "id",
		"email": "username",
		"domain": "domain",
		"quota_bytes": {"up": "legacy.quota_kb * 1024", "down": "current.quota_bytes / 1024", "to": "quota_kb"},
		"enabled": {"up": "legacy.active = 1", "down": "CASE WHEN current.enabled THEN 1 ELSE 0 END",
					"to": "active"}}$$);
});

# Both sides through the mapping, as one line per row in key order: the
# legacy rows mapped up, and the current rows as they are.
my $legacy_image = q{SELECT string_agg(concat_ws('|', id, username, domain, quota_kb * 1024, active = 1), E'\n' ORDER BY id) FROM v1_mailbox};
my $current_image = q{SELECT string_agg(concat_ws('|', id, email, domain, quota_bytes, enabled), E'\n' ORDER BY id) FROM v2_mailboxes};

sub images_agree
{
	my ($what) = @_;
	my ($count1, $count2, $distinct2, $md5_1, $md5_2) = split /\|/, $node->safe_psql('postgres', qq{
		SELECT (SELECT count(*) FROM v1_mailbox), (SELECT count(*) FROM v2_mailboxes),
			   (SELECT count(DISTINCT id) FROM v2_mailboxes),
			   md5(($legacy_image)), md5(($current_image))});
	is($count2, $count1, "$what: both tables have the same number of rows");
	is($distinct2, $count2, "$what: no key twice in the current table");
	is($md5_2, $md5_1, "$what: md5 of the current rows = md5 of the legacy rows mapped up")
	  or diag($node->safe_psql('postgres', q{
		SELECT id, l.username, l.quota_kb, l.active, c.email, c.quota_bytes, c.enabled
		FROM v1_mailbox l FULL JOIN v2_mailboxes c USING (id)
		WHERE (l.username, l.domain, l.quota_kb * 1024, l.active = 1)
			  IS DISTINCT FROM (c.email, c.domain, c.quota_bytes, c.enabled)
		ORDER BY id LIMIT 20}));
	my $verify = $node->safe_psql('postgres', q{SELECT * FROM mailsync.verify('mailboxes') LIMIT 20});
	is($verify, '', "$what: verify finds no drift");
	return;
}

sub recoveries
{
	my @runs = slurp_file($node->logfile) =~ /database system was not properly shut down; automatic recovery in progress/g;
	return scalar @runs;
}

###
### 1. a crash in the middle of a backfill
###

# A session holds a lock on legacy row 30500, in the middle of the 31st
# batch of 1000: the backfill commits 30 batches, writes the first half of
# the 31st and waits there (mailsync.lock_timeout is raised so that it
# waits rather than retries) until the crash.
my $blocker = $node->background_psql('postgres');
$blocker->query_safe('BEGIN');
$blocker->query_safe('SELECT id FROM v1_mailbox WHERE id = 30500 FOR UPDATE');

my ($bf_out, $bf_err) = ('', '');
my $backfill = IPC::Run::start(
	[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
	  '-c', q{SET mailsync.lock_timeout = '10min'},
	  '-c', q{CALL mailsync.backfill('mailboxes', batch_size => 1000)} ],
	'>', \$bf_out, '2>', \$bf_err);
$node->poll_query_until('postgres', q{
	SELECT rows_done = 30000 AND EXISTS (SELECT FROM pg_stat_activity
		WHERE query LIKE 'CALL mailsync.backfill(%' AND wait_event_type = 'Lock')
	FROM mailsync.backfills WHERE link = 'mailboxes'})
  or die "the backfill did not reach the locked row: $bf_err";
is($node->safe_psql('postgres', 'SELECT count(*), max(id) FROM v2_mailboxes'), '30000|30000',
	'before the crash: the 30 committed batches are visible in the current table');
# the rows the waiting batch has written so far, uncommitted: read from the
# heap pages, as no snapshot shows them (their xmin is the batch's
# transaction or a subtransaction of it, so not below its xid)
my $half = $node->safe_psql('postgres', q{
	SELECT count(*) FROM generate_series(0, pg_relation_size('v2_mailboxes') / 8192 - 1) AS b,
		heap_page_items(get_raw_page('v2_mailboxes', b::integer)) AS t
	WHERE t.t_xmin::text::bigint >= (SELECT backend_xid::text::bigint FROM pg_stat_activity
									 WHERE query LIKE 'CALL mailsync.backfill(%')});
note("the waiting batch has written $half rows");
ok($half > 0 && $half < 1000, 'and the 31st batch has written part of its rows, uncommitted');

$node->stop('immediate');
$backfill->finish;
isnt($?, 0, 'the backfill was cut short by the crash');
unlike($bf_err, qr/backfill of link "mailboxes" \(up\) done/, 'it did not report itself done');
$blocker->{run}->kill_kill;

$node->start;
is(recoveries(), 1, 'the server restarted through crash recovery');

my ($state, $position, $done, $total) = split /\|/, $node->safe_psql('postgres',
	q{SELECT state, position, rows_done, rows_total FROM mailsync.backfills WHERE link = 'mailboxes'});
is($state, 'running', 'after the restart the backfill is recorded as running');
is($position, '{30000}', 'its position is the last key of the last committed batch');
is("$done|$total", '30000|50000', 'with the rows those batches did, of the rows counted at its start');
is($node->safe_psql('postgres', 'SELECT count(*), count(DISTINCT id), min(id), max(id) FROM v2_mailboxes'),
	'30000|30000|1|30000',
	'the current table holds exactly the rows of the committed batches: the half-written batch is gone');
is($node->safe_psql('postgres', q{SELECT backfill, problem FROM mailsync.status() WHERE name = 'mailboxes'}),
	q{up: interrupted|the up backfill was interrupted at key {30000}; CALL mailsync.backfill('mailboxes') resumes it},
	'status() calls the backfill interrupted, and says how to resume it');

my ($ret, $stdout, $stderr) = $node->psql('postgres',
	q{CALL mailsync.backfill('mailboxes', batch_size => 1000)});
is($ret, 0, 'the backfill called again finishes') or diag($stderr);
like($stderr, qr/NOTICE:  backfill of link "mailboxes" \(up\) resumes after key \{30000\}: 30000 of 50000 rows done/,
	'it resumes after the recorded position');
like($stderr, qr/NOTICE:  backfill of link "mailboxes" \(up\) done: 50000 rows read, 20000 written/,
	'and writes only the 20000 rows after it');
like($stderr, qr/DETAIL:  This call copied 20000 rows /, 'this call read only those rows');
is($node->safe_psql('postgres',
	q{SELECT state, position, rows_done, rows_total FROM mailsync.backfills WHERE link = 'mailboxes'}),
	'done|{50000}|50000|50000', 'the backfill is recorded as done');
images_agree('after the resumed backfill');
is($node->safe_psql('postgres', q{SELECT backfill, coalesce(problem, 'none') FROM mailsync.status() WHERE name = 'mailboxes'}),
	'up: done|none', 'status() shows the backfill done and no problem');

###
### 2. a crash with transactions committed, open and prepared
###

# committed: row by row and set-based, through each table, and both in one
# transaction
$node->safe_psql('postgres', q{
	INSERT INTO v1_mailbox VALUES (60001, 'c1@new.example', 'new.example', 2048, 1);
	UPDATE v1_mailbox SET quota_kb = 777, active = 0 WHERE id = 10;
	DELETE FROM v1_mailbox WHERE id = 11;
	INSERT INTO v2_mailboxes VALUES (60002, 'c2@new.example', 'new.example', 3145728, false);
	UPDATE v2_mailboxes SET email = 'renamed20@d20.example', enabled = true WHERE id = 20;
	DELETE FROM v2_mailboxes WHERE id = 21;
	UPDATE v1_mailbox SET quota_kb = quota_kb + 1 WHERE id BETWEEN 1000 AND 1099;
	DELETE FROM v2_mailboxes WHERE id BETWEEN 2000 AND 2049;
	INSERT INTO v2_mailboxes SELECT g, 'bulk' || g || '@bulk.example', 'bulk.example', 1048576, true
		FROM generate_series(70001, 70040) g;
	BEGIN;
	UPDATE v1_mailbox SET username = 'both' || id || '@d.example' WHERE id IN (30, 31);
	DELETE FROM v2_mailboxes WHERE id = 32;
	COMMIT;
});
my $legacy_committed = $node->safe_psql('postgres', $legacy_image);
my $current_committed = $node->safe_psql('postgres', $current_image);
# the committed writes, as the two sides show them
my $committed_sql = q{
	SELECT string_agg(concat_ws(':', id, v1.quota_kb, v1.active, v1.username, v2.quota_bytes, v2.enabled, v2.email), ' ' ORDER BY id)
	FROM v1_mailbox v1 FULL JOIN v2_mailboxes v2 USING (id)
	WHERE id IN (10, 11, 20, 21, 30, 32, 60001, 60002, 1000, 2000, 70040)};
my $committed_rows = '10:777:0:user10@d10.example:795648:f:user10@d10.example '
  . '20:122880:1:renamed20@d20.example:125829120:t:renamed20@d20.example '
  . '30:133120:1:both30@d.example:136314880:t:both30@d.example '
  . '1000:102401:1:user1000@d0.example:104858624:t:user1000@d0.example '
  . '60001:2048:1:c1@new.example:2097152:t:c1@new.example '
  . '60002:3072:0:c2@new.example:3145728:f:c2@new.example '
  . '70040:1024:1:bulk70040@bulk.example:1048576:t:bulk70040@bulk.example';
is($node->safe_psql('postgres', $committed_sql), $committed_rows,
	'the committed writes are on both sides before the crash (keys 11, 21, 32 and 2000 deleted on both)');

# prepared: one to commit after the restart, one to roll back
$node->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO v1_mailbox VALUES (90001, 'p1@prep.example', 'prep.example', 1024, 1);
	UPDATE v2_mailboxes SET quota_bytes = 5 * 1048576 WHERE id = 100;
	PREPARE TRANSACTION 'to_commit';
	BEGIN;
	INSERT INTO v2_mailboxes VALUES (90002, 'p2@prep.example', 'prep.example', 1048576, true);
	DELETE FROM v1_mailbox WHERE id = 101;
	PREPARE TRANSACTION 'to_roll_back';
});

# open at the crash: one idle in transaction after row-by-row writes
# through both tables, one after set-based writes through both, and one
# waiting for a row the first holds
my $open_rows = $node->background_psql('postgres');
$open_rows->query_safe(q{
	BEGIN;
	INSERT INTO v1_mailbox VALUES (80001, 'o1@open.example', 'open.example', 1024, 1);
	UPDATE v1_mailbox SET quota_kb = 1, username = 'open40@d.example' WHERE id = 40;
	DELETE FROM v1_mailbox WHERE id = 41;
	INSERT INTO v2_mailboxes VALUES (80002, 'o2@open.example', 'open.example', 1048576, false);
	UPDATE v2_mailboxes SET enabled = NOT enabled WHERE id = 42;
	DELETE FROM v2_mailboxes WHERE id = 43;
});
my $open_sets = $node->background_psql('postgres');
$open_sets->query_safe(q{
	BEGIN;
	UPDATE v2_mailboxes SET quota_bytes = 1, email = 'set' || id || '@open.example' WHERE id BETWEEN 3000 AND 3099;
	INSERT INTO v1_mailbox SELECT g, 'open' || g || '@open.example', 'open.example', 1024, 1
		FROM generate_series(85001, 85050) g;
	DELETE FROM v1_mailbox WHERE id BETWEEN 4000 AND 4049;
});
# inside those transactions the other side has the writes already
is($open_rows->query_safe(q{
	SELECT (SELECT string_agg(concat_ws(':', id, email, quota_bytes, enabled), ',' ORDER BY id)
			FROM v2_mailboxes WHERE id IN (40, 41, 80001)),
		   (SELECT string_agg(concat_ws(':', id, username, active), ',' ORDER BY id)
			FROM v1_mailbox WHERE id IN (42, 43, 80002))}),
	'40:open40@d.example:1024:t,80001:o1@open.example:1048576:t|42:user42@d2.example:0,80002:o2@open.example:0',
	'the open row-by-row transaction sees its writes mirrored');
is($open_sets->query_safe(q{
	SELECT (SELECT count(*) FROM v1_mailbox WHERE id BETWEEN 3000 AND 3099 AND quota_kb = 0 AND username LIKE 'set%'),
		   (SELECT count(*) FROM v2_mailboxes WHERE id BETWEEN 85001 AND 85050),
		   (SELECT count(*) FROM v2_mailboxes WHERE id BETWEEN 4000 AND 4049)}),
	'100|50|0', 'the open set-based transaction sees its writes mirrored');

my $waiting = $node->background_psql('postgres');
$waiting->query_safe(q{SET application_name = 'waiting_writer'});
$waiting->{stdin} .= "UPDATE v2_mailboxes SET quota_bytes = 2 WHERE id BETWEEN 35 AND 45;\n";
$waiting->{run}->pump_nb;
$node->poll_query_until('postgres', q{
	SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE application_name = 'waiting_writer'})
  or die 'the waiting writer does not wait';
is($node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE state = 'idle in transaction'), count(*) FILTER (WHERE wait_event_type = 'Lock')
	FROM pg_stat_activity WHERE backend_type = 'client backend'}),
	'2|1', 'at the crash two transactions are open and one statement waits');

$node->stop('immediate');
# their psql lost its server: end it (the one whose statement was running
# has exited already)
$_->{run}->kill_kill for ($open_rows, $open_sets, $waiting);
$node->start;
is(recoveries(), 2, 'the server restarted through crash recovery again');

is($node->safe_psql('postgres', $committed_sql), $committed_rows,
	'after the restart the committed writes are on both sides');
is($node->safe_psql('postgres', $legacy_image), $legacy_committed,
	'after the restart the legacy table holds exactly the committed writes');
is($node->safe_psql('postgres', $current_image), $current_committed,
	'and so does the current table');
is($node->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM v1_mailbox WHERE id IN (11, 21, 32, 80001, 80002, 90001, 90002)
			  OR id BETWEEN 85001 AND 85050 OR id BETWEEN 2000 AND 2049),
		   (SELECT count(*) FROM v2_mailboxes WHERE id IN (11, 21, 32, 80001, 80002, 90001, 90002)
			  OR id BETWEEN 85001 AND 85050 OR id BETWEEN 2000 AND 2049),
		   (SELECT count(*) FROM v1_mailbox WHERE id IN (41, 43, 101) OR id BETWEEN 4000 AND 4049),
		   (SELECT count(*) FROM v2_mailboxes WHERE id IN (41, 43, 101) OR id BETWEEN 4000 AND 4049),
		   (SELECT count(*) FROM v2_mailboxes WHERE quota_bytes IN (1, 2) OR email LIKE '%@open.example'),
		   (SELECT count(*) FROM v1_mailbox WHERE quota_kb IN (0, 1) OR username LIKE '%@open.example')}),
	'0|0|53|53|0|0',
	'committed deletes stay deleted, uncommitted inserts are on neither side, uncommitted deletes and updates undone on both');
images_agree('after the crash');
is($node->safe_psql('postgres', 'SELECT gid FROM pg_prepared_xacts ORDER BY gid'), "to_commit\nto_roll_back",
	'the prepared transactions survived the crash');

$node->safe_psql('postgres', q{COMMIT PREPARED 'to_commit'});
$node->safe_psql('postgres', q{ROLLBACK PREPARED 'to_roll_back'});
is($node->safe_psql('postgres', q{
	SELECT concat_ws(' ',
		(SELECT string_agg(concat_ws(':', id, username, quota_kb, active), ',' ORDER BY id) FROM v1_mailbox WHERE id IN (90001, 90002, 100, 101)),
		(SELECT string_agg(concat_ws(':', id, email, quota_bytes, enabled), ',' ORDER BY id) FROM v2_mailboxes WHERE id IN (90001, 90002, 100, 101)))}),
	'100:user100@d20.example:5120:1,101:user101@d21.example:103424:1,90001:p1@prep.example:1024:1 '
	. '100:user100@d20.example:5242880:t,101:user101@d21.example:105906176:t,90001:p1@prep.example:1048576:t',
	'the committed prepared transaction shows on both sides, the rolled back one on neither');
images_agree('after the prepared transactions');

# the link still works after the crashes
$node->safe_psql('postgres', q{
	INSERT INTO v1_mailbox VALUES (95001, 'after@crash.example', 'crash.example', 4096, 0);
	UPDATE v2_mailboxes SET enabled = false, email = 'after50@d10.example' WHERE id = 50;
	DELETE FROM v1_mailbox WHERE id = 51;
});
is($node->safe_psql('postgres', q{
	SELECT string_agg(concat_ws(':', id, v1.username, v1.active, v2.email, v2.enabled), ' ' ORDER BY id)
	FROM v1_mailbox v1 FULL JOIN v2_mailboxes v2 USING (id) WHERE id IN (50, 51, 95001)}),
	'50:after50@d10.example:0:after50@d10.example:f 95001:after@crash.example:0:after@crash.example:f',
	'writes after the restart sync both ways');
images_agree('at the end');
is($node->safe_psql('postgres', q{SELECT triggers_ok, coalesce(problem, 'none') FROM mailsync.status() WHERE name = 'mailboxes'}),
	't|none', 'status() finds no problem');

$node->stop;
done_testing();
