#!/bin/sh
# One-time Vault (OpenBao) set-up for certflow, shared by scripts/lib.sh (local set-up and
# tests) and docker-compose.yml: transit, a PKI root CA and the `certflow` role, KV v2 at
# secret/, AppRole, the two policies, and a least-privilege token for the worker.
# Usage: configure.sh OUTPUT_DIR [POLICY_DIR]; needs BAO_ADDR and BAO_TOKEN (root or admin).
# The PKI role issues only names under CERTFLOW_PKI_ALLOWED_DOMAINS (comma-separated, default
# example.com) and URI SANs matching CERTFLOW_PKI_ALLOWED_URI_SANS (default spiffe://example.com/*),
# server certificates only: certflow's certificates can never log in as a client anywhere.
# Writes OUTPUT_DIR/ca.pem, OUTPUT_DIR/worker-token, and the worker's AppRole credentials
# OUTPUT_DIR/worker-role-id and OUTPUT_DIR/worker-secret-id (mode 600).
set -eu
out=$1
policies=${2:-$(dirname "$0")}
mkdir -p "$out"

# Safe to run again after a partial failure: what exists already is kept.
mounted() { bao secrets list | grep -q "^$1/"; }
mounted transit || bao secrets enable transit >/dev/null
mounted pki || bao secrets enable pki >/dev/null
bao secrets tune -max-lease-ttl=87600h pki >/dev/null
bao write pki/config/urls \
  issuing_certificates="$BAO_ADDR/v1/pki/ca" crl_distribution_points="$BAO_ADDR/v1/pki/crl" >/dev/null
bao read -field=certificate pki/cert/ca >"$out/ca.pem" 2>/dev/null && [ -s "$out/ca.pem" ] \
  || bao write -field=certificate pki/root/generate/internal \
    common_name="certflow dev root CA" issuer_name=root ttl=87600h >"$out/ca.pem"
bao write pki/roles/certflow allow_any_name=false \
  allowed_domains="${CERTFLOW_PKI_ALLOWED_DOMAINS:-example.com}" allow_subdomains=true allow_bare_domains=true \
  allow_glob_domains=false allow_localhost=false allow_wildcard_certificates=true enforce_hostnames=true \
  allow_ip_sans=true allowed_uri_sans="${CERTFLOW_PKI_ALLOWED_URI_SANS:-spiffe://example.com/*}" \
  server_flag=true client_flag=false key_type=any max_ttl=8760h not_before_duration=30s \
  use_csr_common_name=true use_csr_sans=true >/dev/null
# Dev servers mount KV v2 at secret/ already; production servers may not.
mounted secret || bao secrets enable -path=secret kv-v2 >/dev/null
bao auth list | grep -q '^approle/' || bao auth enable approle >/dev/null
accessor=$(bao read -field=accessor sys/auth/approle)
bao policy write certflow-orchestrator "$policies/certflow-orchestrator.hcl" >/dev/null
sed "s/APPROLE_ACCESSOR/$accessor/g" "$policies/certflow-application.hcl.tmpl" \
  | bao policy write certflow-application - >/dev/null
(umask 077; bao token create -policy=certflow-orchestrator -period=768h -field=token >"$out/worker-token")
# The worker's AppRole (the compose stack logs in with it): short-lived tokens, logged in again
# by the worker when they reach their maximum TTL. Its secret_id is bounded: it expires
# (CERTFLOW_WORKER_SECRET_ID_TTL, default 90 days: issue a new one before, see
# docs/deployment.md), serves a limited number of logins, and, with CERTFLOW_WORKER_CIDR,
# logs in (and its tokens are used) from the worker's network only.
cidr=${CERTFLOW_WORKER_CIDR:-}
bao write auth/approle/role/certflow-worker token_policies=certflow-orchestrator \
  token_ttl=1h token_max_ttl=24h token_no_default_policy=false \
  secret_id_ttl="${CERTFLOW_WORKER_SECRET_ID_TTL:-2160h}" \
  secret_id_num_uses="${CERTFLOW_WORKER_SECRET_ID_USES:-10000}" \
  ${cidr:+secret_id_bound_cidrs="$cidr" token_bound_cidrs="$cidr"} >/dev/null
(umask 077
  bao read -field=role_id auth/approle/role/certflow-worker/role-id >"$out/worker-role-id"
  bao write -f -field=secret_id auth/approle/role/certflow-worker/secret-id >"$out/worker-secret-id")
