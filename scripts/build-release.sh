#!/usr/bin/env bash
# The release build of the two binaries. The Dockerfile runs exactly this, and CI runs it too,
# so the image's build steps are the ones CI exercises.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin certflow-worker --bin certflow-starter-api
