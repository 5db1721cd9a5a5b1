#!/usr/bin/env bash
# mailsync's benchmark (see bench/README.md): mailsync's sync triggers (X)
# against the baselines of ../shared/bench-anchor, all in one run on one
# throwaway cluster:
#   A  v1 only                      B  hand-written set-based dual write
#   C  PL/pgSQL row triggers        D  PL/pgSQL statement triggers (one way)
#   X  mailsync, the same mapping
# It prints milliseconds per case (median of the repetitions), the ratio
# R = (X - A) / (B - A) per workload, pgbench tps, backend memory of a large
# UPDATE, UUID throughput, and a backfill and a verify of BF_ROWS rows
# against a plain INSERT ... SELECT and a plain full join.  --quick runs
# tiny sizes once, so the test
# command can check that the benchmark still runs; its figures mean nothing.
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"

quick=0
[ "${1:-}" = "--quick" ] && quick=1
if [ $quick = 1 ]; then
	BULK=2000 LOOP=1000 PGB_SECS=1 REPS=1 MEM_ROWS=20000 UUIDS=10000 BF_ROWS=5000
else
	BULK=200000 LOOP=100000 PGB_SECS=10 REPS=5 MEM_ROWS=2000000 UUIDS=1000000 BF_ROWS=1000000
fi

ms_need_root
ms_install_deps
[ "${MS_BENCH_NO_BUILD:-0}" = 1 ] || ms_build_install ""

anchor="$MS_ROOT/../shared/bench-anchor"
[ -d "$anchor" ] || anchor="$MS_ROOT/bench/anchor"
work=$(mktemp -d /tmp/mailsync-bench.XXXXXX)
port=54331
trap 'ms_cluster_stop "$work/cluster"; rm -rf "$work"' EXIT

# the anchor files, sized for this run
mkdir -p "$work/sql"
for f in "$anchor"/*.sql; do
	sed -e "s/200000/$BULK/g" -e "s/100000/$LOOP/g" "$f" > "$work/sql/$(basename "$f")"
done
cp "$MS_ROOT/bench/link_x.sql" "$work/sql/"
# a link outlives the tables it names: unlink before the schema is rebuilt
echo "SELECT mailsync.unlink(name) FROM mailsync.links;" > "$work/sql/reset.sql"
chown -R postgres "$work"

ms_say "starting a throwaway cluster in $work/cluster"
ms_cluster_start "$work/cluster" "$port"
psql_() {
	runuser -u postgres -- env PGOPTIONS="-c client_min_messages=warning" \
		"$MS_PG_BIN/psql" -h "$work/cluster/sock" -p "$port" -X -q -v ON_ERROR_STOP=1 "$@"
}
# the same settings for every case; fewer background surprises between runs
psql_ -d postgres -c "ALTER SYSTEM SET synchronous_commit = off" \
	-c "ALTER SYSTEM SET autovacuum = off" -c "ALTER SYSTEM SET max_wal_size = '8GB'" \
	-c "ALTER SYSTEM SET checkpoint_timeout = '1h'" -c "SELECT pg_reload_conf()" >/dev/null
psql_ -d postgres -c "CREATE DATABASE bench" >/dev/null
psql_ -d bench -c "CREATE EXTENSION mailsync; CREATE EXTENSION IF NOT EXISTS pgcrypto" >/dev/null 2>&1 || \
	psql_ -d bench -c "CREATE EXTENSION IF NOT EXISTS mailsync" >/dev/null

# setup_files CASE: the SQL that prepares a case after the schema
setup_files() {
	local s="-f $work/sql/reset.sql -f $work/sql/baseline_schema.sql"
	case $1 in
		C) s="$s -f $work/sql/plpgsql_sync.sql" ;;
		D) s="$s -f $work/sql/plpgsql_stmt_sync.sql" ;;
		X) s="$s -f $work/sql/link_x.sql" ;;
	esac
	echo "$s"
}

# times CASE WORKLOAD-FILE: milliseconds of each timed statement, one a line
times() {
	# shellcheck disable=SC2046
	psql_ -d bench $(setup_files "$1") -f "$work/sql/$2" 2>&1 \
		| sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p'
}

declare -A T	# T[case,workload,rep] = ms
record() {	# record CASE KIND REP (KIND bulk|loop)
	local c=$1 kind=$2 rep=$3 file i=0 names
	if [ "$kind" = bulk ]; then
		file=bulk_v1.sql; [ "$c" = B ] && file=bulk_dual.sql
		names="bulk_insert bulk_update bulk_delete"
	else
		file=loop_v1.sql; [ "$c" = B ] && file=loop_dual.sql
		names="loop_insert loop_update loop_delete"
	fi
	local vals
	psql_ -d bench -c "CHECKPOINT" >/dev/null
	vals=$(times "$c" "$file")
	echo "raw: case $c rep $rep $kind: $(echo $vals)"
	set -- $names
	for v in $vals; do
		T[$c,$1,$rep]=$v
		shift
	done
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
med() {	# med CASE WORKLOAD
	local r vals=""
	for r in $(seq 1 "$REPS"); do vals="$vals ${T[$1,$2,$r]:-}"; done
	echo "$vals" | median
}

cases="A B C D X"
for rep in $(seq 1 "$REPS"); do
	for c in $cases; do
		ms_say "run $rep/$REPS: case $c, bulk ($BULK rows) and loops ($LOOP statements)"
		record "$c" bulk "$rep"
		record "$c" loop "$rep"
	done
done

# pgbench, one client, single-row inserts, for a fixed time
declare -A TPS
for rep in $(seq 1 "$REPS"); do
	for c in A B C X; do
		file=w_insert_v1.sql; [ "$c" = B ] && file=w_dual_insert.sql
		# shellcheck disable=SC2046
		psql_ -d bench $(setup_files "$c") >/dev/null
		tps=$(runuser -u postgres -- "$MS_PG_BIN/pgbench" -h "$work/cluster/sock" -p "$port" -n -c 1 \
			-T "$PGB_SECS" -f "$work/sql/$file" bench 2>/dev/null \
			| sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p')
		TPS[$c,$rep]=$tps
		ms_say "run $rep/$REPS: pgbench case $c: $tps tps"
	done
done
medtps() { local r vals=""; for r in $(seq 1 "$REPS"); do vals="$vals ${TPS[$1,$r]}"; done; echo "$vals" | median; }

# peak private memory of the backend during one large UPDATE, sampled from /proc
peak_kb() {	# peak_kb CASE STATEMENT-FILE
	local c=$1 pidfile="$work/pid.$1" peak=0 pid rss
	psql_ -d bench $(setup_files "$c") -c "INSERT INTO v1.credentials (server_id, key, type, name)
		SELECT 1 + g % 50, md5(g::text), 'SMTP', 'client' FROM generate_series(1, $MEM_ROWS) g" >/dev/null
	if [ "$c" = B ]; then
		psql_ -d bench -c "INSERT INTO v2.credentials SELECT id, gen_random_uuid(), server_id, key, type, name,
			'active', created_at, updated_at FROM v1.credentials" >/dev/null
	fi
	rm -f "$pidfile"
	psql_ -d bench -At -o "$pidfile" -c "SELECT pg_backend_pid()" -c "SELECT pg_sleep(0.3)" \
		-f "$work/sql/$2" >/dev/null &
	local bg=$!
	while [ ! -s "$pidfile" ]; do sleep 0.01; done
	pid=$(head -n 1 "$pidfile")
	while kill -0 "$bg" 2>/dev/null; do
		rss=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
		[ -n "$rss" ] && [ "$rss" -gt "$peak" ] && peak=$rss
		sleep 0.02
	done
	wait "$bg"
	echo "$peak"
}
cat > "$work/sql/mem_x.sql" <<SQL
UPDATE v1.credentials SET hold = true;
SQL
cat > "$work/sql/mem_b.sql" <<SQL
WITH r AS (UPDATE v1.credentials SET hold = true RETURNING *)
UPDATE v2.credentials c SET status = 'hold', updated_at = r.updated_at FROM r WHERE c.id = r.id;
SQL
chown postgres "$work"/sql/*.sql
ms_say "peak backend memory of a $MEM_ROWS-row UPDATE"
mem_x=$(peak_kb X mem_x.sql)
mem_b=$(peak_kb B mem_b.sql)

# UUID throughput
uuid_ms() {
	psql_ -d bench -c '\timing on' -c "SELECT count($1) FROM generate_series(1, $UUIDS)" \
		| sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p'
}
declare -A U
for rep in $(seq 1 "$REPS"); do
	for g in gen_random_uuid mailsync.uuid_v4 mailsync.uuid_v7; do
		U[$g,$rep]=$(uuid_ms "$g()")
	done
done
medu() { local r vals=""; for r in $(seq 1 "$REPS"); do vals="$vals ${U[$1,$r]}"; done; echo "$vals" | median; }

# backfill and verify of BF_ROWS legacy rows.  The baseline of the backfill
# is one INSERT ... SELECT of the same mapping into the empty v2 table, with
# no link; the backfill runs on the same data with the link, v2 empty.  The
# baseline of verify is a count(*) over the full outer join of the two
# tables on the key, on the same tables as verify, after the backfill.
cat > "$work/sql/bf_load.sql" <<SQL
INSERT INTO v1.credentials (server_id, key, type, name, hold)
SELECT 1 + g % 50, md5(g::text), 'SMTP', 'client ' || g, g % 10 = 0 FROM generate_series(1, $BF_ROWS) g;
VACUUM ANALYZE v1.credentials;
CHECKPOINT;
SQL
cat > "$work/sql/bf_base.sql" <<SQL
\\timing on
INSERT INTO v2.credentials (id, server_id, key, name, kind, status, uuid, created_at, updated_at)
SELECT id, server_id, key, name, type, CASE WHEN hold THEN 'hold' ELSE 'active' END,
	   gen_random_uuid(), created_at, updated_at
FROM v1.credentials;
SQL
cat > "$work/sql/bf_x.sql" <<SQL
SET client_min_messages = notice;
\\timing on
CALL mailsync.backfill('creds');
SQL
# after VACUUM the count(*) reads the two key indexes only; with index-only
# scans off it reads the rows, as verify must
cat > "$work/sql/vf.sql" <<SQL
VACUUM ANALYZE v1.credentials, v2.credentials;
\\timing on
SELECT count(*) FROM v1.credentials l FULL JOIN v2.credentials c ON l.id = c.id;
SELECT count(*) FROM mailsync.verify('creds');
SET enable_indexonlyscan = off;
SELECT count(*) FROM v1.credentials l FULL JOIN v2.credentials c ON l.id = c.id;
RESET enable_indexonlyscan;
SELECT count(*) FROM v1.credentials l FULL JOIN v2.credentials c ON l.id = c.id;
SELECT count(*) FROM mailsync.verify('creds');
SET enable_indexonlyscan = off;
SELECT count(*) FROM v1.credentials l FULL JOIN v2.credentials c ON l.id = c.id;
SQL
chown postgres "$work"/sql/*.sql
declare -A BF
for rep in $(seq 1 "$REPS"); do
	ms_say "run $rep/$REPS: backfill and verify of $BF_ROWS rows"
	psql_ -d bench $(setup_files A) -f "$work/sql/bf_load.sql" >/dev/null
	BF[base,$rep]=$(psql_ -d bench -f "$work/sql/bf_base.sql" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
	psql_ -d bench $(setup_files X) -c "SET session_replication_role = replica" \
		-f "$work/sql/bf_load.sql" >/dev/null
	out=$(psql_ -d bench -f "$work/sql/bf_x.sql" 2>&1)
	BF[x,$rep]=$(echo "$out" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
	BF[lock,$rep]=$(echo "$out" | sed -n 's/.*the longest batch took \([0-9]*\) ms.*/\1/p')
	# the second of each pair: the first sets the hint bits of the new rows
	# Time lines: join, verify, SET, join, RESET, then the same again
	vals=$(psql_ -d bench -f "$work/sql/vf.sql" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
	BF[join,$rep]=$(echo "$vals" | sed -n 6p)
	BF[verify,$rep]=$(echo "$vals" | sed -n 7p)
	BF[joinrows,$rep]=$(echo "$vals" | sed -n 9p)
	echo "raw: rep $rep backfill: base ${BF[base,$rep]} x ${BF[x,$rep]} longest batch ${BF[lock,$rep]}; verify: join ${BF[join,$rep]} verify ${BF[verify,$rep]} join reading rows ${BF[joinrows,$rep]}"
done
medbf() { local r vals=""; for r in $(seq 1 "$REPS"); do vals="$vals ${BF[$1,$r]}"; done; echo "$vals" | median; }

# the table
ratio() { awk -v x="$1" -v a="$2" -v b="$3" 'BEGIN { if (b - a == 0) print "n/a"; else printf "%.2f", (x - a) / (b - a) }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }
{
	echo
	echo "mailsync benchmark$([ $quick = 1 ] && echo ' (--quick: sizes too small to mean anything)')"
	echo "$(nproc) cores, PostgreSQL $(psql_ -d bench -At -c 'SHOW server_version'), bulk $BULK rows, loops $LOOP statements, median of $REPS"
	echo
	printf "%-12s %10s %10s %10s %10s %10s %8s %8s\n" workload "A ms" "B ms" "C ms" "D ms" "X ms" "R(X)" "R(C)"
	for w in bulk_insert bulk_update bulk_delete loop_insert loop_update loop_delete; do
		a=$(med A $w); b=$(med B $w); c=$(med C $w); d=$(med D $w); x=$(med X $w)
		printf "%-12s %10.1f %10.1f %10.1f %10.1f %10.1f %8s %8s\n" "$w" "$a" "$b" "$c" "$d" "$x" \
			"$(ratio "$x" "$a" "$b")" "$(ratio "$c" "$a" "$b")"
	done
	echo
	echo "R = (case - A) / (B - A): the cost of keeping v2 as a fraction of writing it by hand"
	echo
	ta=$(medtps A); tb=$(medtps B); tc=$(medtps C); tx=$(medtps X)
	printf "pgbench single-row insert, 1 client, %ss: A %s tps, B %s, C %s, X %s; X/A = %s\n" \
		"$PGB_SECS" "$ta" "$tb" "$tc" "$tx" "$(div "$tx" "$ta")"
	printf "peak backend private memory, %s-row UPDATE: X %s kB, B %s kB; X/B = %s\n" \
		"$MEM_ROWS" "$mem_x" "$mem_b" "$(div "$mem_x" "$mem_b")"
	ug=$(medu gen_random_uuid); u4=$(medu mailsync.uuid_v4); u7=$(medu mailsync.uuid_v7)
	printf "%s UUIDs: gen_random_uuid %s ms, uuid_v4 %s ms (%sx), uuid_v7 %s ms (%sx)\n" \
		"$UUIDS" "$ug" "$u4" "$(div "$ug" "$u4")" "$u7" "$(div "$ug" "$u7")"
	bb=$(medbf base); bx=$(medbf x); bl=$(medbf lock); vj=$(medbf join); vv=$(medbf verify); vr=$(medbf joinrows)
	printf "backfill of %s rows: INSERT ... SELECT %s ms, mailsync.backfill %s ms; throughput backfill/INSERT = %s; longest batch %s ms (INSERT ... SELECT: %s ms)\n" \
		"$BF_ROWS" "$bb" "$bx" "$(div "$bb" "$bx")" "$bl" "$bb"
	printf "verify of %s rows: mailsync.verify %s ms; full join count(*) %s ms (index-only), verify/join = %s; %s ms reading the rows, verify/join = %s\n" \
		"$BF_ROWS" "$vv" "$vj" "$(div "$vv" "$vj")" "$vr" "$(div "$vv" "$vr")"
} | tee "$work/table.txt"
