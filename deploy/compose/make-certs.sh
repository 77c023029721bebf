#!/bin/sh
# TLS and keys for the compose stack: a private CA; server certificates for OpenBao (`vault`),
# the starter API (`starter-api`) and Temporal's frontend (`temporal`, also its client for its
# own calls between services); client certificates for the only identities that may reach
# Temporal (worker, starter-api, temporal-ui, admin); and the secret keys the API and worker
# share (grants) and the worker keeps (audit HMAC). Run by the `certs` service once; existing
# files are kept, so restarts do not change them. By hand:
#
#   deploy/compose/make-certs.sh OUT_DIR
#
# Writes OUT_DIR/ca/ca.crt (give it to clients), OUT_DIR/<service>/server.{crt,key},
# OUT_DIR/clients/<identity>/client.{crt,key} and OUT_DIR/secrets/*.key; keys are mode 600
# (the compose file's `certs` service gives each to its reader). The CA key stays in
# OUT_DIR/ca-key/. Bring your own instead by putting them at the same paths before the first
# start. None of this comes from certflow's own issuers.
set -eu
out=$1
umask 077
mkdir -p "$out/ca" "$out/ca-key" "$out/vault" "$out/api" "$out/temporal" "$out/secrets"
# Everyone reaches the CA certificate; each service's key directory is its own (see compose).
chmod 755 "$out" "$out/ca"
if [ ! -f "$out/ca/ca.crt" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=certflow compose CA" -keyout "$out/ca-key/ca.key" -out "$out/ca/ca.crt" \
    -addext "basicConstraints=critical,CA:true,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  chmod 644 "$out/ca/ca.crt"
fi
# sign NAME DIR FILE USAGES: a certificate for NAME (also localhost) with these extended key
# usages, at DIR/FILE.{crt,key}.
sign() {
  name=$1 dir=$2 file=$3 usages=$4
  [ -f "$dir/$file.crt" ] && return 0
  mkdir -p "$dir"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$dir/$file.key" -out "$dir/$file.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=%s\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:false\n' "$name" "$usages" >"$dir/ext.cnf"
  openssl x509 -req -in "$dir/$file.csr" -CA "$out/ca/ca.crt" -CAkey "$out/ca-key/ca.key" \
    -CAserial "$out/ca-key/ca.srl" -CAcreateserial -days 825 -extfile "$dir/ext.cnf" -out "$dir/$file.crt" 2>/dev/null
  rm -f "$dir/$file.csr" "$dir/ext.cnf"
  chmod 644 "$dir/$file.crt"
}
sign vault "$out/vault" server serverAuth
sign starter-api "$out/api" server serverAuth
# Temporal's frontend; its services also present it to one another (as clients).
sign temporal "$out/temporal" server serverAuth,clientAuth
for identity in worker starter-api temporal-ui admin; do
  sign "$identity" "$out/clients/$identity" client clientAuth
done
# Secret keys, never in an image or on a command line.
[ -f "$out/secrets/authorization.key" ] || openssl rand -hex 32 >"$out/secrets/authorization.key"
[ -f "$out/secrets/audit-hmac.key" ] || openssl rand -hex 32 >"$out/secrets/audit-hmac.key"
echo "certificates and keys in $out (CA: $out/ca/ca.crt)"
