#!/usr/bin/env bash
# mailsync's test command (see README.md): installs what is missing, builds
# with warnings as errors, installs the extension, runs the pg_regress,
# isolation and TAP suites against throwaway clusters run by the postgres
# user, removes them, and ends with one line "N passed, N failed".
#
# Counted: each pg_regress test file, each isolation spec, each TAP
# assertion.  Exit status 0 only when nothing failed.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
ms_need_root
ms_install_deps || exit 1
ms_build_install -Werror || { echo "0 passed, 1 failed"; exit 1; }

work=$(mktemp -d /tmp/mailsync-test.XXXXXX)
port=54329
trap 'ms_cluster_stop "$work/cluster"; rm -rf "$work"' EXIT

# pg_regress and prove write next to the tests: postgres gets a copy
mkdir -p "$work/tree"
(cd "$MS_ROOT" && tar cf - --exclude=.git --exclude='*.o' --exclude='*.so' \
	--exclude=results --exclude=output_iso --exclude=tmp_check .) | (cd "$work/tree" && tar xf -)
chown -R postgres "$work"
ms_say "starting a throwaway cluster in $work/cluster"
ms_cluster_start "$work/cluster" "$port" || { echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0

# run_suite NAME PGOPTIONS MAKE-ARGS...: runs one suite, counts its results
run_suite() {
	local name=$1 options=$2
	shift 2
	local log="$work/$name.log" rc p f
	ms_say "$name"
	rm -f "$work/tree/regression.diffs" "$work/tree/output_iso/regression.diffs"
	runuser -u postgres -- env PGHOST="$work/cluster/sock" PGPORT="$port" PGUSER=postgres \
		PGOPTIONS="$options" make -C "$work/tree" -s installcheck "$@" >"$log" 2>&1
	rc=$?
	if [ "$name" = tap ]; then
		p=$(grep -cE '^ *ok [0-9]+' "$log")
		f=$(grep -cE '^ *not ok [0-9]+' "$log")
		grep -E '^t/.*\.pl|^(Files|Result)' "$log"
	else
		p=$(grep -cE '^test .* \.\.\. ok' "$log")
		f=$(grep -cE '^test .* \.\.\. FAILED' "$log")
		grep -E '^test ' "$log"
	fi
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1
		echo "$name: the harness itself failed (exit $rc):"
		tail -n 30 "$log"
	fi
	if [ "$f" -gt 0 ]; then
		for d in "$work/tree/regression.diffs" "$work/tree/output_iso/regression.diffs"; do
			[ -s "$d" ] && head -n 200 "$d"
		done
		[ "$name" = tap ] && grep -E 'not ok|#' "$log" | head -n 60
		for l in "$work"/tree/tmp_check/log/*.log; do
			[ -f "$l" ] && { echo "--- $l"; tail -n 20 "$l"; }
		done
	fi
	echo "$name: $p passed, $f failed"
	passed=$((passed + p))
	failed=$((failed + f))
}

# the regression suite twice: every statement set-based, then row by row;
# both must give the same expected output
run_suite regress-set-based "-c mailsync.set_based=on" ISOLATION= TAP_TESTS=
run_suite regress-row-by-row "-c mailsync.set_based=off" ISOLATION= TAP_TESTS=
run_suite isolation "" REGRESS= TAP_TESTS=
run_suite tap "" REGRESS= ISOLATION= PROVE_FLAGS=-v

# the benchmark at tiny sizes, so that it cannot rot (its figures mean nothing)
ms_say "benchmark --quick"
if MS_BENCH_NO_BUILD=1 bash "$MS_ROOT/bench/run.sh" --quick >"$work/bench.log" 2>&1; then
	tail -n 12 "$work/bench.log"
	echo "benchmark --quick: 1 passed, 0 failed"
	passed=$((passed + 1))
else
	tail -n 30 "$work/bench.log"
	echo "benchmark --quick: 0 passed, 1 failed"
	failed=$((failed + 1))
fi

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
