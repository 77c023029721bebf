#!/usr/bin/env bash
# What the API's metrics index costs Temporal at scale, without issuing the fleet (100,000
# issuances take hours): writes N running certificates' visibility rows straight into a
# Temporal dev server's SQLite database (the index reads visibility and nothing else). Then,
# for each API binary given, side by side: restarts Temporal on that database, measures its
# idle CPU for a minute with nothing attached, starts the API, waits for its index's first
# load, scrapes /metrics every 15 s (as Prometheus would) and reports Temporal's and the
# API's CPU every 15 s and over the whole window.
#
#   scripts/bench-metrics-index.sh                     # this checkout's API
#   scripts/bench-metrics-index.sh old-api new-api     # two builds, one after the other
#   CERTFLOW_BENCH_INDEX_N=100000 CERTFLOW_BENCH_INDEX_MINUTES=10 (the defaults)
source "$(dirname "$0")/lib.sh"
ensure_tools
apis=()
for api in "$@"; do
  [ -x "$api" ] || { log "$api: not an executable file"; exit 1; }
  apis+=("$(realpath "$api")")
done
cd "$CERTFLOW_ROOT"

n=${CERTFLOW_BENCH_INDEX_N:-100000}
minutes=${CERTFLOW_BENCH_INDEX_MINUTES:-10}
if [ ${#apis[@]} -eq 0 ]; then
  cargo build --release -p certflow-starter-api
  apis=("$CERTFLOW_ROOT/target/release/certflow-starter-api")
fi

dir=$(mktemp -d)
trap 'kill "${api_pid:-}" 2>/dev/null || true; stop_servers "$dir"; rm -rf "$dir"' EXIT
temporal_port=$(free_port)
api_port=$(free_port)
token=bench-token-0123456789abcdef0123
hz=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
percent() { python3 -c "print(f'{($1) * 100 / $hz / $2:.1f}')"; }

# One real lifecycle row tells the namespace and where the dev server keeps each search
# attribute (CertflowChangedAt in Datetime03, say); the N rows copy it.
start_temporal "$dir" "$temporal_port" 0
temporal workflow start --address "127.0.0.1:$temporal_port" --type CertificateLifecycle \
  --task-queue bench-index-none --workflow-id bench-index-probe \
  --search-attribute 'CertflowChangedAt="2001-01-01T00:00:00Z"' \
  --search-attribute 'CertflowNotAfter="2099-01-01T00:00:00Z"' \
  --search-attribute 'CertflowState="active"' --search-attribute 'CertflowTenant="default"' \
  --search-attribute 'CertflowIssuer="vault-pki"' >/dev/null
probe_indexed() {
  python3 -c "import sqlite3, sys; sys.exit(0 if sqlite3.connect('$dir/temporal.db').execute(\"select count(*) from executions_visibility where workflow_id = 'bench-index-probe'\").fetchone()[0] else 1)"
}
wait_for "the probe's visibility row" 30 probe_indexed
stop_servers "$dir"
log "writing $n visibility rows"
python3 - "$dir/temporal.db" "$n" <<'PY'
import json, sqlite3, sys, datetime
db, n = sys.argv[1], int(sys.argv[2])
con = sqlite3.connect(db)
row = con.execute("select namespace_id, workflow_type_name, encoding, search_attributes "
                  "from executions_visibility where workflow_id = 'bench-index-probe'").fetchone()
namespace, workflow_type, encoding, attributes = row
attributes = json.loads(attributes)
changed = next(k for k, v in attributes.items() if v == "2001-01-01T00:00:00Z")
start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
def rows():
    for i in range(n):
        at = start + datetime.timedelta(seconds=20 * i)
        sql_time = at.strftime("%Y-%m-%d %H:%M:%S.%f+00:00")
        a = dict(attributes, **{changed: at.strftime("%Y-%m-%dT%H:%M:%SZ")})
        run = f"00000000-0000-0000-0000-{i:012d}"
        wid = f"certificate/default/bench-index-{i}"
        yield (namespace, run, sql_time, sql_time, wid, workflow_type, encoding, json.dumps(a), wid, run)
con.executemany(
    "insert into executions_visibility (namespace_id, run_id, start_time, execution_time, "
    "workflow_id, workflow_type_name, status, encoding, task_queue, search_attributes, "
    "root_workflow_id, root_run_id) values (?, ?, ?, ?, ?, ?, 1, ?, 'bench-index', ?, ?, ?)",
    rows())
con.commit()
PY

printf '[issuers.vault-pki]\nkind = "vault-pki"\n' >"$dir/issuers.toml"
# scrape: the HTTP status of one /metrics (000 if there was no answer within a minute).
scrape() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 60 -H "Authorization: Bearer $token" \
    "http://127.0.0.1:$api_port/metrics" || true
}
for api in "${apis[@]}"; do
  start_temporal "$dir" "$temporal_port" 0
  temporal_pid=$(cat "$dir/temporal.pid")
  sleep 30
  c=$(cpu "$temporal_pid")
  sleep 60
  log "$api: Temporal alone, no API: $(percent "$(cpu "$temporal_pid") - $c" 60) % of a core"
  CERTFLOW_AUDIT_DATABASE_URL="sqlite://$dir/audit.db" CERTFLOW_ISSUERS_FILE="$dir/issuers.toml" \
    TEMPORAL_ADDRESS="127.0.0.1:$temporal_port" VAULT_ADDR=http://127.0.0.1:1 \
    CERTFLOW_API_TOKEN="$token" CERTFLOW_API_LISTEN="127.0.0.1:$api_port" \
    "$api" >"$dir/api.log" 2>&1 &
  api_pid=$!
  started=$(date +%s)
  until [ "$(scrape)" = 200 ]; do
    kill -0 "$api_pid" || { cat "$dir/api.log"; exit 1; }
    [ $(($(date +%s) - started)) -lt 3600 ] || { log "no first load within an hour"; exit 1; }
    sleep 1
  done
  log "$api: the index's first load answered after $(($(date +%s) - started)) s"
  t0=$(cpu "$temporal_pid") a0=$(cpu "$api_pid") s0=$(date +%s)
  for ((i = 0; i < minutes * 4; i++)); do
    c=$(cpu "$temporal_pid") before=$(date +%s.%N)
    status=$(scrape)
    took=$(python3 -c "print(f'{$(date +%s.%N) - $before:.2f}')")
    sleep 15
    window=$(python3 -c "print($(date +%s.%N) - $before)")
    log "  t=$(($(date +%s) - s0)) s: scrape $status in $took s; Temporal $(percent "$(cpu "$temporal_pid") - $c" "$window") % since"
  done
  elapsed=$(($(date +%s) - s0))
  log "$api: over $elapsed s, Temporal $(percent "$(cpu "$temporal_pid") - $t0" "$elapsed") %, API $(percent "$(cpu "$api_pid") - $a0" "$elapsed") % of a core"
  kill "$api_pid"
  wait "$api_pid" 2>/dev/null || true
  stop_servers "$dir"
done
