"""examples/production.yaml as a CurationJob: language ID, PII, dedup, heuristics, decontamination
and the source policy on the local control plane, with the local runner's output."""

# ruff: noqa: F811 - fixtures are imported from tests/operator/cluster_support.py by name

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curation.models.sample_models import LANGUAGE_ID, sample_model_sources
from tests.operator.cluster_support import (  # noqa: F401 - fixtures
    DATA_CLAIM,
    ROOT,
    data_volume,
    dataset_content,
    get_cj,
    operator,
    operator_factory,
    operator_install,
    wait_succeeded,
)

pytestmark = pytest.mark.cluster
PRODUCTION = ROOT / "examples" / "production.yaml"


def models_folder(target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(sample_model_sources()[LANGUAGE_ID], target / LANGUAGE_ID)
    shutil.copytree(ROOT / "examples" / "models" / "benchmarks", target / "benchmarks")
    return target


def test_production_curation_job_matches_the_local_run(namespace, kubectl, k8s_api, operator, data_volume,
                                                       tmp_path):
    # The PVC holds the sample (data_volume) and the production folders beside it; `docs` is a
    # relative link to ../sample, as in the repository.
    shutil.copytree(ROOT / "examples" / "data" / "production", data_volume / "examples" / "data" / "production",
                    symlinks=True)
    models_folder(data_volume / "models")
    doc = yaml.safe_load(PRODUCTION.read_text(encoding="utf-8"))
    doc["spec"]["models"] = {"path": "models", "pvc": DATA_CLAIM}
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))

    local_out = tmp_path / "local"
    subprocess.run([str(Path(sys.executable).parent / "thresher"), "run", str(PRODUCTION), "--output", str(local_out),
                    "--models", str(models_folder(tmp_path / "models")), "--quiet"],
                   cwd=ROOT, check=True, capture_output=True, timeout=600)

    wait_succeeded(kubectl, namespace, name="production")
    cluster_out = data_volume / "out" / "production"
    assert dataset_content(cluster_out / "data") == dataset_content(local_out / "data")
    summary = json.loads((cluster_out / "summary.json").read_text())
    stages = {s["name"]: s for s in summary["stages"]}
    assert stages["decontaminate"]["removed"] == {"decontaminate:tiny-eval": 2}
    sources = stages["source-policy"]["extra"]["sources"]
    local = json.loads((local_out / "summary.json").read_text())
    assert sources == next(s for s in local["stages"] if s["name"] == "source-policy")["extra"]["sources"]
    status = get_cj(k8s_api, namespace, "production")["status"]
    assert status["phase"] == "Succeeded"
    assert {s["name"] for s in status["stages"]} >= {"language-id", "pii-redaction", "decontaminate", "source-policy"}
    print("per source:", json.dumps({k: {f: v[f] for f in ("input_docs", "kept_docs", "loss")}
                                     for k, v in sources.items()}))
