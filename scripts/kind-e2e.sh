#!/usr/bin/env bash
# End to end on kind: create the cluster, build and load the image, install the chart, run the
# cluster tests against it. Needs docker, kind, kubectl and helm on PATH (not available on our CI
# machines, which use the local control plane of tests/cluster instead).
#
#   scripts/kind-e2e.sh              # CPU image (VARIANT=gpu for the GPU image)
#   KEEP_CLUSTER=1 scripts/kind-e2e.sh   # leave the cluster running afterwards
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER:-thresher}"
VARIANT="${VARIANT:-cpu}"
IMAGE="${IMAGE:-thresher:e2e-$VARIANT}"
DATA=/tmp/thresher-kind-data   # must match kind-config.yaml
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: '$tool' is not on PATH" >&2; exit 1; }
done

echo "kind-e2e: sample data -> $DATA"
rm -rf "$DATA"; mkdir -p "$DATA/examples/data"
cp -r "$ROOT/examples/data/sample" "$DATA/examples/data/sample"
chmod -R a+rwX "$DATA"

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --config "$ROOT/kind-config.yaml" --wait 120s
fi
if [[ -z "${KEEP_CLUSTER:-}" ]]; then trap 'kind delete cluster --name "$CLUSTER"' EXIT; fi
KUBECONFIG_FILE="$(mktemp)"; kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG_FILE"

echo "kind-e2e: docker build ($VARIANT) -> $IMAGE"
docker build --build-arg VARIANT="$VARIANT" -t "$IMAGE" "$ROOT"
kind load docker-image --name "$CLUSTER" "$IMAGE"

echo "kind-e2e: helm install (smoke), then the cluster tests"
helm --kubeconfig "$KUBECONFIG_FILE" upgrade --install thresher "$ROOT/helm/thresher" \
  --namespace thresher-system --create-namespace --wait --timeout 5m \
  --set image.registry= --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}"
helm --kubeconfig "$KUBECONFIG_FILE" uninstall thresher --namespace thresher-system --wait

THRESHER_TEST_KUBECONFIG="$KUBECONFIG_FILE" \
THRESHER_TEST_IMAGE="$IMAGE" \
THRESHER_TEST_SAMPLE_HOSTPATH=/thresher-data \
  "$PY" -m pytest tests/packaging tests/cluster -m cluster -p no:cacheprovider -v
