#!/usr/bin/env bash
# Build the Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler) and kubectl from the Go module proxy, into a cache outside the repo:
#   ${THRESHER_K8S_CACHE:-~/.cache/thresher-k8s}/v<version>/bin/
# Idempotent: exits in well under a second when the binaries are already there.
# Usage: tests/cluster/build.sh [k8s-version]      (default 1.37.2; fallbacks 1.36.3, 1.34.x)
# Env: THRESHER_K8S_VERSION, THRESHER_K8S_CACHE, THRESHER_K8S_BUILD_JOBS (go build -p, default 2),
#      THRESHER_ETCD_VERSION (default: the etcd that k8s.io/kubernetes requires),
#      THRESHER_K8S_TIDY_ONLY=1 (only check that the wrapper module resolves).
# The staging modules to replace are read from k8s.io/kubernetes' own go.mod (its
# "k8s.io/x => ./staging/src/k8s.io/x" lines), so 1.34 (no cri-streaming/streaming) works as is.
set -euo pipefail

K8S_VERSION="${1:-${THRESHER_K8S_VERSION:-1.37.2}}"
K8S_VERSION="${K8S_VERSION#v}"
CACHE_ROOT="${THRESHER_K8S_CACHE:-$HOME/.cache/thresher-k8s}"
DEST="$CACHE_ROOT/v$K8S_VERSION"
BIN="$DEST/bin"
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)

have_all() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
  [[ -f "$DEST/BUILD_OK" ]]
}
if have_all; then
  echo "thresher-k8s: v$K8S_VERSION binaries cached in $BIN"
  exit 0
fi

command -v go >/dev/null || { echo "thresher-k8s: 'go' not found on PATH" >&2; exit 1; }
# One build at a time per version (parallel sessions or CI may call this concurrently).
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.v$K8S_VERSION.lock"
flock 9
if have_all; then
  echo "thresher-k8s: v$K8S_VERSION binaries cached in $BIN (built by a concurrent run)"
  exit 0
fi
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod"
export CGO_ENABLED=0
JOBS="${THRESHER_K8S_BUILD_JOBS:-2}"
MINOR="${K8S_VERSION#*.}"; MINOR="${MINOR%%.*}"
MAJOR="${K8S_VERSION%%.*}"
STAGING_VERSION="v0.${K8S_VERSION#*.}"      # 1.37.2 -> v0.37.2

start=$(date +%s)
mkdir -p "$BIN" "$DEST/src/k8s" "$DEST/src/etcd"
log() { echo "thresher-k8s [$(( $(date +%s) - start ))s] $*"; }

# --- 1. read k8s.io/kubernetes' own go.mod: go directive, godebug, staging list, etcd version
log "resolving k8s.io/kubernetes@v$K8S_VERSION"
KMOD="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
[[ -f "$KMOD" ]] || { echo "thresher-k8s: could not download k8s.io/kubernetes@v$K8S_VERSION" >&2; exit 1; }
GO_DIRECTIVE="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$KMOD" | head -1)"
GODEBUG_LINE="$(grep -E '^godebug ' "$KMOD" || true)"
mapfile -t STAGING < <(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\1#p' "$KMOD")
ETCD_VERSION="$(sed -n 's#^[[:space:]]*go\.etcd\.io/etcd/server/v3 \(v[^ ]*\).*#\1#p' "$KMOD" | head -1)"
ETCD_VERSION="${THRESHER_ETCD_VERSION:-${ETCD_VERSION:-v3.6.5}}"
log "go $GO_DIRECTIVE, ${#STAGING[@]} staging modules at $STAGING_VERSION, etcd $ETCD_VERSION"
(( ${#STAGING[@]} > 10 )) || { echo "thresher-k8s: found no staging replaces in $KMOD" >&2; exit 1; }

# --- 2. wrapper module for the Kubernetes binaries (replaces written BEFORE the first tidy)
cd "$DEST/src/k8s"
{
  echo "module thresher.local/k8sbuild"
  echo
  echo "go $GO_DIRECTIVE"
  [[ -n "$GODEBUG_LINE" ]] && { echo; echo "$GODEBUG_LINE"; }
  echo
  echo "require k8s.io/kubernetes v$K8S_VERSION"
  echo
  echo "replace ("
  for m in "${STAGING[@]}"; do echo "	$m => $m $STAGING_VERSION"; done
  echo ")"
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
log "go mod tidy (kubernetes wrapper)"
go mod tidy -e >/dev/null 2> tidy.log || { cat tidy.log >&2; exit 1; }

if [[ "${THRESHER_K8S_TIDY_ONLY:-}" == 1 ]]; then  # check a version resolves, build nothing
  log "module graph of k8s.io/kubernetes@v$K8S_VERSION resolves (tidy only)"; exit 0
fi

BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
LDF="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDF+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=$MAJOR -X $pkg.gitMinor=$MINOR"
  LDF+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$BUILD_DATE -X $pkg.gitCommit=thresher-modproxy-v$K8S_VERSION"
done
log "go build kube-apiserver kube-controller-manager kube-scheduler kubectl (-p $JOBS)"
go build -p "$JOBS" -trimpath -ldflags "$LDF" -o "$BIN/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl

# --- 3. etcd, from its own wrapper module (keeps the Kubernetes build list untouched)
cd "$DEST/src/etcd"
cat > go.mod <<GOMOD
module thresher.local/etcdbuild

go $GO_DIRECTIVE

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
log "go mod tidy (etcd wrapper)"
go mod tidy -e >/dev/null 2> tidy.log || { cat tidy.log >&2; exit 1; }
log "go build etcd $ETCD_VERSION"
go build -p "$JOBS" -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3

end=$(date +%s)
cat > "$DEST/BUILD_OK" <<INFO
k8s_version=v$K8S_VERSION
etcd_version=$ETCD_VERSION
go=$(go env GOVERSION)
built_at=$BUILD_DATE
build_seconds=$(( end - start ))
INFO
log "done: $(ls "$BIN" | tr '\n' ' ')"
