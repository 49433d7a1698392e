"""Lifecycle: suspend/resume, delete mid-run, finished step Jobs deleted, concurrency, metrics over HTTP."""

# ruff: noqa: F811 - fixtures are imported from tests/operator/cluster_support.py by name

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from k8s_helpers import wait_for
from prometheus_client.parser import text_string_to_metric_families

from tests.operator.cluster_support import (  # noqa: F401 - fixtures
    cj_condition,
    data_volume,
    dataset_content,
    get_cj,
    local_reference,
    operator,
    operator_factory,
    operator_install,
    pods_of,
    quickstart_document,
    step_jobs,
    wait_for_cj,
    wait_succeeded,
)

pytestmark = pytest.mark.cluster


def phase_is(phase):
    return lambda o: (o.get("status") or {}).get("phase") == phase


def test_suspend_stops_the_current_step_and_resume_finishes_the_job(
    namespace, kubectl, k8s_api, operator, data_volume, local_reference
):
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(quickstart_document()))
    wait_for_cj(
        k8s_api, namespace, "quickstart", lambda o: (o.get("status") or {}).get("stepsDone", 0) >= 2, 180
    )
    kubectl(
        "patch", "-n", namespace, "curjob", "quickstart", "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    cj = wait_for_cj(k8s_api, namespace, "quickstart", phase_is("Suspended"), 60)
    assert cj_condition(cj, "Suspended")["status"] == "True"
    assert cj_condition(cj, "Running")["status"] == "False"

    def quiet():
        jobs = step_jobs(k8s_api, namespace)
        running = [p for p in pods_of(k8s_api, namespace) if p.status.phase in ("Pending", "Running")]
        return (jobs,) if not running and all(not j.status.active for j in jobs) else None

    (jobs,) = wait_for(quiet, timeout=60, message="no running step pods while suspended")
    assert (
        any(j.spec.suspend for j in jobs)
        or cj["status"]["steps"][cj["status"]["stepsDone"]]["phase"] == "Pending"
    )
    time.sleep(4)
    names = {j.metadata.name for j in step_jobs(k8s_api, namespace)}
    assert names <= {j.metadata.name for j in jobs}, "no new step starts while suspended"

    kubectl(
        "patch", "-n", namespace, "curjob", "quickstart", "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    wait_succeeded(kubectl, namespace)
    local_out, _ = local_reference
    assert dataset_content(data_volume / "out" / "quickstart" / "data") == dataset_content(local_out / "data")


def test_deleting_a_running_job_leaves_no_jobs_or_pods(namespace, kubectl, k8s_api, operator, data_volume):
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(quickstart_document()))
    wait_for_cj(
        k8s_api, namespace, "quickstart", lambda o: (o.get("status") or {}).get("stepsDone", 0) >= 2, 180
    )
    assert step_jobs(k8s_api, namespace)
    kubectl("delete", "-n", namespace, "curjob", "quickstart", "--wait=true", "--timeout=60s")
    wait_for(
        lambda: not step_jobs(k8s_api, namespace) and not pods_of(k8s_api, namespace),
        timeout=90,
        message="garbage collection of the step Jobs and their pods",
    )
    assert "quickstart-spec" not in kubectl("get", "configmaps", "-n", namespace, "-o", "name")


def test_metrics_count_documents_and_finished_step_jobs_are_deleted(
    namespace, kubectl, k8s_api, operator_factory, data_volume
):
    operator = operator_factory()
    stages = [{"type": "heuristic-filter"}]
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(quickstart_document(stages=stages)))
    wait_succeeded(kubectl, namespace)
    status = get_cj(k8s_api, namespace, "quickstart")["status"]

    text = operator.metrics()

    def sample(name, **labels):
        for family in text_string_to_metric_families(text):
            for metric in family.samples:
                if metric.name == name and all(metric.labels.get(k) == v for k, v in labels.items()):
                    return metric.value
        raise AssertionError(f"{name}{labels} not in /metrics:\n{text}")

    assert sample("thresher_curationjobs", phase="Succeeded") == 1
    assert sample("thresher_curationjobs", phase="Running") == 0
    assert (
        sample("thresher_documents_total", stage_type="heuristic-filter", outcome="kept") == status["docsOut"]
    )
    assert (
        sample("thresher_documents_total", stage_type="heuristic-filter", outcome="removed")
        == status["docsRemoved"]
    )
    assert sample("thresher_step_duration_seconds_count", stage_type="heuristic-filter", step="filter") == 1
    ingest_steps = [s for s in status["steps"] if s["stage"] == "ingest"]
    assert sample("thresher_step_jobs_created_total", stage_type="ingest") == len(ingest_steps)
    assert "thresher_reconcile_errors_total" in text and "process_resident_memory_bytes" in text

    wait_for(
        lambda: not step_jobs(k8s_api, namespace), timeout=60, message="deletion of the finished step Jobs"
    )
    wait_for(lambda: not pods_of(k8s_api, namespace), timeout=60, message="their pods, garbage-collected")
    kept = get_cj(k8s_api, namespace, "quickstart")["status"]
    assert (
        kept["phase"] == "Succeeded"
        and kept["docsOut"] == status["docsOut"]
        and kept["steps"] == status["steps"]
    )


def test_concurrency_caps_the_pods_running_at_once_and_engine_steps_request_resources(
    namespace, kubectl, k8s_api, operator, data_volume
):
    from kubernetes import client

    doc = quickstart_document(
        stages=[{"type": "heuristic-filter"}],
        parallelism=3,
        concurrency=1,
        engineResources={"memory": "1Gi"},
    )
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    batch = client.BatchV1Api(k8s_api)
    seen: dict[str, Any] = {}

    def record_jobs():
        for j in batch.list_namespaced_job(namespace).items:
            seen[j.metadata.annotations["thresher.dev/step-id"]] = j
        return False

    def running_pods_of_a_step():
        counts: dict[str, int] = {}
        for p in pods_of(k8s_api, namespace):
            if p.status.phase == "Running":
                step = p.metadata.annotations["thresher.dev/step-id"]
                counts[step] = counts.get(step, 0) + 1
        return counts

    peak = 0
    cj = wait_for_cj(k8s_api, namespace, "quickstart", lambda o: True, 10)
    while (cj.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
        record_jobs()
        peak = max([peak, *running_pods_of_a_step().values()])
        time.sleep(0.2)
        cj = get_cj(k8s_api, namespace, "quickstart")
    assert cj["status"]["phase"] == "Succeeded", cj["status"].get("message")
    assert peak <= 1, "at most `concurrency` pods of a step run at once"
    maps = [s for s in cj["status"]["steps"] if s["ranks"] == 3]
    assert maps and all(s["ranksDone"] == 3 for s in maps), "every rank still ran"
    for step_id, job in seen.items():
        assert job.spec.parallelism == 1 and job.spec.completions in (1, 3), step_id
        resources = job.spec.template.spec.containers[0].resources
        if step_id.startswith(("ingest.", "finalize.")):
            assert resources.requests == {"cpu": "1", "memory": "1Gi"}, step_id
            assert resources.limits == {"memory": "1Gi"}, step_id
    assert any(s.startswith("ingest.") for s in seen) and any(s.startswith("finalize.") for s in seen)
