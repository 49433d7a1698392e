"""The cluster tier's own acceptance tests: the real API server, controllers and scheduler.

All of these also run unchanged against an existing cluster (``--kubeconfig`` /
``THRESHER_TEST_KUBECONFIG``, e.g. kind); checks that need the local node agent's folders are
skipped there.
"""

from __future__ import annotations

import json
import textwrap
import uuid

import pytest
from k8s_helpers import condition_true, wait_for, watch_until, watch_until_gone
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.cluster

GPU = "nvidia.com/gpu"


def gpu_nodes(core: client.CoreV1Api) -> list:
    return [n for n in core.list_node().items if int((n.status.allocatable or {}).get(GPU, "0")) > 0]


def test_version_and_node(k8s_cluster, k8s_api):
    core = client.CoreV1Api(k8s_api)
    version = client.VersionApi(k8s_api).get_code()
    assert version.major == "1"
    if not k8s_cluster.local:
        return
    assert version.git_version == f"v{k8s_cluster.control_plane.version}"
    node = core.read_node(k8s_cluster.node_name)
    assert condition_true(node, "Ready")
    assert node.status.capacity[GPU] == "4"
    lease = client.CoordinationV1Api(k8s_api).read_namespaced_lease(
        k8s_cluster.node_name, "kube-node-lease")
    assert lease.spec.holder_identity == k8s_cluster.node_name


WORKER = textwrap.dedent("""
    import json, os, pathlib, sys
    rank = int(os.environ["JOB_COMPLETION_INDEX"])
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank-{rank}.txt").write_text(os.environ["POD_NAME"])
    msg = {"rank": rank, "world": int(os.environ["WORLD_SIZE"]), "annotated": os.environ["RANK"]}
    pathlib.Path(os.environ["TERMINATION_LOG"]).write_text(json.dumps(msg))
""")


def test_indexed_job_with_gpus_completes(k8s_cluster, k8s_api, namespace):
    """Indexed Job, completions 3, one GPU per pod: scheduled, run, marked Complete per index."""
    core, batch = client.CoreV1Api(k8s_api), client.BatchV1Api(k8s_api)
    if not gpu_nodes(core):
        pytest.skip(f"no node advertises {GPU}")
    core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": "work"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    })
    batch.create_namespaced_job(namespace, {
        "metadata": {"name": "step-hash"},
        "spec": {
            "completionMode": "Indexed", "completions": 3, "parallelism": 3, "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "worker", "image": "python:3.12-slim",
                    "command": ["python", "-c", WORKER], "args": ["/data/out"],
                    "env": [
                        {"name": "WORLD_SIZE", "value": "3"},
                        {"name": "TERMINATION_LOG", "value": "/dev/termination-log"},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "RANK", "valueFrom": {"fieldRef": {"fieldPath":
                            "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
                    ],
                    "resources": {"requests": {GPU: "1", "cpu": "100m"}, "limits": {GPU: "1"}},
                    "volumeMounts": [{"name": "work", "mountPath": "/data"}],
                }],
                "volumes": [{"name": "work", "persistentVolumeClaim": {"claimName": "work"}}],
            }},
        },
    })
    job = watch_until(batch.list_namespaced_job,
                      lambda j: condition_true(j, "Complete") or condition_true(j, "Failed"),
                      timeout=120, namespace=namespace, field_selector="metadata.name=step-hash")
    assert condition_true(job, "Complete"), job.status
    assert job.status.succeeded == 3
    assert job.status.completed_indexes == "0-2"

    pods = core.list_namespaced_pod(namespace, label_selector="job-name=step-hash").items
    assert len(pods) == 3
    seen = set()
    for pod in pods:
        assert pod.spec.node_name, "scheduler bound the pod"
        assert pod.status.phase == "Succeeded"
        assert pod.spec.containers[0].resources.requests[GPU] == "1"
        index = pod.metadata.annotations["batch.kubernetes.io/job-completion-index"]
        term = pod.status.container_statuses[0].state.terminated
        assert term.exit_code == 0 and term.reason == "Completed"
        msg = json.loads(term.message)
        assert msg == {"rank": int(index), "world": 3, "annotated": index}
        seen.add(msg["rank"])
    assert seen == {0, 1, 2}
    if k8s_cluster.local:
        folder = k8s_cluster.pvc_root / namespace / "work" / "out"
        assert sorted(p.name for p in folder.iterdir()) == ["rank-0.txt", "rank-1.txt", "rank-2.txt"]


def test_failing_job_retries_then_fails(k8s_api, namespace):
    """A command that exits 1: the Job controller retries (backoffLimit 1) and then fails."""
    core, batch = client.CoreV1Api(k8s_api), client.BatchV1Api(k8s_api)
    batch.create_namespaced_job(namespace, {
        "metadata": {"name": "broken"},
        "spec": {
            "completionMode": "Indexed", "completions": 1, "backoffLimit": 1,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "worker", "image": "python:3.12-slim",
                    "command": ["python", "-c",
                                "import sys; print('boom: bad input', file=sys.stderr); sys.exit(1)"],
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                }],
            }},
        },
    })
    job = watch_until(batch.list_namespaced_job, lambda j: condition_true(j, "Failed"), timeout=120,
                      namespace=namespace, field_selector="metadata.name=broken")
    failed = next(c for c in job.status.conditions if c.type == "Failed")
    assert failed.reason == "BackoffLimitExceeded"
    assert job.status.failed == 2
    pods = core.list_namespaced_pod(namespace, label_selector="job-name=broken").items
    assert len(pods) == 2
    for pod in pods:
        assert pod.status.phase == "Failed"
        term = pod.status.container_statuses[0].state.terminated
        assert term.exit_code == 1 and term.reason == "Error"
        assert "boom: bad input" in term.message  # FallbackToLogsOnError: the log tail


def test_scheduler_refuses_pod_beyond_gpu_capacity(k8s_api, namespace):
    core = client.CoreV1Api(k8s_api)
    if not gpu_nodes(core):
        pytest.skip(f"no node advertises {GPU}")
    core.create_namespaced_pod(namespace, {
        "metadata": {"name": "greedy"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "c", "image": "python:3.12-slim", "command": ["python", "-c", "pass"],
            "resources": {"requests": {GPU: "999"}, "limits": {GPU: "999"}}}]},
    })

    def unschedulable(p):
        return any(c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
                   for c in (p.status.conditions or []))
    pod = watch_until(core.list_namespaced_pod, unschedulable, timeout=60, namespace=namespace,
                      field_selector="metadata.name=greedy")
    cond = next(c for c in pod.status.conditions if c.type == "PodScheduled")
    assert f"Insufficient {GPU}" in cond.message


def _crd(group: str) -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget",
                      "listKind": "WidgetList"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object", "required": ["minReplicas", "maxReplicas"],
                            "properties": {"minReplicas": {"type": "integer", "minimum": 0},
                                           "maxReplicas": {"type": "integer"}},
                            "x-kubernetes-validations": [{
                                "rule": "self.minReplicas <= self.maxReplicas",
                                "message": "minReplicas must not exceed maxReplicas"}],
                        },
                        "status": {"type": "object", "properties": {
                            "phase": {"type": "string", "enum": ["Pending", "Running"]}}},
                    },
                }},
            }],
        },
    }


def test_crd_status_subresource_and_cel_validation(k8s_api, namespace):
    ext = client.ApiextensionsV1Api(k8s_api)
    co = client.CustomObjectsApi(k8s_api)
    group = f"g{uuid.uuid4().hex[:8]}.thresher-test.dev"
    ext.create_custom_resource_definition(_crd(group))
    try:
        watch_until(ext.list_custom_resource_definition,
                    lambda c: condition_true(c, "Established"), timeout=60,
                    field_selector=f"metadata.name=widgets.{group}")

        def create(name: str, lo: int, hi: int):
            return co.create_namespaced_custom_object(group, "v1", namespace, "widgets", {
                "apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": name},
                "spec": {"minReplicas": lo, "maxReplicas": hi}})

        # the API server may need a moment after Established before it serves the new type
        obj = wait_for(lambda: create("good", 1, 3), timeout=30, message="widgets to be served")

        with pytest.raises(ApiException) as bad:
            create("bad", 5, 2)
        assert bad.value.status == 422
        assert "minReplicas must not exceed maxReplicas" in bad.value.body

        with pytest.raises(ApiException) as neg:
            create("negative", -1, 2)
        assert neg.value.status == 422

        merge = {"_content_type": "application/merge-patch+json"}
        # status only changes through the status subresource ...
        co.patch_namespaced_custom_object(group, "v1", namespace, "widgets", "good",
                                          {"status": {"phase": "Running"}}, **merge)
        assert "status" not in co.get_namespaced_custom_object(group, "v1", namespace, "widgets", "good")
        after = co.patch_namespaced_custom_object_status(group, "v1", namespace, "widgets", "good",
                                                         {"status": {"phase": "Running"}}, **merge)
        assert after["status"]["phase"] == "Running"
        assert after["metadata"]["generation"] == obj["metadata"]["generation"]
        # ... and is validated too
        with pytest.raises(ApiException) as bad_status:
            co.patch_namespaced_custom_object_status(group, "v1", namespace, "widgets", "good",
                                                     {"status": {"phase": "Exploded"}}, **merge)
        assert bad_status.value.status == 422
    finally:
        ext.delete_custom_resource_definition(f"widgets.{group}")


def test_deleting_owner_garbage_collects_job_and_pods(k8s_api, namespace):
    core, batch = client.CoreV1Api(k8s_api), client.BatchV1Api(k8s_api)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    batch.create_namespaced_job(namespace, {
        "metadata": {"name": "owned", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]},
        "spec": {"completions": 2, "parallelism": 2, "backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "sleeper", "image": "python:3.12-slim",
                            "command": ["python", "-c", "import time; time.sleep(600)"]}]}}},
    })
    running: set[str] = set()

    def both_running(p):
        if p.status.phase == "Running":
            running.add(p.metadata.name)
        return len(running) == 2
    watch_until(core.list_namespaced_pod, both_running, timeout=60, namespace=namespace,
                label_selector="job-name=owned")

    core.delete_namespaced_config_map("owner", namespace)  # background propagation
    watch_until_gone(batch.list_namespaced_job, "owned", timeout=60, namespace=namespace)
    for name in running:
        watch_until_gone(core.list_namespaced_pod, name, timeout=60, namespace=namespace)
    assert core.list_namespaced_pod(namespace, label_selector="job-name=owned").items == []


def test_rbac_refuses_service_account_without_rights(k8s_cluster, k8s_api, namespace):
    core = client.CoreV1Api(k8s_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    token = core.create_namespaced_service_account_token(
        "nobody", namespace, {"spec": {"expirationSeconds": 600}}).status.token

    admin_cfg = k8s_api.configuration
    cfg = client.Configuration()
    cfg.host, cfg.ssl_ca_cert, cfg.verify_ssl = admin_cfg.host, admin_cfg.ssl_ca_cert, admin_cfg.verify_ssl
    cfg.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(cfg) as sa_api:
        sa_core = client.CoreV1Api(sa_api)
        review = client.AuthenticationV1Api(sa_api).create_self_subject_review({})
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:nobody"
        with pytest.raises(ApiException) as denied:
            sa_core.list_namespaced_pod(namespace)
        assert denied.value.status == 403
        with pytest.raises(ApiException) as denied_create:
            sa_core.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})
        assert denied_create.value.status == 403

        rbac = client.RbacAuthorizationV1Api(k8s_api)
        rbac.create_namespaced_role(namespace, {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]})
        rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": "nobody-reads-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": namespace}]})
        # the RBAC authorizer sees the new binding through an informer: allow it a moment
        wait_for(lambda: sa_core.list_namespaced_pod(namespace).items == [], timeout=15,
                 message="the RoleBinding to take effect")
        with pytest.raises(ApiException) as other_ns:
            sa_core.list_namespaced_pod("kube-system")
        assert other_ns.value.status == 403

    if k8s_cluster.local:  # Node authorization: the node identity cannot read arbitrary secrets
        from kubernetes import config
        node_api = config.new_client_from_config(
            config_file=str(k8s_cluster.control_plane.node_kubeconfig))
        with pytest.raises(ApiException) as node_denied:
            client.CoreV1Api(node_api).list_secret_for_all_namespaces()
        assert node_denied.value.status == 403
        node_api.close()
