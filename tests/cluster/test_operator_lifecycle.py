"""Lifecycle: suspend/resume, delete mid-run, finished Jobs cleaned by TTL, metrics over HTTP."""

# ruff: noqa: F811 - fixtures are imported from tests/operator/cluster_support.py by name

from __future__ import annotations

import json
import time

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
        return jobs if not running and all(not j.status.active for j in jobs) else None

    jobs = wait_for(quiet, timeout=60, message="no running step pods while suspended")
    assert (
        any(j.spec.suspend for j in jobs)
        or cj["status"]["steps"][cj["status"]["stepsDone"]]["phase"] == "Pending"
    )
    time.sleep(4)
    assert len(step_jobs(k8s_api, namespace)) == len(jobs), "no new step starts while suspended"

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


def test_metrics_count_documents_and_finished_jobs_are_cleaned_by_ttl(
    namespace, kubectl, k8s_api, operator_factory, data_volume
):
    operator = operator_factory(THRESHER_FINISHED_JOB_TTL_SECONDS="0")
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
    assert sample("thresher_step_jobs_created_total", stage_type="ingest") == 1
    assert "thresher_reconcile_errors_total" in text and "process_resident_memory_bytes" in text

    wait_for(
        lambda: not step_jobs(k8s_api, namespace), timeout=60, message="TTL deletion of finished step Jobs"
    )
    kept = get_cj(k8s_api, namespace, "quickstart")["status"]
    assert (
        kept["phase"] == "Succeeded"
        and kept["docsOut"] == status["docsOut"]
        and kept["steps"] == status["steps"]
    )
