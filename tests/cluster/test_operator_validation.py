"""Invalid CurationJobs: refused by the API server when the schema can tell, otherwise reported as
a Failed condition with a Warning event a person can act on."""

# ruff: noqa: F811 - fixtures are imported from tests/operator/cluster_support.py by name

from __future__ import annotations

import json

import pytest
from k8s_helpers import wait_for
from prometheus_client.parser import text_string_to_metric_families

from tests.operator.cluster_support import (  # noqa: F401 - fixtures
    cj_condition,
    data_volume,
    events_of,
    operator,
    operator_factory,
    operator_install,
    quickstart_document,
    wait_for_cj,
)

pytestmark = pytest.mark.cluster


def warnings_of(k8s_api, namespace):
    return [e for e in events_of(k8s_api, namespace, "quickstart") if e["type"] == "Warning"]


def test_schema_invalid_curation_job_is_refused_by_the_api_server_with_a_readable_message(
    namespace, kubectl, operator_install
):
    doc = quickstart_document(
        parallelism=0,
        stages=[{"type": "exact-dedup", "params": {"bands": 4}}, {"type": "minhash-dedup", "name": "ingest"}],
    )
    with pytest.raises(AssertionError) as refused:
        kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    message = str(refused.value)
    assert "spec.parallelism" in message and "greater than or equal to 1" in message
    assert "params of stage type exact-dedup accept only: keep, normalize, partitions" in message
    with pytest.raises(AssertionError) as refused:
        kubectl(
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
            input=json.dumps(quickstart_document(stages=[{"type": "dedup"}])),
        )
    assert 'Unsupported value: "dedup"' in str(refused.value)


def test_gpus_where_no_step_uses_them_are_refused_by_the_api_server(namespace, kubectl, operator_install):
    cpu_only = quickstart_document(stages=[{"type": "exact-dedup", "resources": {"gpus": 8}}])
    with pytest.raises(AssertionError) as refused:
        kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(cpu_only))
    assert "resources.gpus: stage type exact-dedup runs on CPU only; remove `gpus`" in str(refused.value)
    engine = quickstart_document(engineResources={"gpus": 1})
    with pytest.raises(AssertionError) as refused:
        kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(engine))
    assert "engineResources.gpus: ingest and finalize run on CPU only" in str(refused.value)
    gpu_stage = quickstart_document(stages=[{"type": "semantic-dedup", "resources": {"gpus": 1}}])
    kubectl("apply", "-n", namespace, "--dry-run=server", "-f", "-", input=json.dumps(gpu_stage))


def test_spec_the_schema_cannot_judge_fails_with_invalid_spec_and_can_be_fixed(
    namespace, kubectl, k8s_api, operator
):
    bad = [{"type": "minhash-dedup", "params": {"bands": 256, "rowsPerBand": 64}}]  # 16384 hashes > 4096
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(quickstart_document(stages=bad)))
    cj = wait_for_cj(
        k8s_api, namespace, "quickstart", lambda o: cj_condition(o, "Failed").get("status") == "True", 60
    )
    failed = cj_condition(cj, "Failed")
    assert failed["reason"] == "InvalidSpec" and "at most 4096 hashes" in failed["message"]
    assert cj["status"]["phase"] == "Failed"
    wait_for(
        lambda: any(
            e["reason"] == "InvalidSpec" and "4096" in e["message"] for e in warnings_of(k8s_api, namespace)
        ),
        timeout=30,
        message="a Warning event",
    )
    # nothing ran, so the spec may be fixed in place
    fixed = [{"type": "heuristic-filter"}]
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(quickstart_document(stages=fixed)))
    wait_for_cj(
        k8s_api, namespace, "quickstart", lambda o: (o.get("status") or {}).get("phase") != "Failed", 60
    )


def test_unknown_model_path_fails_the_job_with_the_workers_message_and_is_no_retry(
    namespace, kubectl, k8s_api, operator, data_volume
):
    stages = [{"type": "semantic-dedup", "params": {"embedding": {"model": "no-such-encoder"}}}]
    # retries are allowed, but exit code 2 (a permanent error) fails the step at once
    doc = quickstart_document(stages=stages, models={"path": "models", "pvc": "thresher-data"}, retries=3)
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    cj = wait_for_cj(
        k8s_api, namespace, "quickstart", lambda o: (o.get("status") or {}).get("phase") == "Failed", 180
    )
    failed = cj_condition(cj, "Failed")
    assert failed["status"] == "True" and failed["reason"] == "ModelNotFound"
    assert "no-such-encoder" in failed["message"]
    assert cj_condition(cj, "Ready")["status"] == "False"
    wait_for(
        lambda: any(
            e["reason"] == "ModelNotFound" and "no-such-encoder" in e["message"]
            for e in warnings_of(k8s_api, namespace)
        ),
        timeout=30,
        message="a Warning event",
    )
    step = next(s for s in cj["status"]["steps"] if s["id"] == cj["status"]["currentStep"])
    assert step["phase"] == "Failed" and step["retries"] == 0, step
    retried = [
        m.value
        for family in text_string_to_metric_families(operator.metrics())
        for m in family.samples
        if m.name == "thresher_step_retries_total"
    ]
    assert sum(retried) == 0, "a permanent failure is no retry"
