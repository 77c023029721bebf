#!/bin/sh
# Initialises OpenBao on its first start and unseals it on every start: the compose stack's
# `vault-init` service runs it after each `up`; by hand, with BAO_ADDR and BAO_CACERT set:
#
#   deploy/vault/init-unseal.sh KEYS_DIR
#
# First start: `bao operator init` with BAO_KEY_SHARES (default 5) shares, BAO_KEY_THRESHOLD
# (default 3) needed; each unseal key and the initial root token go to their own file in
# KEYS_DIR (mode 600). Every start: if the server is sealed, the threshold's keys unseal it,
# read from their files by the CLI (`key=@file`), never put on a command line. Keeping the keys
# beside the server lets it restart unattended; a production deployment hands them to
# custodians (and keeps KEYS_DIR empty, so this script only reports that the server is sealed)
# or uses an auto-unseal `seal` stanza.
set -eu
keys=$1
shares=${BAO_KEY_SHARES:-5}
threshold=${BAO_KEY_THRESHOLD:-3}
umask 077
mkdir -p "$keys"

# Wait for the server to answer (0: unsealed, 2: sealed; 1: not reachable yet).
tries=0
while :; do
  rc=0; bao status >/dev/null 2>&1 || rc=$?
  [ "$rc" -ne 1 ] && break
  tries=$((tries + 1))
  [ "$tries" -ge 60 ] && { echo "OpenBao at $BAO_ADDR does not answer" >&2; exit 1; }
  sleep 1
done

rc=0; bao operator init -status >/dev/null 2>&1 || rc=$?
if [ "$rc" -eq 2 ]; then
  echo "initialising OpenBao ($shares key shares, $threshold to unseal)"
  bao operator init -key-shares="$shares" -key-threshold="$threshold" >"$keys/init.out"
  n=0
  sed -n 's/^Unseal Key [0-9]*: //p' "$keys/init.out" | while read -r key; do
    n=$((n + 1))
    printf '%s\n' "$key" >"$keys/unseal-key-$n"
  done
  sed -n 's/^Initial Root Token: //p' "$keys/init.out" >"$keys/root-token"
  rm -f "$keys/init.out"
elif [ "$rc" -ne 0 ]; then
  echo "cannot read OpenBao's initialisation status" >&2
  exit 1
fi

used=0
for file in "$keys"/unseal-key-*; do
  bao status >/dev/null 2>&1 && break
  [ -f "$file" ] || continue
  bao write sys/unseal key=@"$file" >/dev/null
  used=$((used + 1))
done
if ! bao status >/dev/null 2>&1; then
  echo "OpenBao is sealed: $used key(s) in $keys, $threshold needed; unseal with 'bao operator unseal'" >&2
  exit 2
fi
# Integrated storage elects its leader just after unsealing; wait until it serves requests.
tries=0
until bao status 2>/dev/null | grep -Eq '^HA Mode +active'; do
  tries=$((tries + 1))
  [ "$tries" -ge 30 ] && { echo "OpenBao is unsealed but not active" >&2; exit 1; }
  sleep 1
done
echo "OpenBao is unsealed"
