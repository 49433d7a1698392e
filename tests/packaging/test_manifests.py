"""manifests/ (plain YAML for `kubectl apply -k`) and the Helm chart at default values agree."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.packaging.conftest import ROOT, find_tool, load_script, report

MANIFESTS_ONLY = {("Namespace", "", "thresher-system")}  # Helm installs into an existing namespace


@pytest.fixture(scope="module")
def kustomize_build() -> list[dict[str, Any]]:
    kubectl = find_tool("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed: run `bash tests/cluster/setup.sh` (make cluster-binaries)")
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "manifests")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _describe(a: Any, b: Any, path: str = "") -> list[str]:
    """The paths where two parsed objects differ (first few), for a readable failure."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _describe(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _describe(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path or '.'}: chart {a!r:.120} != manifests {b!r:.120}"]


def test_manifests_contain_exactly_the_charts_objects_at_default_values(render, kustomize_build):
    tools = load_script("render_manifests")
    chart = {tools.key(o): tools.normalize(o) for o in render()}
    manifests = {tools.key(o): o for o in kustomize_build}
    missing = sorted(set(chart) - set(manifests))
    extra = sorted(set(manifests) - set(chart) - MANIFESTS_ONLY)
    differing = {k: _describe(chart[k], manifests[k])[:8] for k in sorted(set(chart) & set(manifests))}
    differing = {k: v for k, v in differing.items() if v}
    problems = [f"in the chart, not in manifests/: {k}" for k in missing]
    problems += [f"in manifests/, not in the chart: {k}" for k in extra]
    problems += [f"{k}:\n  " + "\n  ".join(v) for k, v in differing.items()]
    assert not problems, "\n".join(problems) + "\nregenerate with: scripts/render-manifests.sh"
    report(f"manifests/ == helm template (default values): {len(chart)} objects agree")


def test_samples_name_the_pvc_they_ship():
    samples = ROOT / "manifests" / "samples"
    pvcs = {
        d["metadata"]["name"]
        for f in samples.glob("*.yaml")
        for d in yaml.safe_load_all(f.read_text())
        if d and d["kind"] == "PersistentVolumeClaim"
    }
    jobs = [
        d
        for f in samples.glob("*.yaml")
        for d in yaml.safe_load_all(f.read_text())
        if d and d["kind"] == "CurationJob"
    ]
    assert jobs, "manifests/samples has no CurationJob"
    for job in jobs:
        spec = job["spec"]
        used = {spec[part]["pvc"] for part in ("input", "output", "models") if spec.get(part, {}).get("pvc")}
        assert used <= pvcs, (
            f"{job['metadata']['name']} uses PVCs {sorted(used - pvcs)} that manifests/samples lacks"
        )


@pytest.mark.cluster
def test_manifests_and_samples_pass_server_side_validation(kubectl, namespace):
    """`kubectl apply -k manifests/` as a server-side dry run (admission, CRD schema and CEL included)."""
    if "thresher-system" not in kubectl("get", "namespaces", "-o", "name"):
        kubectl("create", "namespace", "thresher-system")  # a dry run cannot create what later objects need
    out = kubectl(
        "apply", "-k", str(ROOT / "manifests"), "--server-side", "--force-conflicts", "--dry-run=server"
    )
    report(out.strip().replace("\n", "; "))
    kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "manifests" / "crd"))
    out = kubectl("apply", "-n", namespace, "-k", str(ROOT / "manifests" / "samples"), "--dry-run=server")
    assert "curationjob.thresher.dev/quickstart created (server dry run)" in out
    report(out.strip().replace("\n", "; "))


def _copy_of_the_repository(tmp_path):
    import shutil

    for folder in ("scripts", "helm", "manifests", "dashboards"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


def test_render_manifests_check_reports_stale_files_and_changes_nothing(tmp_path, helm):
    import sys

    repo = _copy_of_the_repository(tmp_path)
    chart_crd = repo / "helm" / "thresher" / "files" / "crds" / "thresher.dev_curationjobs.yaml"
    deployment = repo / "manifests" / "operator" / "deployment.yaml"
    chart_crd.write_text(chart_crd.read_text() + "# stale\n")
    deployment.write_text(deployment.read_text() + "# stale\n")
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    script = str(repo / "scripts" / "render-manifests.sh")
    env = {"PATH": f"{Path(helm).parent}:/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(Path.home())}
    check = subprocess.run(["bash", script, "--check"], capture_output=True, text=True, env=env, timeout=120)
    assert check.returncode == 1, check.stderr
    assert "helm/thresher/files/crds/thresher.dev_curationjobs.yaml differs" in check.stderr
    assert "stale: manifests/operator/deployment.yaml" in check.stderr
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before, "--check wrote files"
    subprocess.run(["bash", script], capture_output=True, text=True, env=env, timeout=120, check=True)
    again = subprocess.run(["bash", script, "--check"], capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
