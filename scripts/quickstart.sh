#!/usr/bin/env bash
# Runs certflow locally: Temporal dev server with its Web UI, OpenBao dev server configured with
# transit, PKI, KV v2 and AppRole, the worker and the starter API; then requests a demo
# certificate and prints where to look. Ctrl-C stops everything.
#
# Ports (override with the variables): TEMPORAL_PORT 7233, TEMPORAL_UI_PORT 8233, VAULT_PORT 8200,
# API_PORT 8080. Logs and state live in .certflow/; both servers start empty each time, because the
# dev Vault keeps its keys in memory only.
source "$(dirname "$0")/lib.sh"
ensure_tools
cd "$CERTFLOW_ROOT"
# Tokens, keys and logs of the demo are its owner's alone.
umask 077

TEMPORAL_PORT=${TEMPORAL_PORT:-7233}
TEMPORAL_UI_PORT=${TEMPORAL_UI_PORT:-8233}
VAULT_PORT=${VAULT_PORT:-8200}
API_PORT=${API_PORT:-8080}
METRICS_PORT=${METRICS_PORT:-9464}
dir="$CERTFLOW_ROOT/.certflow"
mkdir -p "$dir"
stop_servers "$dir"
rm -f "$dir"/temporal.db*

log "building"
cargo build --workspace --bins
trap 'log "stopping"; stop_servers "$dir"' EXIT INT TERM

root_token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
api_token=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
start_temporal "$dir" "$TEMPORAL_PORT" "$TEMPORAL_UI_PORT"
start_vault "$dir" "$VAULT_PORT" "$root_token"
export BAO_ADDR="http://127.0.0.1:$VAULT_PORT" BAO_TOKEN="$root_token"
configure_vault "$dir"

export TEMPORAL_ADDRESS="127.0.0.1:$TEMPORAL_PORT"
export CERTFLOW_AUDIT_DATABASE_URL="sqlite://$dir/audit.db"
# The API signs each lifecycle's grant and each approval; the worker checks them.
new_authorization_key "$dir/authorization.key"
export CERTFLOW_AUTHORIZATION_KEY_FILE="$dir/authorization.key"
# API and worker know the same clients (the worker re-checks their policy at every order).
export CERTFLOW_API_TOKEN="$api_token"
# The demo certificate lives 5 minutes, so the quick start lowers the issuer's bounds (the
# defaults are a 1 hour minimum lifetime and 5 minutes between renewals).
cat >"$dir/issuers.toml" <<'TOML'
[issuers.vault-pki]
kind = "vault-pki"
limits = { calls_per_second = 50, min_validity_seconds = 60, min_renewal_interval_seconds = 60 }
TOML
export CERTFLOW_ISSUERS_FILE="$dir/issuers.toml"
# The worker's stdout is the audit trail as JSON lines (what a SIEM would read).
VAULT_ADDR="$BAO_ADDR" VAULT_TOKEN="$(cat "$dir/worker-token")" \
  CERTFLOW_METRICS_LISTEN="127.0.0.1:$METRICS_PORT" \
  target/debug/certflow-worker >"$dir/audit.jsonl" 2>"$dir/worker.log" &
echo $! >"$dir/worker.pid"
CERTFLOW_API_LISTEN="127.0.0.1:$API_PORT" \
  target/debug/certflow-starter-api >"$dir/api.log" 2>&1 &
echo $! >"$dir/api.pid"
api="http://127.0.0.1:$API_PORT"
wait_for "starter API" 30 curl -sf "$api/healthz"

log "requesting the demo certificate demo-1 (lifetime 5 minutes, renews itself every ~3 minutes)"
# The token reaches curl in a file, not on its command line.
printf 'Authorization: Bearer %s\n' "$api_token" >"$dir/auth-header"
curl -sf -X POST "$api/v1/certificates" -H "@$dir/auth-header" -H 'Content-Type: application/json' -d '{
  "certificate_id": "demo-1", "common_name": "demo.example.com", "dns_names": ["www.demo.example.com"],
  "validity_seconds": 300, "issuer": "vault-pki", "application": "demo", "requested_by": "quickstart"}' >/dev/null
wait_for "the demo certificate" 60 sh -c "curl -sf -H @$dir/auth-header $api/v1/certificates/demo-1 | grep -q '\"phase\":\"active\"'"

printf 'export CERTFLOW_API_TOKEN=%s BAO_ADDR=%s BAO_TOKEN=%s\n' "$api_token" "$BAO_ADDR" "$root_token" >"$dir/env"
cat <<INFO

certflow is running. The demo certificate demo-1 is issued and stored in Vault.

  Temporal Web UI   http://127.0.0.1:$TEMPORAL_UI_PORT  (workflow certificate/default/demo-1)
  Starter API       $api   (OpenAPI: $api/openapi.json)
  Vault (OpenBao)   $BAO_ADDR
  Worker metrics    http://127.0.0.1:$METRICS_PORT/metrics

  source .certflow/env    # CERTFLOW_API_TOKEN, BAO_ADDR and BAO_TOKEN (yours alone to read)
  curl -s -H "Authorization: Bearer \$CERTFLOW_API_TOKEN" $api/v1/certificates/demo-1
  curl -s -H "Authorization: Bearer \$CERTFLOW_API_TOKEN" $api/v1/certificates/demo-1/audit
  bao kv get -field=certificate secret/certflow/apps/default.demo/demo-1
  temporal workflow update execute --address $TEMPORAL_ADDRESS --workflow-id certificate/default/demo-1 \\
      --name revoke --input '{"reason":"superseded","requested_by":"me"}'

Logs: $dir/{worker,api,temporal,vault}.log; audit trail: $dir/audit.db and $dir/audit.jsonl.
Ctrl-C stops everything.
INFO
wait
