"""Recovery: the operator, a worker and the API server can die mid-run; the job still finishes
with exactly one Job per step and the local runner's output."""

# ruff: noqa: F811 - fixtures are imported from tests/operator/cluster_support.py by name

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from k8s_helpers import wait_for

from tests.operator.cluster_support import (  # noqa: F401 - fixtures
    assert_one_job_per_step,
    data_volume,
    dataset_content,
    get_cj,
    job_uids_by_name,
    local_reference,
    operator_factory,
    operator_install,
    pods_of,
    quickstart_document,
    step_jobs,
    wait_for_cj,
    wait_succeeded,
)

pytestmark = pytest.mark.cluster


def steps_done(k8s_api, namespace, n, timeout=180):
    return wait_for_cj(
        k8s_api, namespace, "quickstart", lambda o: (o.get("status") or {}).get("stepsDone", 0) >= n, timeout
    )


def assert_finished_like_local(kubectl, k8s_api, namespace, data_volume, local_reference):
    wait_succeeded(kubectl, namespace)
    status = get_cj(k8s_api, namespace, "quickstart")["status"]
    assert_one_job_per_step(k8s_api, namespace, status)
    local_out, _ = local_reference
    assert dataset_content(data_volume / "out" / "quickstart" / "data") == dataset_content(local_out / "data")
    return status


def test_operator_killed_mid_pipeline_restarts_and_adopts_its_jobs(
    namespace, kubectl, k8s_api, operator_factory, data_volume, local_reference
):
    first = operator_factory()
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(quickstart_document()))
    steps_done(k8s_api, namespace, 3)
    first.kill()
    jobs_before = {j.metadata.name: j.metadata.uid for j in step_jobs(k8s_api, namespace)}
    time.sleep(3)  # the running step goes on without an operator
    operator_factory()
    status = assert_finished_like_local(kubectl, k8s_api, namespace, data_volume, local_reference)
    uids = job_uids_by_name(k8s_api, namespace)
    assert all(uids[name] == {uid} for name, uid in jobs_before.items()), (
        "the Jobs that existed at the kill were adopted, not replaced"
    )
    assert status["phase"] == "Succeeded"


def _worker_pid(pod) -> int | None:
    for cs in pod.status.container_statuses or []:
        if cs.container_id and cs.container_id.startswith("thresher://") and cs.state.running:
            return int(cs.container_id.rsplit("/", 1)[-1])
    return None


def test_worker_pod_killed_mid_step_is_retried_without_loss_or_duplicates(
    namespace, kubectl, k8s_api, operator_factory, data_volume, local_reference
):
    operator_factory()
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(quickstart_document()))
    target = "minhash-dedup.signatures"

    def running_target():
        for pod in pods_of(k8s_api, namespace):
            if (
                pod.metadata.annotations.get("thresher.dev/step-id") == target
                and pod.status.phase == "Running"
            ):
                return pod
        return None

    pod = wait_for(running_target, timeout=240, interval=0.05, message=f"a running pod of {target}")
    pid = _worker_pid(pod)
    if pid is not None:  # local node agent: SIGKILL the worker process, as the OOM killer would
        os.kill(pid, signal.SIGKILL)
    else:  # a real cluster: delete the pod without grace
        kubectl("delete", "pod", "-n", namespace, pod.metadata.name, "--grace-period=0", "--force")
    status = assert_finished_like_local(kubectl, k8s_api, namespace, data_volume, local_reference)
    step = next(s for s in status["steps"] if s["id"] == target)
    assert step["retries"] >= 1 and step["ranksDone"] == step["ranks"]


def test_api_server_restart_mid_run_is_survived(
    namespace, kubectl, k8s_api, k8s_cluster, operator_factory, data_volume, local_reference
):
    cp = k8s_cluster.control_plane
    if cp is None:
        pytest.skip("restarting the API server needs the local control plane")
    operator = operator_factory()
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(quickstart_document()))
    steps_done(k8s_api, namespace, 2)
    apiserver = cp.procs["kube-apiserver"]
    argv = list(apiserver.args)
    os.killpg(apiserver.pid, signal.SIGKILL)  # a crash, not a graceful drain of the watches
    apiserver.wait(30)
    time.sleep(2)  # the API is down: watches break, requests fail
    cp._spawn("kube-apiserver", argv)
    cp._wait_http(f"{cp.server}/readyz", _admin_token(cp), 60, "kube-apiserver")
    assert_finished_like_local(kubectl, k8s_api, namespace, data_volume, local_reference)
    assert operator.proc is not None and operator.proc.poll() is None, "the operator survived the outage"


def _admin_token(cp) -> str:
    import yaml

    doc = yaml.safe_load(cp.kubeconfig.read_text())
    return doc["users"][0]["user"]["token"]
