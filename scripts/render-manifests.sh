#!/usr/bin/env bash
# Regenerate manifests/ from the Helm chart at default values (the chart is the source).
#   scripts/render-manifests.sh           copy the CRD and dashboard into the chart, write manifests/
#   scripts/render-manifests.sh --check   change nothing; exit 1 when the chart's copies or
#                                         manifests/ are out of date (and name the stale files)
# Needs helm (bash tests/cluster/setup.sh installs it) and PyYAML.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
if [[ " $* " == *" --check "* ]]; then
  rc=0
  "$PY" "$ROOT/scripts/sync-chart.py" --check || rc=1
  "$PY" "$ROOT/scripts/render_manifests.py" "$@" || rc=1
  exit "$rc"
fi
"$PY" "$ROOT/scripts/sync-chart.py"
exec "$PY" "$ROOT/scripts/render_manifests.py" "$@"
