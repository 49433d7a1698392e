"""Helpers and fixtures for the operator's cluster-tier tests (tests/cluster/test_operator_*.py).

The operator runs as a separate process (`python -m curation_operator`) with the token of the
`thresher-operator` ServiceAccount bound to manifests/rbac — never as admin — so a missing
permission fails a test. It watches only the test's namespace, so tests do not see each other.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "manifests" / "crd" / "thresher.dev_curationjobs.yaml"
RBAC_DIR = ROOT / "manifests" / "rbac"
SAMPLE = ROOT / "examples" / "data" / "sample"
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
OPERATOR_NAMESPACE = "thresher-system"
DATA_CLAIM = "thresher-data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def operator_kubeconfig(admin_kubeconfig: Path, token: str, target: Path) -> Path:
    """A kubeconfig for the same cluster as `admin_kubeconfig`, authenticating with `token`."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    context_name = admin.get("current-context")
    context = next(c for c in admin["contexts"] if c["name"] == context_name)["context"]
    cluster = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "thresher-operator", "user": {"token": token}}],
        "contexts": [
            {"name": "operator", "context": {"cluster": cluster["name"], "user": "thresher-operator"}}
        ],
        "current-context": "operator",
    }
    target.write_text(json.dumps(doc))
    target.chmod(0o600)
    return target


@dataclass
class OperatorInstall:
    kubeconfig: Path  # the operator ServiceAccount's credentials
    local: bool  # the local control plane (pods are local processes) or a real cluster (kind)


@pytest.fixture(scope="session")
def operator_install(k8s_cluster: Any, kubectl: Callable[..., str], tmp_path_factory: Any) -> OperatorInstall:
    """CRD + least-privilege RBAC from manifests/, and a kubeconfig with the operator SA's token."""
    from k8s_helpers import wait_for  # tests/cluster is on sys.path (its conftest)

    kubectl("apply", "-f", str(CRD_FILE))
    # `kubectl wait` fails at once while the new CRD has no conditions yet: retry it
    wait_for(
        lambda: kubectl(
            "wait", "--for=condition=Established", "crd/curationjobs.thresher.dev", "--timeout=30s"
        ),
        timeout=60,
        message="the CurationJob CRD to be established",
    )
    kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}),
    )
    kubectl("apply", "-k", str(RBAC_DIR))
    token = kubectl("create", "token", "thresher-operator", "-n", OPERATOR_NAMESPACE, "--duration=6h").strip()
    path = operator_kubeconfig(
        Path(k8s_cluster.kubeconfig), token, tmp_path_factory.mktemp("operator") / "kubeconfig"
    )
    return OperatorInstall(kubeconfig=path, local=k8s_cluster.local)


@dataclass
class OperatorProcess:
    """`python -m curation_operator` as a child process, watching one namespace."""

    install: OperatorInstall
    namespace: str
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    metrics_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        worker = "thresher"  # the node agent puts the test venv's bin/ first on PATH
        env = {
            **os.environ,
            "KUBECONFIG": str(self.install.kubeconfig),
            "THRESHER_NAMESPACES": self.namespace,
            "THRESHER_METRICS_PORT": str(self.metrics_port),
            "THRESHER_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.health_port}/healthz",
            "THRESHER_RECONCILE_INTERVAL": "2",
            "THRESHER_WORKER_COMMAND": worker,
            "THRESHER_WORKER_METRICS_PORT": "0",  # many ranks share the host's ports here
            "PYTHONUNBUFFERED": "1",
        }
        if os.environ.get("THRESHER_TEST_WORKER_IMAGE"):
            env["THRESHER_WORKER_IMAGE"] = os.environ["THRESHER_TEST_WORKER_IMAGE"]
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "curation_operator", "--verbose"],
                cwd=ROOT,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"operator not healthy after {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as when a node dies or the OOM killer strikes."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def memory_kib(self) -> dict[str, int]:
        """Resident (VmRSS) and peak resident (VmHWM) memory of the operator process."""
        assert self.proc is not None
        out: dict[str, int] = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
        return out

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


@pytest.fixture
def operator_factory(
    operator_install: OperatorInstall, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """`operator_factory(**env)` starts an operator for the test's namespace; all are stopped after."""
    started: list[OperatorProcess] = []

    def start(**extra_env: str) -> OperatorProcess:
        op = OperatorProcess(
            install=operator_install,
            namespace=namespace,
            log_path=tmp_path / "operator.log",
            extra_env=extra_env,
        )
        started.append(op)
        return op.start()

    yield start
    for op in started:
        op.stop()
    if started and os.environ.get("THRESHER_TEST_SHOW_OPERATOR_LOG"):
        print(started[-1].log_tail())


@pytest.fixture
def operator(operator_factory: Callable[..., OperatorProcess]) -> OperatorProcess:
    return operator_factory()


# --------------------------------------------------------------------------- data


@pytest.fixture
def data_volume(namespace: str, kubectl: Callable[..., str], pvc_folder: Callable[[str, str], Path]) -> Path:
    """A PVC `thresher-data` holding the sample at examples/data/sample; returns its local folder."""
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": DATA_CLAIM, "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    kubectl("apply", "-f", "-", input=json.dumps(claim))
    folder = pvc_folder(namespace, DATA_CLAIM)
    shutil.copytree(SAMPLE, folder / "examples" / "data" / "sample")
    return folder


def quickstart_document(name: str = "quickstart", **spec_overrides: Any) -> dict[str, Any]:
    doc = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    doc["metadata"]["name"] = name
    doc["spec"].update(spec_overrides)
    return dict(doc)


def dataset_content(folder: Path) -> list[tuple[str, list[str], list[str]]]:
    """(shard, ids, texts) per shard, in shard order: what "identical output" compares."""
    out = []
    for shard in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(shard)
        id_column = "id" if "id" in table.column_names else "doc_id"  # output keeps the input's id field
        out.append((shard.name, table.column(id_column).to_pylist(), table.column("text").to_pylist()))
    return out


_LOCAL_RUNS: dict[str, tuple[Path, float]] = {}


def local_quickstart(tmp_root: Path) -> tuple[Path, float]:
    """Output folder and wall time of `thresher run examples/quickstart.yaml` (once per session)."""
    if "quickstart" not in _LOCAL_RUNS:
        out = tmp_root / "local-quickstart"
        started = time.monotonic()
        subprocess.run(
            [
                str(Path(sys.executable).parent / "thresher"),
                "run",
                str(QUICKSTART),
                "--output",
                str(out),
                "--quiet",
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=600,
        )
        _LOCAL_RUNS["quickstart"] = (out, time.monotonic() - started)
    return _LOCAL_RUNS["quickstart"]


@pytest.fixture(scope="session")
def local_reference(tmp_path_factory: Any) -> tuple[Path, float]:
    return local_quickstart(tmp_path_factory.mktemp("reference"))


# --------------------------------------------------------------------------- API helpers


def wait_succeeded(
    kubectl: Callable[..., str], namespace: str, name: str = "quickstart", timeout: float = 600
) -> None:
    """`kubectl wait --for=condition=Succeeded`, repeated (one kubectl call is capped at 120 s)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            kubectl(
                "wait", "-n", namespace, "--for=condition=Succeeded", f"curationjob/{name}", "--timeout=100s"
            )
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def custom_api(k8s_api: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(k8s_api)


def get_cj(k8s_api: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict(
        custom_api(k8s_api).get_namespaced_custom_object(
            "thresher.dev", "v1alpha1", namespace, "curationjobs", name
        )
    )


def cj_condition(cj: dict[str, Any], kind: str) -> dict[str, Any]:
    return {c["type"]: c for c in (cj.get("status") or {}).get("conditions") or []}.get(kind, {})


def wait_for_cj(
    k8s_api: Any, namespace: str, name: str, predicate: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    from k8s_helpers import watch_until  # tests/cluster is on sys.path (its conftest)

    api = custom_api(k8s_api)

    def list_fn(**kw: Any) -> Any:
        return api.list_namespaced_custom_object("thresher.dev", "v1alpha1", namespace, "curationjobs", **kw)

    return dict(
        watch_until(list_fn, lambda o: o["metadata"]["name"] == name and predicate(o), timeout=timeout)
    )


def events_of(k8s_api: Any, namespace: str, name: str) -> list[dict[str, str]]:
    from kubernetes import client

    items = (
        client.CoreV1Api(k8s_api)
        .list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        .items
    )
    return [{"type": e.type, "reason": e.reason, "message": e.message or ""} for e in items]


def step_jobs(k8s_api: Any, namespace: str) -> list[Any]:
    from kubernetes import client

    return list(
        client.BatchV1Api(k8s_api)
        .list_namespaced_job(namespace, label_selector="app.kubernetes.io/managed-by=thresher-operator")
        .items
    )


def pods_of(k8s_api: Any, namespace: str) -> list[Any]:
    from kubernetes import client

    return list(
        client.CoreV1Api(k8s_api)
        .list_namespaced_pod(namespace, label_selector="app.kubernetes.io/managed-by=thresher-operator")
        .items
    )


def job_uids_by_name(k8s_api: Any, namespace: str) -> dict[str, set[str]]:
    """Every Job that ever existed in the namespace (name -> uids), from the Job controller's events.

    Step Jobs are deleted once their counts are in the status, so the Jobs listed at the end say
    nothing about twins; the events still name every Job the controller saw."""
    from kubernetes import client

    items = (
        client.CoreV1Api(k8s_api)
        .list_namespaced_event(namespace, field_selector="involvedObject.kind=Job")
        .items
    )
    out: dict[str, set[str]] = {}
    for event in items:
        out.setdefault(event.involved_object.name, set()).add(event.involved_object.uid)
    return out


def assert_one_job_per_step(k8s_api: Any, namespace: str, status: dict[str, Any]) -> None:
    """Each step ran as exactly one Job (no twin after a restart), and none is left behind."""
    from k8s_helpers import wait_for  # tests/cluster is on sys.path (its conftest)

    wait_for(lambda: not step_jobs(k8s_api, namespace), timeout=60, message="the step Jobs to be deleted")
    uids = job_uids_by_name(k8s_api, namespace)
    assert sorted(uids) == sorted(s["job"] for s in status["steps"]), "one Job per step"
    twins = {name: ids for name, ids in uids.items() if len(ids) != 1}
    assert not twins, f"Jobs created more than once: {twins}"
