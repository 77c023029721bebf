#!/usr/bin/env bash
# The benchmark: starts its own servers like scripts/test.sh, builds release binaries, and runs
# tests/tests/bench.rs, which prints a table and writes it as JSON (target/bench/bench.json).
#
#   scripts/bench.sh                       # 200 certificates, 16 at a time
#   CERTFLOW_BENCH_N=1000 CERTFLOW_BENCH_CONCURRENCY=32 scripts/bench.sh
#   CERTFLOW_BENCH_SLEEPING=100000 scripts/bench.sh       # the 100,000-certificate manual run
#   CERTFLOW_BENCH_STORM=10000 CERTFLOW_BENCH_STORM_RATE=10 scripts/bench.sh  # about 17 min of storm
#   CERTFLOW_BENCH_PIN=1 scripts/bench.sh  # Temporal on CPU 0, everything else on the rest
#   CERTFLOW_BENCH_ISSUER_RATE=1000 scripts/bench.sh  # the issuer's calls_per_second (default 50)
#
# Every figure is measured in the same run, on the same servers, so the ratios between them
# are what to compare across machines.
source "$(dirname "$0")/lib.sh"

# pin_tree CPUS PID: binds a process, its threads and its children to CPUS.
pin_tree() {
  local cpus=$1 pid=$2 child
  taskset -a -p -c "$cpus" "$pid" >/dev/null
  for child in $(pgrep -P "$pid"); do pin_tree "$cpus" "$child"; done
}
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
# CERTFLOW_BENCH_PIN=1 gives the Temporal server CPU 0 and everything else (OpenBao, moto,
# PostgreSQL, the worker, the API, the bench and its floors' worker) the other CPUs, as in
# production, where Temporal runs on machines of its own. Both certflow and the floors then
# meet what Temporal alone allows, instead of sharing its CPU with Vault's crypto.
pin=()
if [ "${CERTFLOW_BENCH_PIN:-0}" = 1 ]; then
  [ "$(nproc)" -ge 2 ] || { log "CERTFLOW_BENCH_PIN needs at least 2 CPUs"; exit 1; }
  rest="1-$(($(nproc) - 1))"
  pin_tree 0 "$(cat "$dir/temporal.pid")"
  for f in vault moto postgres; do pin_tree "$rest" "$(cat "$dir/$f.pid")"; done
  pin=(taskset -c "$rest")
  log "pinned: Temporal on CPU 0, the rest on CPUs $rest"
fi
log "running the benchmark (worker and API logs: target/test-logs/)"
"${pin[@]}" cargo test --release -p certflow-tests --test bench -- --ignored --nocapture --test-threads 1
log "results: $CERTFLOW_BENCH_OUT"
