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
start_test_servers "$dir"

# The end-to-end tests mostly wait on timers, so run them all at once.
log "running tests (worker and API logs: target/test-logs/)"
cargo test --workspace --no-fail-fast -- --test-threads 16 "$@"
