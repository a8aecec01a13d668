#!/usr/bin/env bash
# Build the S3-compatible server the store's tests run against: versitygw (an S3 gateway with a POSIX
# backend, Apache-2.0), from the Go module proxy. Chosen over MinIO because its module graph is about a
# third the size (81 requirements vs 261), which matters on a 2-core machine; neither has replace lines.
#
# The binary is cached under ~/.cache/kubeloop/s3/<version>/versitygw and rebuilt only when missing.
# Prints the path of the binary on the last line of stdout.
set -euo pipefail

VERSITYGW_VERSION="${VERSITYGW_VERSION:-v1.8.0}"
CACHE_ROOT="${KUBELOOP_CACHE:-$HOME/.cache/kubeloop}"
DEST="$CACHE_ROOT/s3/versitygw-$VERSITYGW_VERSION"
BIN="$DEST/versitygw"

if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$DEST"
TMP="$(mktemp -d "$DEST/.build.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
start=$(date +%s)
echo "building versitygw $VERSITYGW_VERSION from the Go module proxy (a few minutes, once)..." >&2
# -p 1 and nice: this machine is shared with other builds; a slower build beats starving them.
GOBIN="$TMP" GOFLAGS="${GOFLAGS:-} -buildvcs=false" nice -n 10 \
  go install -p 1 -trimpath -ldflags "-s -w" "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" >&2
# Rename last so a killed build never leaves a binary that looks complete.
mv "$TMP/versitygw" "$BIN"
echo "built $BIN in $(( $(date +%s) - start ))s" >&2
echo "$BIN"
