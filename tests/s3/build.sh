#!/usr/bin/env bash
# Build SeaweedFS's `weed` (Apache-2.0; one binary: master, volume, filer and S3 gateway) from the
# Go module proxy into a cache outside the repo, the way tests/cluster/build.sh builds Kubernetes:
#   ${THRESHER_S3_CACHE:-~/.cache/thresher-s3}/<version>/bin/weed
# Idempotent: exits at once when the binary is there. Prints the bin folder on its last line.
# Env: THRESHER_SEAWEEDFS_VERSION (a module version the proxy serves), THRESHER_S3_CACHE,
#      THRESHER_S3_BUILD_JOBS (go build -p, default 2).
set -euo pipefail

VERSION="${THRESHER_SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
CACHE_ROOT="${THRESHER_S3_CACHE:-$HOME/.cache/thresher-s3}"
DEST="$CACHE_ROOT/$VERSION"
BIN="$DEST/bin"
if [[ -x "$BIN/weed" && -f "$DEST/BUILD_OK" ]]; then
  echo "thresher-s3: weed $VERSION cached in $BIN" >&2
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { echo "thresher-s3: 'go' not found on PATH" >&2; exit 1; }
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.$VERSION.lock"
flock 9
if [[ -x "$BIN/weed" && -f "$DEST/BUILD_OK" ]]; then echo "$BIN"; exit 0; fi

start=$(date +%s)
log() { echo "thresher-s3 [$(( $(date +%s) - start ))s] $*" >&2; }
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod"
export CGO_ENABLED=0
mkdir -p "$BIN" "$DEST/src"
cd "$DEST/src"
log "resolving github.com/seaweedfs/seaweedfs@$VERSION"
SMOD="$(go mod download -json "github.com/seaweedfs/seaweedfs@$VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
[[ -f "$SMOD" ]] || { echo "thresher-s3: could not download seaweedfs@$VERSION" >&2; exit 1; }
GO_DIRECTIVE="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$SMOD" | head -1)"
{
  echo "module thresher.local/weedbuild"
  echo
  echo "go $GO_DIRECTIVE"
  echo
  echo "require github.com/seaweedfs/seaweedfs $VERSION"
  echo
  grep -E '^replace ' "$SMOD" || true   # the module's own replaces apply only in its own build
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/seaweedfs/seaweedfs/weed"
GO
# No `go mod tidy`: it would fetch the test dependencies of every dependency (hundreds of modules
# the binary never uses). `go build -mod=mod` resolves and fetches only the packages weed imports.
log "go build weed (-p ${THRESHER_S3_BUILD_JOBS:-2})"
go build -p "${THRESHER_S3_BUILD_JOBS:-2}" -trimpath -ldflags "-s -w" -o "$BIN/weed" github.com/seaweedfs/seaweedfs/weed
"$BIN/weed" version >&2
touch "$DEST/BUILD_OK"
log "done"
echo "$BIN"
