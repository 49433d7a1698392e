"""`spec.evaluate` as a CurationJob: the quickstart on the train side of `thresher holdout`, then the
evaluate.run step trains the proxy models in a pod and writes eval.json beside the output."""

# ruff: noqa: F811 - fixtures are imported from tests/operator/cluster_support.py by name

from __future__ import annotations

import json
import shutil

import pytest

from curation.models.sample_models import ENCODER
from tests.helpers import sample_models_dir
from tests.operator.cluster_support import (  # noqa: F401 - fixtures
    DATA_CLAIM,
    data_volume,
    get_cj,
    operator,
    operator_factory,
    operator_install,
    quickstart_document,
    wait_for_cj,
)

pytest.importorskip("torch")
pytestmark = [pytest.mark.cluster, pytest.mark.model]


def test_the_evaluation_step_runs_in_a_pod_after_the_curation(namespace, kubectl, k8s_api, operator, data_volume):
    from curation.evaluate.holdout import split_holdout

    split_holdout(str(data_volume / "examples" / "data" / "sample"), data_volume / "split", id_field="doc_id")
    (data_volume / "models" / ENCODER).mkdir(parents=True)
    shutil.copy(sample_models_dir() / ENCODER / "tokenizer.json", data_volume / "models" / ENCODER / "tokenizer.json")
    doc = quickstart_document("evaluated")
    spec = doc["spec"]
    spec["input"]["path"] = "split/train"
    spec["output"]["path"] = "out/evaluated"
    spec["models"] = {"path": "models", "pvc": DATA_CLAIM}
    spec["evaluate"] = {"evalSet": "split/heldout", "seeds": [0], "tokens": 4096, "tokenizer": ENCODER}
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    cj = wait_for_cj(k8s_api, namespace, "evaluated",
                     lambda o: (o.get("status") or {}).get("phase") in ("Succeeded", "Failed"), 600)
    assert cj["status"]["phase"] == "Succeeded", json.dumps(cj["status"].get("conditions"), indent=1)
    result = json.loads((data_volume / "out" / "evaluated" / "eval" / "eval.json").read_text())
    arms = {a["name"]: a for a in result["arms"]}
    assert arms["raw"]["tokens_trained"] == arms["curated"]["tokens_trained"] == 4096
    assert arms["curated"]["documents"] < arms["raw"]["documents"]
    assert "curated - raw" in result["differences"]["heldout"]
    status = get_cj(k8s_api, namespace, "evaluated")["status"]
    assert status["steps"][-1]["id"] == "evaluate.run" and status["steps"][-1]["phase"] == "Succeeded"
    assert "evaluate" not in {s["name"] for s in status["stages"]}
