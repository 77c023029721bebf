#!/bin/sh
# TLS for the compose stack: a private CA, and server certificates for OpenBao (`vault`) and
# the starter API (`starter-api`), each also valid for localhost. Run by the `certs` service
# once; existing files are kept, so restarts do not change them. By hand:
#
#   deploy/compose/make-certs.sh OUT_DIR
#
# Writes OUT_DIR/ca/ca.crt (give it to clients), OUT_DIR/vault/server.{crt,key} and
# OUT_DIR/api/server.{crt,key}; keys are mode 600. The CA key stays in OUT_DIR/ca-key/. Bring
# your own certificates instead by putting them at the same paths before the first start.
set -eu
out=$1
umask 077
mkdir -p "$out/ca" "$out/ca-key" "$out/vault" "$out/api"
# Everyone reaches the CA certificate; each service's key directory is its own (see compose).
chmod 755 "$out" "$out/ca"
if [ ! -f "$out/ca/ca.crt" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=certflow compose CA" -keyout "$out/ca-key/ca.key" -out "$out/ca/ca.crt" \
    -addext "basicConstraints=critical,CA:true,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  chmod 644 "$out/ca/ca.crt"
fi
server() {
  name=$1 dir=$2
  [ -f "$dir/server.crt" ] && return 0
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:false\n' "$name" >"$dir/ext.cnf"
  openssl x509 -req -in "$dir/server.csr" -CA "$out/ca/ca.crt" -CAkey "$out/ca-key/ca.key" \
    -CAserial "$out/ca-key/ca.srl" -CAcreateserial -days 825 -extfile "$dir/ext.cnf" -out "$dir/server.crt" 2>/dev/null
  rm -f "$dir/server.csr" "$dir/ext.cnf"
  chmod 644 "$dir/server.crt"
}
server vault "$out/vault"
server starter-api "$out/api"
echo "certificates in $out (CA: $out/ca/ca.crt)"
