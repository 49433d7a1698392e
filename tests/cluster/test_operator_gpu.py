"""GPU stages: visible Unschedulable when no node has the GPUs, and running on a GPU node."""

# ruff: noqa: F811 - fixtures are imported from tests/operator/cluster_support.py by name

from __future__ import annotations

import json
import shutil

import pytest
from k8s_helpers import wait_for, watch_until

from curation.models.sample_models import ENCODER, populate
from tests.operator.cluster_support import (  # noqa: F401 - fixtures
    DATA_CLAIM,
    SAMPLE,
    cj_condition,
    data_volume,
    events_of,
    operator,
    operator_factory,
    operator_install,
    pods_of,
    quickstart_document,
    wait_for_cj,
    wait_succeeded,
)

pytestmark = pytest.mark.cluster


def warnings_of(k8s_api, namespace):
    return [e for e in events_of(k8s_api, namespace, "quickstart") if e["type"] == "Warning"]


def small_input(data_volume):
    small = data_volume / "small"
    small.mkdir(exist_ok=True)
    shutil.copy(SAMPLE / "part-00000.parquet", small / "part-00000.parquet")
    populate(data_volume / "models")


def semantic_dedup_job(gpus: int, **spec) -> dict:
    stages = [
        {
            "type": "semantic-dedup",
            "resources": {"gpus": gpus},
            "params": {"embedding": {"model": ENCODER, "maxTokens": 64}, "clusters": 4},
        }
    ]
    return quickstart_document(
        stages=stages,
        input={"path": "small", "pvc": DATA_CLAIM, "idField": "doc_id"},
        output={"path": "out/semantic", "pvc": DATA_CLAIM},
        models={"path": "models", "pvc": DATA_CLAIM},
        parallelism=1,
        retries=0,
        **spec,
    )


def test_gpu_stage_without_a_node_that_has_the_gpus_is_reported_unschedulable(
    namespace, kubectl, k8s_api, operator, data_volume
):
    small_input(data_volume)
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(semantic_dedup_job(gpus=16)))
    cj = wait_for_cj(
        k8s_api,
        namespace,
        "quickstart",
        lambda o: cj_condition(o, "Ready").get("reason") == "Unschedulable",
        120,
    )
    ready = cj_condition(cj, "Ready")
    assert ready["status"] == "False" and "nvidia.com/gpu" in ready["message"]
    assert "semantic-dedup.embed" in ready["message"]
    wait_for(
        lambda: any(
            e["reason"] == "Unschedulable" and "nvidia.com/gpu" in e["message"]
            for e in warnings_of(k8s_api, namespace)
        ),
        timeout=30,
        message="a Warning event",
    )


def test_gpu_stage_runs_on_a_gpu_node(namespace, kubectl, k8s_api, operator, data_volume):
    from kubernetes import client

    small_input(data_volume)
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(semantic_dedup_job(gpus=1)))
    # the step's pods go with its Job once its counts are recorded: look at them while it runs
    embed = watch_until(
        client.CoreV1Api(k8s_api).list_namespaced_pod,
        lambda p: (
            p.metadata.annotations.get("thresher.dev/step-id") == "semantic-dedup.embed"
            and bool(p.spec.node_name)
        ),
        timeout=240,
        namespace=namespace,
    )
    assert (embed.spec.containers[0].resources.limits or {}).get("nvidia.com/gpu") == "1"
    wait_succeeded(kubectl, namespace)
    cj = wait_for_cj(k8s_api, namespace, "quickstart", lambda o: True, 10)
    assert cj["status"]["docsIn"] > 0 and cj["status"]["stages"][0]["phase"] == "Succeeded"


def test_an_unschedulable_step_fails_the_job_after_the_unschedulable_timeout(
    namespace, kubectl, k8s_api, operator, data_volume
):
    small_input(data_volume)
    doc = semantic_dedup_job(gpus=16, unschedulableTimeoutSeconds=5)
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    cj = wait_for_cj(
        k8s_api, namespace, "quickstart", lambda o: (o.get("status") or {}).get("phase") == "Failed", 180
    )
    failed = cj_condition(cj, "Failed")
    assert failed["reason"] == "Unschedulable"
    assert "could not be scheduled for" in failed["message"] and "nvidia.com/gpu" in failed["message"]
    assert "spec.unschedulableTimeoutSeconds is 5" in failed["message"]
    assert cj_condition(cj, "Ready")["reason"] == "JobFailed"
    step = next(s for s in cj["status"]["steps"] if s["id"] == "semantic-dedup.embed")
    assert (step["phase"], step["reason"]) == ("Failed", "Unschedulable")
    wait_for(
        lambda: any(
            e["reason"] == "Unschedulable" and "could not be scheduled for" in e["message"]
            for e in warnings_of(k8s_api, namespace)
        ),
        timeout=30,
        message="a Warning event",
    )
    # no pod of the failed job waits on for a GPU
    wait_for(lambda: not pods_of(k8s_api, namespace), timeout=60, message="the waiting pods to go")
