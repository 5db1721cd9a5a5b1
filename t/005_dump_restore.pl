# pg_dump and restore of a database with links: the custom format through
# pg_restore, and the plain format through psql, each into a fresh
# database.  The catalog (links, backfills, verifications) must come back
# as it was, every sync trigger exactly once with the same definition, the
# rows unchanged, and the restored links must work: writes sync in the
# directions each link syncs and no other, rows inserted without ids on
# either side of the shared sequence do not collide, verify is empty and
# status() finds no problem.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init;
$node->start;

# Four links of a Modoboa-style upgrade:
#   domains    both ways, a text key renamed, transforms each way
#   mailboxes  both ways, the legacy serial shared with the current key, a
#              uuid set on insert only
#   aliases    up only (legacy -> current), no shared sequence
#   quota      down only (current -> legacy)
$node->safe_psql('postgres', 'CREATE DATABASE mail');
$node->safe_psql('mail', q{
	CREATE EXTENSION mailsync;
	CREATE SCHEMA v1;
	CREATE SCHEMA v2;

	CREATE TABLE v1.domain (domain text PRIMARY KEY, description text NOT NULL DEFAULT '',
		maxquota_mb integer NOT NULL, active smallint NOT NULL);
	CREATE TABLE v2.domains (name text PRIMARY KEY, description text NOT NULL,
		quota_bytes bigint NOT NULL, status text NOT NULL CHECK (status IN ('enabled', 'disabled')));
	INSERT INTO v1.domain VALUES ('a.example', 'first', 1024, 1), ('b.example', '', 2048, 0),
		('c.example', 'third', 512, 1);
	SELECT mailsync.link('domains', 'v1.domain', 'v2.domains', $${
		"name": "domain",
		"description": "description",
		"quota_bytes": {"up": "legacy.maxquota_mb::bigint * 1048576",
						"down": "(current.quota_bytes / 1048576)::integer", "to": "maxquota_mb"},
		"status": {"up": "CASE WHEN legacy.active = 1 THEN 'enabled' ELSE 'disabled' END",
				   "down": "CASE WHEN current.status = 'enabled' THEN 1 ELSE 0 END", "to": "active"}}$$,
		backfill => true);

	CREATE TABLE v1.mailbox (id serial PRIMARY KEY, username text NOT NULL UNIQUE,
		quota_kb bigint NOT NULL, active boolean NOT NULL);
	CREATE TABLE v2.mailboxes (id integer PRIMARY KEY, uuid uuid NOT NULL UNIQUE, email text NOT NULL UNIQUE,
		quota_bytes bigint NOT NULL, state text NOT NULL);
	INSERT INTO v1.mailbox (username, quota_kb, active)
	SELECT 'user' || g || '@a.example', 1024 * g, g % 3 <> 0 FROM generate_series(1, 300) g;
	SELECT mailsync.link('mailboxes', 'v1.mailbox', 'v2.mailboxes', $${
		"id": "id",
		"uuid": {"up": "mailsync.uuid_v7()"},
		"email": "username",
		"quota_bytes": {"up": "legacy.quota_kb * 1024", "down": "current.quota_bytes / 1024", "to": "quota_kb"},
		"state": {"up": "CASE WHEN legacy.active THEN 'active' ELSE 'hold' END",
				  "down": "current.state = 'active'", "to": "active"}}$$);

	CREATE TABLE v1.alias (id integer PRIMARY KEY, address text NOT NULL, goto text NOT NULL,
		active boolean NOT NULL DEFAULT true);
	CREATE TABLE v2.aliases (id integer PRIMARY KEY, source text NOT NULL, recipients text[] NOT NULL,
		enabled boolean NOT NULL, created timestamptz NOT NULL DEFAULT now());
	INSERT INTO v1.alias SELECT g, 'alias' || g || '@b.example', 'user' || g || '@a.example,postmaster@b.example', g % 4 <> 0
	FROM generate_series(1, 40) g;
	SELECT mailsync.link('aliases', 'v1.alias', 'v2.aliases', $${
		"id": "id",
		"source": "address",
		"recipients": {"up": "string_to_array(legacy.goto, ',')"},
		"enabled": "active"}$$,
		direction => 'up', backfill => true, share_sequence => false);

	CREATE TABLE v1.quota (username text PRIMARY KEY, bytes bigint NOT NULL, messages integer NOT NULL);
	CREATE TABLE v2.quota (username text PRIMARY KEY, bytes bigint NOT NULL, messages integer NOT NULL,
		updated timestamptz NOT NULL DEFAULT now());
	INSERT INTO v2.quota SELECT 'user' || g || '@a.example', 1000 * g, g FROM generate_series(1, 50) g;
	SELECT mailsync.link('quota', 'v1.quota', 'v2.quota', $${
		"username": "username", "bytes": "bytes", "messages": "messages"}$$,
		direction => 'down');
});
# carried over by the resumable backfill, and verified: so that
# mailsync.backfills and mailsync.verifications have rows to dump
$node->safe_psql('mail', q{CALL mailsync.backfill('mailboxes', batch_size => 100)});
$node->safe_psql('mail', q{CALL mailsync.backfill('quota')});
$node->safe_psql('mail', q{SELECT mailsync.verify_summary(name) FROM mailsync.links});

# What must come back the same
my %catalog_sql = (
	links => 'SELECT l::text FROM mailsync.links l ORDER BY name',
	backfills => 'SELECT b::text FROM mailsync.backfills b ORDER BY link, direction',
	verifications => 'SELECT v::text FROM mailsync.verifications v ORDER BY link',
	triggers => q{
		SELECT tgrelid::regclass::text, tgname, tgenabled, pg_get_triggerdef(oid)
		FROM pg_trigger WHERE tgname LIKE 'mailsync%' ORDER BY 1, 2},
	defaults => q{
		SELECT attrelid::regclass::text, attname, pg_get_expr(adbin, adrelid)
		FROM pg_attrdef JOIN pg_attribute ON attrelid = adrelid AND attnum = adnum
		WHERE attrelid::regclass::text LIKE 'v_.%' ORDER BY 1, 2},
	sequence => q{SELECT last_value, is_called FROM v1.mailbox_id_seq},
	# the rows of each table: count and ordered checksum
	rows => join "\nUNION ALL\n",
	  map { "SELECT '$_', count(*), md5(string_agg(t::text, E'\\n' ORDER BY t::text)) FROM $_ t" }
	  qw(v1.domain v2.domains v1.mailbox v2.mailboxes v1.alias v2.aliases v1.quota v2.quota));

my %source;
$source{$_} = $node->safe_psql('mail', $catalog_sql{$_}) for keys %catalog_sql;
note("the source catalog:\n$source{links}\n$source{backfills}\n$source{verifications}");

# the trigger inventory the links must have: four on each table a link
# syncs from, none on a table it only writes
my $trigger_count_sql = q{
	SELECT c.oid::regclass::text, t.tgname, count(*)
	FROM pg_class c JOIN pg_trigger t ON t.tgrelid = c.oid
	WHERE t.tgname LIKE 'mailsync%'
	GROUP BY 1, 2 ORDER BY 1, 2};
my $expected_triggers = join "\n", map {
	my ($table, $link) = @$_;
	map { "$table|mailsync_${link}_$_|1" } qw(delete insert truncate update)
} ([ 'v1.alias', 'aliases' ], [ 'v1.domain', 'domains' ], [ 'v1.mailbox', 'mailboxes' ],
   [ 'v2.domains', 'domains' ], [ 'v2.mailboxes', 'mailboxes' ], [ 'v2.quota', 'quota' ]);
is($node->safe_psql('mail', $trigger_count_sql), $expected_triggers,
	'source: four sync triggers on each table a link syncs from');
is($node->safe_psql('mail', q{SELECT count(*) FROM mailsync.links}), '4', 'source: four links');
like($source{backfills}, qr/^\(mailboxes,up,done,\{300\},\{300\},300,300,100,/m,
	'source: a finished backfill is recorded');

# dump, in both formats
my $dumpdir = PostgreSQL::Test::Utils::tempdir;
$node->command_ok([ 'pg_dump', '-Fc', '-f', "$dumpdir/mail.dump", '-d', $node->connstr('mail') ],
	'pg_dump -Fc');
$node->command_ok([ 'pg_dump', '-Fp', '-f', "$dumpdir/mail.sql", '-d', $node->connstr('mail') ],
	'pg_dump -Fp');

sub run_quiet
{
	my ($cmd, $what) = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run($cmd, '>', \$out, '2>', \$err);
	ok($ok, "$what succeeds");
	is($err, '', "$what reports nothing on stderr");
	return;
}

# every link of the restored database, as status() sees it: no problem
sub status_clean
{
	my ($db, $what) = @_;
	is($node->safe_psql($db, q{
		SELECT string_agg(name || ':' || triggers_ok || ':' || coalesce(problem, 'none'), ' ' ORDER BY name)
		FROM mailsync.status()}),
		'aliases:true:none domains:true:none mailboxes:true:none quota:true:none', $what);
	return;
}

$node->safe_psql('postgres', 'CREATE DATABASE restored_custom');
run_quiet([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('restored_custom'), "$dumpdir/mail.dump" ],
	'pg_restore of the custom dump');
$node->safe_psql('postgres', 'CREATE DATABASE restored_plain');
run_quiet([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('restored_plain'),
			'-f', "$dumpdir/mail.sql" ],
	'psql of the plain dump');

for my $db (qw(restored_custom restored_plain))
{
	for my $what (sort keys %catalog_sql)
	{
		is($node->safe_psql($db, $catalog_sql{$what}), $source{$what}, "$db: $what as in the source");
	}
	is($node->safe_psql($db, $trigger_count_sql), $expected_triggers,
		"$db: each sync trigger exactly once, on the tables each link syncs from");
	status_clean($db, "$db: status() finds no problem");
	is($node->safe_psql($db, q{
		SELECT coalesce(string_agg(l.name || ' ' || v::text, E'\n'), 'none')
		FROM mailsync.links l, mailsync.verify(l.name) v}),
		'none', "$db: verify finds no drift in any link");

	# writes in the restored database sync both ways on both-way links
	$node->safe_psql($db, q{
		INSERT INTO v1.domain VALUES ('new.example', 'from v1', 100, 1);
		UPDATE v2.domains SET status = 'disabled', quota_bytes = 3 * 1048576 WHERE name = 'a.example';
		DELETE FROM v1.domain WHERE domain = 'b.example';
		INSERT INTO v2.domains VALUES ('v2.example', 'from v2', 5 * 1048576, 'enabled');
	});
	is($node->safe_psql($db, q{
		SELECT string_agg(concat_ws(':', name, d1.description, d1.maxquota_mb, d1.active,
									d2.description, d2.quota_bytes, d2.status), ' ' ORDER BY name)
		FROM v1.domain d1 FULL JOIN v2.domains d2 ON d2.name = d1.domain}),
		'a.example:first:3:0:first:3145728:disabled c.example:third:512:1:third:536870912:enabled '
		. 'new.example:from v1:100:1:from v1:104857600:enabled v2.example:from v2:5:1:from v2:5242880:enabled',
		"$db: domains: writes sync both ways");

	# rows inserted without ids on either side draw from the one sequence
	$node->safe_psql($db, q{
		INSERT INTO v1.mailbox (username, quota_kb, active) VALUES ('new1@a.example', 2048, true);
		INSERT INTO v2.mailboxes (uuid, email, quota_bytes, state)
		VALUES (mailsync.uuid_v4(), 'new2@a.example', 4194304, 'hold');
		UPDATE v2.mailboxes SET state = 'hold' WHERE id = 5;
		DELETE FROM v1.mailbox WHERE id = 6;
	});
	is($node->safe_psql($db, q{
		SELECT string_agg(concat_ws(':', id, m1.username, m1.quota_kb, m1.active,
									m2.email, m2.quota_bytes, m2.state, m2.uuid IS NOT NULL), ' ' ORDER BY id)
		FROM v1.mailbox m1 FULL JOIN v2.mailboxes m2 USING (id) WHERE id IN (5, 6) OR id > 300}),
		'5:user5@a.example:5120:f:user5@a.example:5242880:hold:t '
		. '301:new1@a.example:2048:t:new1@a.example:2097152:active:t '
		. '302:new2@a.example:4096:f:new2@a.example:4194304:hold:t',
		"$db: mailboxes: writes sync both ways, new ids from the shared sequence");

	# one-way links write one way only
	$node->safe_psql($db, q{
		INSERT INTO v1.alias VALUES (100, 'new@b.example', 'x@a.example,y@a.example');
		UPDATE v1.alias SET active = false WHERE id = 1;
		INSERT INTO v2.aliases (id, source, recipients, enabled) VALUES (200, 'v2only@b.example', '{z@a.example}', true);
		UPDATE v2.quota SET bytes = 1, messages = 1 WHERE username = 'user1@a.example';
		INSERT INTO v2.quota VALUES ('new@a.example', 7, 7);
		UPDATE v1.quota SET messages = 99 WHERE username = 'user2@a.example';
	});
	is($node->safe_psql($db, q{
		SELECT concat_ws(' | ',
			(SELECT string_agg(concat_ws(':', id, a1.address, a1.active, a2.source, a2.recipients, a2.enabled), ' ' ORDER BY id)
			 FROM v1.alias a1 FULL JOIN v2.aliases a2 USING (id) WHERE id IN (1, 100, 200)),
			(SELECT string_agg(concat_ws(':', username, q1.bytes, q1.messages, q2.bytes, q2.messages), ' ' ORDER BY username)
			 FROM v1.quota q1 FULL JOIN v2.quota q2 USING (username)
			 WHERE username IN ('user1@a.example', 'user2@a.example', 'new@a.example')))}),
		'1:alias1@b.example:f:alias1@b.example:{user1@a.example,postmaster@b.example}:f '
		. '100:new@b.example:t:new@b.example:{x@a.example,y@a.example}:t '
		. '200:v2only@b.example:{z@a.example}:t'
		. ' | new@a.example:7:7:7:7 user1@a.example:1:1:1:1 user2@a.example:2000:99:2000:2',
		"$db: aliases sync up only, quota down only");

	# verify reports the rows written on the side a one-way link does not
	# sync from, and nothing else
	is($node->safe_psql($db, q{
		SELECT string_agg(concat_ws(' ', l.name, v.key, v.problem, v.legacy, v.current), E'\n' ORDER BY l.name)
		FROM mailsync.links l, mailsync.verify(l.name) v}),
		qq(aliases {"id": 200} missing in legacy {"source": "v2only\@b.example", "enabled": true, "recipients": ["z\@a.example"]}\n)
		. qq(quota {"username": "user2\@a.example"} differs {"messages": 99} {"messages": 2}),
		"$db: after the writes verify finds only the rows written against a one-way link");
	status_clean($db, "$db: status() still finds no problem");

	# unlink works on a restored link: triggers gone, the key default
	# given back
	$node->safe_psql($db, q{SELECT mailsync.unlink('mailboxes')});
	is($node->safe_psql($db, q{
		SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'mailsync_mailboxes_%'),
			   (SELECT count(*) FROM mailsync.links WHERE name = 'mailboxes'),
			   (SELECT count(*) FROM pg_attrdef WHERE adrelid = 'v2.mailboxes'::regclass),
			   (SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'v1.mailbox'::regclass)}),
		"0|0|0|nextval('v1.mailbox_id_seq'::regclass)",
		"$db: unlink of a restored link drops its triggers and gives back the key default");
}

$node->stop;
done_testing();
