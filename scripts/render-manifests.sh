#!/usr/bin/env bash
# Regenerate manifests/ from the Helm chart at default values (the chart is the source).
#   scripts/render-manifests.sh           write the files
#   scripts/render-manifests.sh --check   exit 1 when manifests/ is out of date
# Needs helm (bash tests/cluster/setup.sh installs it) and PyYAML.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
"$PY" "$ROOT/scripts/sync-chart.py"
exec "$PY" "$ROOT/scripts/render_manifests.py" "$@"
