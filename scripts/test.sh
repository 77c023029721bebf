#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and end-to-end tests against a real Temporal dev server,
# a real OpenBao dev server, moto_server (AWS Private CA) and PostgreSQL (audit trail), which
# this script starts on free loopback ports and stops at exit.
# Extra arguments go to the test binaries, e.g. `scripts/test.sh renews`.
source "$(dirname "$0")/lib.sh"
ensure_tools
cd "$CERTFLOW_ROOT"

log "building"
cargo build --workspace --bins --tests

dir=$(mktemp -d)
trap 'stop_servers "$dir"; rm -rf "$dir"' EXIT
temporal_port=$(free_port)
vault_port=$(free_port)
moto_port=$(free_port)
postgres_port=$(free_port)
root_token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
log "starting Temporal on 127.0.0.1:$temporal_port and OpenBao on 127.0.0.1:$vault_port"
start_temporal "$dir" "$temporal_port" 0
start_vault "$dir" "$vault_port" "$root_token"
log "starting moto (AWS Private CA) on 127.0.0.1:$moto_port"
start_moto "$dir" "$moto_port"
log "starting PostgreSQL on 127.0.0.1:$postgres_port"
CERTFLOW_TEST_POSTGRES_URL=$(start_postgres "$dir" "$postgres_port")
export CERTFLOW_TEST_POSTGRES_URL
export BAO_ADDR="http://127.0.0.1:$vault_port" BAO_TOKEN="$root_token"
configure_vault "$dir"

export CERTFLOW_TEST_TEMPORAL_ADDRESS="127.0.0.1:$temporal_port"
export CERTFLOW_TEST_VAULT_ADDR="$BAO_ADDR"
export CERTFLOW_TEST_VAULT_ROOT_TOKEN="$root_token"
export CERTFLOW_TEST_WORKER_TOKEN="$(cat "$dir/worker-token")"
export CERTFLOW_TEST_MOTO_URL="http://127.0.0.1:$moto_port"
export CERTFLOW_TEST_LOG_DIR="$CERTFLOW_ROOT/target/test-logs"
rm -rf "$CERTFLOW_TEST_LOG_DIR"

# The end-to-end tests mostly wait on timers, so run them all at once.
log "running tests (worker and API logs: target/test-logs/)"
cargo test --workspace --no-fail-fast -- --test-threads 16 "$@"
