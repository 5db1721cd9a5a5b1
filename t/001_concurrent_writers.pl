# Four clients write the same small set of rows through both tables of a
# link at once, for a few thousand transactions: inserts, upserts, updates
# and deletes.  Writers that meet head-on may deadlock, and pgbench retries
# those; at the end the two tables must agree row for row through the
# mapping, and the link must not have lost or invented a row.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('writers');
$node->init;
$node->append_conf('postgresql.conf', "deadlock_timeout = 50ms\n");
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION mailsync;
	CREATE TABLE v1_users (id integer PRIMARY KEY, login text NOT NULL, active boolean NOT NULL, hits integer NOT NULL);
	CREATE TABLE v2_users (id integer PRIMARY KEY, name text NOT NULL, status text NOT NULL, hits integer NOT NULL);
	SELECT mailsync.link('users', 'v1_users', 'v2_users', $${
		"id": "id",
		"name": {"up": "upper(legacy.login)", "down": "lower(current.name)", "to": "login"},
		"status": {"up": "CASE WHEN legacy.active THEN 'active' ELSE 'disabled' END",
				   "down": "current.status = 'active'", "to": "active"},
		"hits": "hits"}$$);
});

my %scripts = (
	'001_v1_upsert@4' => q{
		\set id random(1, 150)
		INSERT INTO v1_users VALUES (:id, 'u' || :id, true, 1)
			ON CONFLICT (id) DO UPDATE SET hits = v1_users.hits + 1, active = NOT v1_users.active;
	},
	'002_v2_upsert@4' => q{
		\set id random(1, 150)
		INSERT INTO v2_users VALUES (:id, 'U' || :id, 'active', 1)
			ON CONFLICT (id) DO UPDATE SET hits = v2_users.hits + 1, status = 'disabled';
	},
	'003_v1_update@3' => q{
		\set id random(1, 150)
		UPDATE v1_users SET hits = hits + 10, login = 'v1-' || :id WHERE id = :id;
	},
	'004_v2_update@3' => q{
		\set id random(1, 150)
		UPDATE v2_users SET hits = hits + 100, name = 'V2-' || :id WHERE id = :id;
	},
	'005_v1_delete@1' => q{
		\set id random(1, 150)
		DELETE FROM v1_users WHERE id = :id;
	},
	'006_v2_delete@1' => q{
		\set id random(1, 150)
		DELETE FROM v2_users WHERE id = :id;
	},
	'007_both_in_one_transaction@1' => q{
		\set a random(1, 150)
		\set b random(1, 150)
		BEGIN;
		UPDATE v1_users SET hits = hits + 1000 WHERE id = :a;
		UPDATE v2_users SET hits = hits + 1000 WHERE id = :b;
		COMMIT;
	});

$node->pgbench(
	'--no-vacuum --client=4 --transactions=1500 --max-tries=50',
	0,
	[ qr{number of transactions actually processed: 6000/6000} ],
	[ qr{^$} ],
	'pgbench writes through both tables',
	\%scripts);

my $v1_rows = $node->safe_psql('postgres', 'SELECT count(*) FROM v1_users');
my $v2_rows = $node->safe_psql('postgres', 'SELECT count(*) FROM v2_users');
cmp_ok($v1_rows, '>', 0, 'the writers left rows behind');
is($v2_rows, $v1_rows, 'both tables have the same number of rows');

my $drift = $node->safe_psql('postgres', q{
	SELECT count(*) FROM (
		(SELECT id, upper(login), CASE WHEN active THEN 'active' ELSE 'disabled' END, hits FROM v1_users
		 EXCEPT SELECT id, name, status, hits FROM v2_users)
		UNION ALL
		(SELECT id, name, status, hits FROM v2_users
		 EXCEPT SELECT id, upper(login), CASE WHEN active THEN 'active' ELSE 'disabled' END, hits FROM v1_users)
	) AS d;
});
is($drift, '0', 'no row differs between the tables through the mapping');

my $checksums = $node->safe_psql('postgres', q{
	SELECT (SELECT md5(string_agg(id || ':' || upper(login) || ':' || active || ':' || hits, ',' ORDER BY id)) FROM v1_users)
		 = (SELECT md5(string_agg(id || ':' || name || ':' || (status = 'active') || ':' || hits, ',' ORDER BY id)) FROM v2_users);
});
is($checksums, 't', 'ordered checksums of both tables agree');

my $status = $node->safe_psql('postgres',
	q{SELECT triggers_ok, coalesce(problem, 'none') FROM mailsync.status() WHERE name = 'users'});
is($status, 't|none', 'the link is healthy afterwards');

$node->stop;
done_testing();
