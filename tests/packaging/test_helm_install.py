"""The chart installed into a real cluster: the operator runs as the chart's Deployment, with the
chart's ServiceAccount and RBAC only, and the sample CurationJob runs to Succeeded through it.

On the local control plane (tests/cluster) the node agent runs the Deployment's pod as a local
process (`python -m curation_operator`, the image's command). It has no mount namespace, so the
in-cluster token path cannot be mapped: the pod gets a kubeconfig (through the chart's
`operator.extraEnv/extraVolumes`) holding a token *of the chart's ServiceAccount*, which is what
in-cluster credentials would be. On kind (scripts/kind-e2e.sh) the real image runs unchanged.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.packaging.conftest import CHART, ROOT, report

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SAMPLES = ROOT / "manifests" / "samples"
SAMPLE_DATA = ROOT / "examples" / "data" / "sample"
KUBECONFIG_MOUNT = "/var/run/thresher-test"  # the node agent maps it to a local folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sa_kubeconfig(admin_kubeconfig: Path, token: str, namespace: str) -> str:
    """A kubeconfig for the API server of `admin_kubeconfig`, authenticating with `token`."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = dict(admin["clusters"][0]["cluster"])
    if "certificate-authority" in cluster:
        ca = Path(cluster.pop("certificate-authority")).read_bytes()
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": namespace}}],
    })  # fmt: skip


class Helm:
    def __init__(self, binary: str, kubeconfig: Path, namespace: str) -> None:
        self.binary, self.kubeconfig, self.namespace = binary, kubeconfig, namespace

    def __call__(self, *args: str, stdin_values: dict[str, Any] | None = None, timeout: int = 300) -> str:
        cmd = [self.binary, f"--kubeconfig={self.kubeconfig}", "--namespace", self.namespace, *args]
        stdin = None
        if stdin_values is not None:
            cmd += ["--values", "-"]
            stdin = json.dumps(stdin_values)
        result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result.stdout


def image_values() -> list[str]:
    """On kind: the image that scripts/kind-e2e.sh built and loaded (THRESHER_TEST_IMAGE=repo:tag)."""
    image = os.environ.get("THRESHER_TEST_IMAGE")
    if not image:
        return []
    repository, _, tag = image.rpartition(":")
    return [
        "--set",
        "image.registry=",
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
    ]


def place_sample_data(k8s_cluster, namespace: str, kubectl) -> Path | None:
    """Make the PVC `thresher-data` hold examples/data/sample; return its local folder if any."""
    if k8s_cluster.local:
        folder = k8s_cluster.pvc_root / namespace / "thresher-data"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copytree(SAMPLE_DATA, folder / "examples" / "data" / "sample")
        kubectl("apply", "-n", namespace, "-f", str(SAMPLES / "pvc.yaml"))
        return folder
    host_path = os.environ.get("THRESHER_TEST_SAMPLE_HOSTPATH")  # kind: see kind-config.yaml
    if not host_path:
        pytest.skip("on an existing cluster, set THRESHER_TEST_SAMPLE_HOSTPATH (scripts/kind-e2e.sh does)")
    pv_name = f"thresher-data-{namespace}"[:63]
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": host_path, "type": "Directory"},
                 "claimRef": {"namespace": namespace, "name": "thresher-data"}},
    }))  # fmt: skip
    pvc = yaml.safe_load((SAMPLES / "pvc.yaml").read_text())
    pvc["spec"].update({"storageClassName": "", "volumeName": pv_name})
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pvc))
    return None


def test_chart_installs_and_runs_the_sample_curation_job_to_succeeded(
    k8s_cluster, kubeconfig, k8s_api, kubectl, namespace, helm
):
    from k8s_helpers import wait_for, watch_until
    from kubernetes import client

    core, apps = client.CoreV1Api(k8s_api), client.AppsV1Api(k8s_api)
    release = f"tp-{uuid.uuid4().hex[:6]}"
    fullname = f"{release}-thresher"
    operator_sa, worker_sa = f"{fullname}-operator", f"{fullname}-worker"
    helm_cli = Helm(helm, kubeconfig, namespace)
    metrics_port = free_port()
    values = [
        "--set", "operator.watch.mode=namespaces",  # only this test's namespace: other tests stay untouched
        "--set", f"operator.metricsPort={metrics_port}", "--set", f"operator.healthPort={free_port()}",
        "--set", "operator.reconcileIntervalSeconds=2",
        "--set", "worker.metricsPort=0",  # ranks share one host here: no port to fight over
        *image_values(),
    ]  # fmt: skip
    extra: dict[str, Any] = {}  # values given on stdin: the kubeconfig plumbing on the local cluster
    if k8s_cluster.local:
        extra = {"operator": {
            "extraEnv": [
                {"name": "KUBECONFIG", "value": f"{KUBECONFIG_MOUNT}/config"},
                # step pods are local processes too; the shim maps the spec's paths to their folders
                {"name": "THRESHER_WORKER_COMMAND", "value": "thresher"},
            ],
            "extraVolumes": [{"name": "sa-kubeconfig", "secret": {"secretName": "operator-kubeconfig"}}],
            "extraVolumeMounts": [{"name": "sa-kubeconfig", "mountPath": KUBECONFIG_MOUNT, "readOnly": True}],
        }}  # fmt: skip

    # 1. install with the operator scaled to 0, hand its ServiceAccount's token to the pod, scale to 1
    #    (a `helm upgrade`, which also re-applies the CRD template).
    install = [
        "install", release, str(CHART), "--take-ownership", "--wait", "--timeout", "120s",
        "--set", "operator.replicas=0", *values,
    ]  # fmt: skip
    helm_cli(*install, stdin_values=extra)
    report(f"helm install {release} -n {namespace}: deployed")
    try:
        if k8s_cluster.local:
            token = core.create_namespaced_service_account_token(
                operator_sa, namespace, {"spec": {"expirationSeconds": 3600}}
            ).status.token
            core.create_namespaced_secret(namespace, {
                "metadata": {"name": "operator-kubeconfig"},
                "stringData": {"config": sa_kubeconfig(kubeconfig, token, namespace)},
            })  # fmt: skip
        upgrade = ["upgrade", release, str(CHART), "--wait", "--timeout", "180s", *values]
        helm_cli(*upgrade, stdin_values=extra)
        deployment = apps.read_namespaced_deployment(f"{fullname}-operator", namespace)
        assert deployment.status.ready_replicas == 1
        pods = core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=operator"
        ).items
        assert [p.spec.service_account_name for p in pods] == [operator_sa]
        report(f"operator Deployment ready: pod {pods[0].metadata.name} as ServiceAccount {operator_sa}")

        # 2. least privilege: the operator's identity can do its work and nothing more
        who = f"--as=system:serviceaccount:{namespace}:{operator_sa}"
        for verb, resource, allowed in [
            ("create", "jobs.batch", "yes"), ("watch", "curationjobs.thresher.dev", "yes"),
            ("get", "secrets", "no"), ("create", "pods", "no"), ("delete", "pods", "no"),
            ("delete", "jobs.batch", "yes"),
            ("list", "curationjobs.thresher.dev", "no"),  # outside the watched namespace
        ]:  # fmt: skip
            ns = "default" if resource.startswith("curationjobs") and allowed == "no" else namespace
            answer = can_i(kubeconfig, verb, resource, ns, who)
            assert answer == allowed, (
                f"{operator_sa} can {verb} {resource} in {ns}: {answer}, expected {allowed}"
            )

        report(
            f"least privilege: {operator_sa} runs steps here; no Secrets, no Pod writes, no other namespaces"
        )

        # 3. the sample, as a user would run it (NOTES.txt)
        local_data = place_sample_data(k8s_cluster, namespace, kubectl)
        kubectl("apply", "-n", namespace, "-f", str(SAMPLES / "quickstart.yaml"))
        name = yaml.safe_load((SAMPLES / "quickstart.yaml").read_text())["metadata"]["name"]
        batch = client.BatchV1Api(k8s_api)
        first_job = watch_until(batch.list_namespaced_job, lambda j: True, timeout=120, namespace=namespace)
        assert first_job.spec.template.spec.service_account_name == worker_sa
        finished = watch_until(
            client.CustomObjectsApi(k8s_api).list_namespaced_custom_object,
            lambda cj: (cj.get("status") or {}).get("phase") in ("Succeeded", "Failed"),
            timeout=480, group="thresher.dev", version="v1alpha1", namespace=namespace, plural="curationjobs",
        )  # fmt: skip
        status = finished["status"]
        assert status["phase"] == "Succeeded", json.dumps(status, indent=1)[:4000]
        assert status["docsOut"] > 0 and status["docsRemoved"] > 0
        # each step's Job is deleted once its counts are in the status: none is left behind
        wait_for(
            lambda: not batch.list_namespaced_job(namespace).items, timeout=60, message="step Jobs deleted"
        )
        if local_data is not None:
            assert (local_data / "out" / "quickstart" / "summary.json").exists()
        report(
            f"sample CurationJob {name}: Succeeded through the chart's operator "
            f"({status['stepsTotal']} steps, {status['docsIn']} docs in, {status['docsOut']} kept)"
        )

        # 4. the operator's metrics, as Prometheus would scrape them through the metrics Service
        if k8s_cluster.local:
            text = wait_for(
                lambda: scrape(metrics_port, 'thresher_curationjobs{phase="Succeeded"} 1.0'), timeout=30
            )
            assert "thresher_step_duration_seconds_count" in text
            report(f'operator /metrics on :{metrics_port}: thresher_curationjobs{{phase="Succeeded"}} 1.0')
        service = core.read_namespaced_service(f"{fullname}-operator-metrics", namespace)
        assert service.spec.selector == deployment.spec.selector.match_labels
    finally:
        helm_cli("uninstall", release, "--wait", "--timeout", "120s")
    # the CRD survives `helm uninstall` (helm.sh/resource-policy: keep): CurationJobs are not lost
    crd = client.ApiextensionsV1Api(k8s_api).read_custom_resource_definition("curationjobs.thresher.dev")
    assert crd.metadata.annotations.get("helm.sh/resource-policy") == "keep"
    report("helm uninstall: CRD kept")


def can_i(kubeconfig: Path, verb: str, resource: str, namespace: str, who: str) -> str:
    from k8s_helpers import tool

    cmd = [
        tool("kubectl"),
        f"--kubeconfig={kubeconfig}",
        "auth",
        "can-i",
        verb,
        resource,
        "-n",
        namespace,
        who,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()  # exit 1 means "no"


def scrape(port: int, needle: str) -> str | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return text if needle in text else None
