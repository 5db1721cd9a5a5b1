# Shared by scripts/test.sh, scripts/demo.sh and bench/run.sh: install what is
# missing, build, install, and run throwaway clusters as the postgres user.
# Sourced, not run.

MS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MS_PG_BIN=/usr/lib/postgresql/15/bin

ms_say() { printf '\n== %s\n' "$*"; }

ms_need_root() {
	if [ "$(id -u)" != 0 ]; then
		echo "run this as root: it installs packages and the extension, and runs clusters as postgres" >&2
		exit 2
	fi
}

# ms_install_deps installs the Debian packages the build and the tests
# need, only when one is missing.
ms_install_deps() {
	local pkgs="postgresql-15 postgresql-client-15 postgresql-contrib postgresql-server-dev-15 uuid-dev libipc-run-perl make gcc"
	local missing=""
	for p in $pkgs; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		ms_say "installing:$missing"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends $missing >/dev/null
	fi
}

# ms_build_install builds mailsync (extra compiler options in $1) and
# installs it into the server's directories.
ms_build_install() {
	local copt="${1:-}"
	ms_say "building mailsync${copt:+ with $copt}"
	make -C "$MS_ROOT" -s clean >/dev/null
	make -C "$MS_ROOT" -s COPT="$copt"
	make -C "$MS_ROOT" -s install >/dev/null
}

# ms_cluster_start DIR PORT: a private cluster, owned by postgres, listening
# only on a socket in DIR.
ms_cluster_start() {
	local dir=$1 port=$2
	mkdir -p "$dir/sock"
	chown -R postgres "$dir"
	runuser -u postgres -- "$MS_PG_BIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync >/dev/null
	runuser -u postgres -- "$MS_PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
		-o "-p $port -k $dir/sock -c listen_addresses='' -c fsync=off" start >/dev/null
}

# ms_cluster_stop DIR: stops the cluster in DIR (ours only) and removes it.
ms_cluster_stop() {
	local dir=$1
	if [ -f "$dir/data/postmaster.pid" ]; then
		runuser -u postgres -- "$MS_PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
	fi
	rm -rf "$dir"
}
