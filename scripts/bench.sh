#!/usr/bin/env bash
# The benchmark: starts its own servers like scripts/test.sh, builds release binaries, and runs
# tests/tests/bench.rs, which prints a table and writes it as JSON (target/bench/bench.json).
#
#   scripts/bench.sh                       # 200 certificates, 16 at a time
#   CERTFLOW_BENCH_N=1000 CERTFLOW_BENCH_CONCURRENCY=32 scripts/bench.sh
#   CERTFLOW_BENCH_SLEEPING=100000 scripts/bench.sh       # the 100,000-certificate manual run
#   CERTFLOW_BENCH_STORM=10000 CERTFLOW_BENCH_STORM_RATE=10 scripts/bench.sh  # about 17 min of storm
#
# Every figure is measured in the same run, on the same servers, so the ratios between them
# are what to compare across machines.
source "$(dirname "$0")/lib.sh"
ensure_tools
cd "$CERTFLOW_ROOT"

log "building (release)"
cargo build --release --workspace --bins
cargo test --release -p certflow-tests --test bench --no-run

dir=$(mktemp -d)
trap 'stop_servers "$dir"; rm -rf "$dir"' EXIT
start_test_servers "$dir"

export CERTFLOW_BIN_DIR="$CERTFLOW_ROOT/target/release"
export CERTFLOW_BENCH_TEMPORAL_PID="$(cat "$dir/temporal.pid")"
export CERTFLOW_BENCH_VAULT_PID="$(cat "$dir/vault.pid")"
export CERTFLOW_BENCH_TEMPORAL_DB="$dir/temporal.db"
export CERTFLOW_BENCH_OUT="${CERTFLOW_BENCH_OUT:-$CERTFLOW_ROOT/target/bench/bench.json}"
log "running the benchmark (worker and API logs: target/test-logs/)"
cargo test --release -p certflow-tests --test bench -- --ignored --nocapture --test-threads 1
log "results: $CERTFLOW_BENCH_OUT"
