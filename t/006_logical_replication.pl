# Logical replication: a subscriber receives the legacy table from the old
# application's database, and a replica link (link(..., replica => true))
# keeps the current table derived from the replicated rows: the initial
# copy, INSERT, UPDATE (a key change too), DELETE and TRUNCATE.
#
# Then both tables of a link are published: the subscriber's replica link
# must not apply a row a second time (the other table receives the
# publisher's own copy of it), so every change lands exactly once and the
# apply worker never fails on a duplicate key.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $pub = PostgreSQL::Test::Cluster->new('publisher');
$pub->init(allows_streaming => 'logical');
$pub->start;
my $sub = PostgreSQL::Test::Cluster->new('subscriber');
$sub->init;
$sub->append_conf('postgresql.conf', "wal_retrieve_retry_interval = 100ms\n");
$sub->start;

my $aliases_v1 = q{
	CREATE TABLE v1_alias (id integer PRIMARY KEY, address text NOT NULL,
						   goto text NOT NULL, active boolean NOT NULL DEFAULT true);
};
my $aliases_v2 = q{
	CREATE TABLE v2_alias (id integer PRIMARY KEY, address text NOT NULL,
						   recipients text NOT NULL, enabled text NOT NULL);
};
my $mapping = q{$${
	"id": "id", "address": "address", "recipients": "goto",
	"enabled": {"up": "CASE WHEN legacy.active THEN 'yes' ELSE 'no' END",
				"down": "current.enabled = 'yes'", "to": "active"}}$$};

# the rows of v1_alias as they must look in v2_alias, and v2_alias itself
my $v1_mapped = q{SELECT string_agg(format('%s|%s|%s|%s', id, address, goto,
	CASE WHEN active THEN 'yes' ELSE 'no' END), ',' ORDER BY id) FROM v1_alias};
my $v2_rows = q{SELECT string_agg(format('%s|%s|%s|%s', id, address, recipients, enabled),
	',' ORDER BY id) FROM v2_alias};

sub wait_synced
{
	my ($node, $db) = @_;
	$node->poll_query_until($db,
		"SELECT count(*) = 0 FROM pg_subscription_rel WHERE srsubstate NOT IN ('r', 's')")
	  or die "timed out waiting for the initial copy";
}

#
# 1. Only the legacy table is published
#
$pub->safe_psql('postgres', $aliases_v1 . q{
	INSERT INTO v1_alias VALUES (1, 'postmaster@example.org', 'admin@example.org', true),
								(2, 'abuse@example.org', 'admin@example.org', false);
	CREATE PUBLICATION legacy_pub FOR TABLE v1_alias;
});
$sub->safe_psql('postgres', 'CREATE EXTENSION mailsync;' . $aliases_v1 . $aliases_v2
	  . "SELECT mailsync.link('alias', 'v1_alias', 'v2_alias', $mapping, replica => true);");

is($sub->safe_psql('postgres', q{
	SELECT string_agg(format('%s %s %s', tgrelid::regclass, tgname, tgenabled), ', ' ORDER BY tgrelid::regclass::text, tgname)
	FROM pg_trigger WHERE tgname LIKE 'mailsync_alias_%' AND tgrelid = 'v1_alias'::regclass}),
	'v1_alias mailsync_alias_apply_delete R, v1_alias mailsync_alias_apply_insert R, '
	  . 'v1_alias mailsync_alias_apply_update R, v1_alias mailsync_alias_delete O, '
	  . 'v1_alias mailsync_alias_insert O, v1_alias mailsync_alias_truncate A, '
	  . 'v1_alias mailsync_alias_update O',
	'a replica link adds row triggers that fire for replication, and its TRUNCATE trigger fires always');

my $pubconn = $pub->connstr . ' dbname=postgres';
$sub->safe_psql('postgres',
	"CREATE SUBSCRIPTION legacy_sub CONNECTION '$pubconn' PUBLICATION legacy_pub");
wait_synced($sub, 'postgres');
$pub->wait_for_catchup('legacy_sub');

is($sub->safe_psql('postgres', $v2_rows),
	'1|postmaster@example.org|admin@example.org|yes,2|abuse@example.org|admin@example.org|no',
	'the initial copy of the legacy table reaches the current table');

$pub->safe_psql('postgres', q{
	INSERT INTO v1_alias VALUES (3, 'sales@example.org', 'bob@example.org,carol@example.org', true);
	INSERT INTO v1_alias SELECT g, 'list' || g || '@example.org', 'x@example.org', g % 2 = 0
	FROM generate_series(10, 59) g;
	UPDATE v1_alias SET goto = 'alice@example.org', active = true WHERE id = 2;
	UPDATE v1_alias SET id = 4 WHERE id = 3;
	DELETE FROM v1_alias WHERE id = 1 OR id BETWEEN 50 AND 59;
	UPDATE v1_alias SET active = NOT active WHERE id BETWEEN 10 AND 19;
});
$pub->wait_for_catchup('legacy_sub');

is($sub->safe_psql('postgres', $v2_rows), $pub->safe_psql('postgres', $v1_mapped),
	'inserts, updates, a key change and deletes on the publisher reach the current table');
is($sub->safe_psql('postgres', 'SELECT count(*) FROM v2_alias WHERE id IN (1, 3)'), '0',
	'deleted and moved keys are gone from the current table');
is($sub->safe_psql('postgres', q{SELECT count(*) FROM mailsync.verify('alias')}), '0',
	'verify finds no drift on the subscriber');
is($sub->safe_psql('postgres', q{SELECT coalesce(problem, 'none') FROM mailsync.status() WHERE name = 'alias'}),
	'none', 'status reports no problem for the replica link');

$pub->safe_psql('postgres', 'TRUNCATE v1_alias');
$pub->wait_for_catchup('legacy_sub');
is($sub->safe_psql('postgres', 'SELECT (SELECT count(*) FROM v1_alias) + (SELECT count(*) FROM v2_alias)'),
	'0', 'a TRUNCATE on the publisher empties both tables on the subscriber');

$pub->safe_psql('postgres', q{
	INSERT INTO v1_alias VALUES (7, 'info@example.org', 'dave@example.org', true)});
$pub->wait_for_catchup('legacy_sub');
is($sub->safe_psql('postgres', $v2_rows), '7|info@example.org|dave@example.org|yes',
	'rows replicated after the TRUNCATE are mirrored again');

#
# 2. Both tables of a linked pair are published; both sides have the link
#
for my $node ($pub, $sub)
{
	$node->safe_psql('postgres', 'CREATE DATABASE both_db');
	$node->safe_psql('both_db', 'CREATE EXTENSION mailsync;' . $aliases_v1 . $aliases_v2
		  . "SELECT mailsync.link('alias', 'v1_alias', 'v2_alias', $mapping"
		  . ($node == $sub ? ', replica => true' : '') . ');');
}
$pub->safe_psql('both_db', q{
	INSERT INTO v1_alias VALUES (1, 'a@example.org', 'x@example.org', true);
	INSERT INTO v2_alias VALUES (2, 'b@example.org', 'y@example.org', 'no');
	CREATE PUBLICATION both_pub FOR TABLE v1_alias, v2_alias;
});
my $bothconn = $pub->connstr . ' dbname=both_db';
$sub->safe_psql('both_db',
	"CREATE SUBSCRIPTION both_sub CONNECTION '$bothconn' PUBLICATION both_pub");
wait_synced($sub, 'both_db');
$pub->wait_for_catchup('both_sub');

$pub->safe_psql('both_db', q{
	INSERT INTO v1_alias VALUES (3, 'c@example.org', 'z@example.org', false);
	INSERT INTO v2_alias SELECT g, 'n' || g || '@example.org', 'w@example.org', 'yes'
	FROM generate_series(10, 29) g;
	UPDATE v1_alias SET goto = goto || ',extra@example.org' WHERE id IN (1, 2, 10);
	UPDATE v2_alias SET enabled = 'no' WHERE id BETWEEN 20 AND 25;
	UPDATE v2_alias SET id = 4 WHERE id = 3;
	DELETE FROM v1_alias WHERE id = 2;
	DELETE FROM v2_alias WHERE id = 29;
});
$pub->wait_for_catchup('both_sub');

for my $q ([ 'legacy', 'SELECT * FROM v1_alias ORDER BY id' ],
	[ 'current', 'SELECT * FROM v2_alias ORDER BY id' ])
{
	is($sub->safe_psql('both_db', $q->[1]), $pub->safe_psql('both_db', $q->[1]),
		"with both tables published, the subscriber's $q->[0] table equals the publisher's");
}
is($sub->safe_psql('both_db', q{SELECT count(*) FROM mailsync.verify('alias')}), '0',
	'verify finds no drift on the subscriber of both tables');

$pub->safe_psql('both_db', 'TRUNCATE v1_alias');
$pub->wait_for_catchup('both_sub');
is($sub->safe_psql('both_db', 'SELECT (SELECT count(*) FROM v1_alias) + (SELECT count(*) FROM v2_alias)'),
	'0', 'a TRUNCATE through the publisher\'s link empties both tables on the subscriber');

# the apply workers never failed: no duplicate key, no other error
my $log = slurp_file($sub->logfile);
unlike($log, qr/ERROR:/, 'the subscriber\'s log holds no error');

$sub->stop;
$pub->stop;
done_testing();
