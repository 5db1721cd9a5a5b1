#!/usr/bin/env bash
# mailsync's demo command (see README.md): installs what is missing, builds
# and installs the extension, starts a throwaway cluster as the postgres
# user, and walks through a Postal-style upgrade in psql.  The cluster is
# removed at the end.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ms_need_root
ms_install_deps
ms_build_install ""

dir=$(mktemp -d /tmp/mailsync-demo.XXXXXX)
trap 'ms_cluster_stop "$dir"' EXIT
ms_say "starting a throwaway cluster in $dir"
ms_cluster_start "$dir" 54330
cp "$MS_ROOT/scripts/demo.sql" "$dir/demo.sql"
chown postgres "$dir/demo.sql"
runuser -u postgres -- "$MS_PG_BIN/psql" -h "$dir/sock" -p 54330 -X -q \
	-v ON_ERROR_STOP=1 -P pager=off postgres < "$dir/demo.sql"
