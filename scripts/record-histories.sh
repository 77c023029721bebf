#!/usr/bin/env bash
# Records the histories replayed by workflows/tests/replay.rs: runs the fast workflow tests
# (workflows/tests/lifecycle.rs) against a Temporal dev server it starts, writing every run of
# every test to workflows/tests/histories/v4/. Run it after a change that is meant to alter
# the workflow's commands, once that change is behind a patch (ctx.patched) so that the
# histories already recorded still replay; keep the old files that document released versions.
source "$(dirname "$0")/lib.sh"
ensure_tools
cd "$CERTFLOW_ROOT"
out="${1:-$CERTFLOW_ROOT/workflows/tests/histories/v4}"
dir=$(mktemp -d)
trap 'stop_servers "$dir"; rm -rf "$dir"' EXIT
port=$(free_port)
start_temporal "$dir" "$port" 0
rm -rf "$out"
CERTFLOW_TEST_TEMPORAL_ADDRESS="127.0.0.1:$port" CERTFLOW_RECORD_HISTORIES="$out" \
  cargo test -p certflow-workflows --test lifecycle -- --test-threads 16
log "recorded $(ls "$out" | wc -l) histories in $out"
