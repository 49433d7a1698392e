"""The quickstart as a CurationJob: `kubectl apply` -> Succeeded -> the local runner's output."""

# ruff: noqa: F811 - fixtures are imported from tests/operator/cluster_support.py by name

from __future__ import annotations

import json
import re
import time

import pytest

from tests.operator.cluster_support import (  # noqa: F401 - fixtures
    assert_one_job_per_step,
    data_volume,
    dataset_content,
    get_cj,
    local_reference,
    operator,
    operator_factory,
    operator_install,
    pods_of,
    quickstart_document,
    wait_succeeded,
)

pytestmark = pytest.mark.cluster


def test_quickstart_curation_job_succeeds_with_the_local_runners_output(
    namespace, kubectl, k8s_api, operator, data_volume, local_reference, record_property
):
    doc = quickstart_document()
    applied = time.monotonic()
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    while not pods_of(k8s_api, namespace):
        assert time.monotonic() - applied < 60, f"no worker pod after 60s:\n{operator.log_tail()}"
        time.sleep(0.05)
    first_pod_s = time.monotonic() - applied
    wait_succeeded(kubectl, namespace)
    cluster_s = time.monotonic() - applied

    local_out, local_s = local_reference
    cluster_out = data_volume / "out" / "quickstart"
    assert dataset_content(cluster_out / "data") == dataset_content(local_out / "data")
    assert (cluster_out / "summary.json").exists() and (cluster_out / "report.html").exists()

    cj = get_cj(k8s_api, namespace, "quickstart")
    status = cj["status"]
    summary = json.loads((local_out / "summary.json").read_text())
    assert status["phase"] == "Succeeded"
    assert (
        status["stepsDone"] == status["stepsTotal"]
        and status["progress"] == f"{status['stepsTotal']}/{status['stepsTotal']}"
    )
    assert (status["docsIn"], status["docsOut"]) == (
        summary["totals"]["input_docs"],
        summary["totals"]["output_docs"],
    )
    assert status["docsRemoved"] == summary["totals"]["rejected_docs"]
    assert status["docsIn"] + status["docsGenerated"] == status["docsOut"] + status["docsRemoved"]
    assert status["observedGeneration"] == cj["metadata"]["generation"]
    stages = {s["name"]: s for s in status["stages"]}
    assert stages["exact-dedup"]["removed"].get("exact-duplicate", 0) > 0
    assert all(s["phase"] == "Succeeded" for s in status["stages"])
    assert status["startTime"] <= status["completionTime"]

    table = kubectl("get", "-n", namespace, "curjob", "quickstart")
    header, row = table.strip().splitlines()
    assert re.split(r"\s{2,}", header.strip()) == ["NAME", "PHASE", "STAGE", "PROGRESS", "KEPT %", "AGE"]
    assert "Succeeded" in row and status["progress"] in row and str(status["keptPercent"]) in row

    # one Job per step, each deleted once its counts were in the status
    assert_one_job_per_step(k8s_api, namespace, status)
    assert all(s["ranksDone"] == s["ranks"] and s["retries"] == 0 for s in status["steps"])
    # every step has a real duration: the worker's own, else its pods' start to finish (whole
    # seconds: a pod's times have no fraction, so a step quicker than its pods' start can be 0)
    seconds = [(s["id"], s["seconds"]) for s in status["steps"]]
    assert sum(1 for _, t in seconds if t > 0) >= len(seconds) // 2, seconds

    memory = operator.memory_kib()
    for key, value in {
        "first_pod_seconds": round(first_pod_s, 2),
        "cluster_seconds": round(cluster_s, 1),
        "local_seconds": round(local_s, 1),
        "operator_rss_kib": memory.get("VmRSS"),
        "operator_peak_rss_kib": memory.get("VmHWM"),
        "kept_percent": status["keptPercent"],
    }.items():
        record_property(key, value)
        print(f"{key}={value}")
