#!/usr/bin/env bash
# Creates the Vault AppRole role of an application and prints its role_id and secret_id.
# Usage: BAO_ADDR=... BAO_TOKEN=<admin token> scripts/app-role.sh <application>
source "$(dirname "$0")/lib.sh"
[ $# -eq 1 ] || { echo "usage: $0 <application>" >&2; exit 2; }
app_role "$1"
