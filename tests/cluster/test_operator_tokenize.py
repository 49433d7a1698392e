"""examples/tokenized.yaml as a CurationJob: the token files the step pods write equal the local
run's, byte for byte; the CRD's CEL rules refuse a token output that names two EOS tokens."""

# ruff: noqa: F811 - fixtures are imported from tests/operator/cluster_support.py by name

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curation.models.sample_models import ENCODER
from tests.helpers import sample_models_dir
from tests.operator.cluster_support import (  # noqa: F401 - fixtures
    DATA_CLAIM,
    ROOT,
    data_volume,
    get_cj,
    operator,
    operator_factory,
    operator_install,
    wait_for_cj,
)

pytest.importorskip("tokenizers")
pytestmark = pytest.mark.cluster
TOKENIZED = ROOT / "examples" / "tokenized.yaml"


def token_files(out: Path) -> dict[str, bytes]:
    root = out / "tokens"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_tokenized_curation_job_writes_the_local_runs_token_files(namespace, kubectl, k8s_api, operator, data_volume,
                                                                    tmp_path):
    # The tokenizer goes in the data PVC, as a tokenizer.json folder (no model weights needed).
    (data_volume / "models" / ENCODER).mkdir(parents=True)
    shutil.copy(sample_models_dir() / ENCODER / "tokenizer.json", data_volume / "models" / ENCODER / "tokenizer.json")
    doc = yaml.safe_load(TOKENIZED.read_text(encoding="utf-8"))
    doc["spec"]["models"] = {"path": "models", "pvc": DATA_CLAIM}
    doc["spec"]["input"]["pvc"] = doc["spec"]["output"]["pvc"] = DATA_CLAIM  # as in examples/quickstart.yaml
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))

    local_out = tmp_path / "local"
    subprocess.run([str(Path(sys.executable).parent / "thresher"), "run", str(TOKENIZED), "--output", str(local_out),
                    "--models", str(sample_models_dir()), "--quiet"],
                   cwd=ROOT, check=True, capture_output=True, timeout=600)

    cj = wait_for_cj(k8s_api, namespace, "tokenized",
                     lambda o: (o.get("status") or {}).get("phase") in ("Succeeded", "Failed"), 600)
    assert cj["status"]["phase"] == "Succeeded", json.dumps(cj["status"].get("conditions"), indent=1)
    cluster_out = data_volume / "out" / "tokenized"
    local_files = token_files(local_out)
    assert {n for n in local_files if n.endswith(".bin")} and token_files(cluster_out) == local_files
    summary = json.loads((cluster_out / "summary.json").read_text())
    local = json.loads((local_out / "summary.json").read_text())
    assert summary["tokens"]["tokens"] == local["tokens"]["tokens"] > 0
    assert summary["tokens"]["per_stage"] == local["tokens"]["per_stage"]
    steps = [s["id"] for s in get_cj(k8s_api, namespace, "tokenized")["status"]["steps"]]
    assert steps[-4:] == ["finalize.tokenize", "finalize.layout", "finalize.merge", "finalize.summary"]


@pytest.mark.parametrize(("tokenize", "message"), [
    ({"tokenizer": ENCODER, "eosToken": "[SEP]", "eosId": 102}, "give eosToken or eosId, not both"),
    ({"tokenizer": ENCODER, "formats": ["numpy", "numpy"]}, "formats: each format at most once"),
])
def test_the_api_server_refuses_a_contradictory_token_output(namespace, kubectl, operator_install, tokenize, message):
    doc = yaml.safe_load(TOKENIZED.read_text(encoding="utf-8"))
    doc["spec"]["output"]["tokenize"] = tokenize
    with pytest.raises(AssertionError) as refused:
        kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    assert message in str(refused.value)
