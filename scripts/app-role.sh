#!/usr/bin/env bash
# Creates the Vault AppRole role of one tenant's application, `<tenant>.<application>`, which
# reads that tenant's records of that application and nothing else, and prints its role_id and
# secret_id.
# Usage: BAO_ADDR=... BAO_TOKEN=<admin token> scripts/app-role.sh <tenant> <application>
source "$(dirname "$0")/lib.sh"
[ $# -eq 2 ] || { echo "usage: $0 <tenant> <application>" >&2; exit 2; }
app_role "$1" "$2"
