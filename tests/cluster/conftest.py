"""pytest fixtures for the cluster tier (see README.md in this folder).

Session: one local control plane + node agent (or an existing cluster given by ``--kubeconfig`` /
``THRESHER_TEST_KUBECONFIG``). Per test: a fresh namespace.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from controlplane import ControlPlane  # noqa: E402
from k8s_helpers import tool, wait_for, watch_until, watch_until_gone  # noqa: E402,F401


def pytest_addoption(parser):
    """``--kubeconfig``. pytest reads options only from initial conftests, so it works for
    ``pytest tests/cluster``; for ``pytest tests`` use THRESHER_TEST_KUBECONFIG (or re-export this
    hook from tests/conftest.py)."""
    group = parser.getgroup("thresher cluster tier")
    with contextlib.suppress(ValueError):  # already added by another conftest
        group.addoption("--kubeconfig", action="store", default=None,
                        help="run cluster tests against this existing cluster (e.g. kind) instead "
                             "of starting a local control plane; env THRESHER_TEST_KUBECONFIG too")


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster: needs a Kubernetes API (local control plane or "
                                       "--kubeconfig)")


@dataclass
class Cluster:
    """What the session fixture yields."""
    kubeconfig: Path
    control_plane: ControlPlane | None  # None when using an existing cluster
    node_name: str | None = None  # the local node agent's node

    @property
    def local(self) -> bool:
        return self.control_plane is not None

    @property
    def pvc_root(self) -> Path | None:
        """Local folder holding PVC contents: ``<pvc_root>/<namespace>/<claimName>``."""
        return self.control_plane.pvc_root if self.control_plane else None

    @property
    def agent_root(self) -> Path | None:
        """Node agent data root: ``pods/<ns>_<pod>_<uid>/{logs,containers,volumes}``."""
        return self.control_plane.agent_root if self.control_plane else None


def _existing_kubeconfig(config) -> str | None:
    try:
        opt = config.getoption("kubeconfig")
    except ValueError:  # option not registered (conftest not an initial conftest)
        opt = None
    return opt or os.environ.get("THRESHER_TEST_KUBECONFIG") or None


@pytest.fixture(scope="session")
def k8s_cluster(request) -> Cluster:
    """The cluster for this session: local control plane + node agent, started once.

    Kept on the pytest config (not in this module), so other folders that re-export these
    fixtures share the same cluster; stopped when the session ends, after all fixtures.
    """
    config = request.config
    cluster = getattr(config, "_thresher_cluster", None)
    if cluster is not None:
        return cluster
    existing = _existing_kubeconfig(config)
    if existing:
        cluster = Cluster(kubeconfig=Path(existing).expanduser(), control_plane=None)
    else:
        cp = ControlPlane.start()
        keep = os.environ.get("THRESHER_TEST_KEEP_CLUSTER_DIR") == "1"
        config.add_cleanup(lambda: cp.stop(remove=not keep))
        cluster = Cluster(kubeconfig=cp.kubeconfig, control_plane=cp, node_name="thresher-node-0")
    config._thresher_cluster = cluster
    return cluster


@pytest.fixture(scope="session")
def kubeconfig(k8s_cluster: Cluster) -> Path:
    """Admin kubeconfig path of the session's cluster."""
    return k8s_cluster.kubeconfig


@pytest.fixture(scope="session")
def k8s_api(kubeconfig: Path):
    """A ``kubernetes.client.ApiClient`` with admin rights."""
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    yield api
    api.close()


def _ns_name(nodeid: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", nodeid.split("::")[-1].lower()).strip("-")[:40].strip("-")
    return f"t-{base}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(request, k8s_api) -> Iterator[str]:
    """A fresh namespace per test (deleted afterwards, in the background)."""
    from kubernetes import client

    core = client.CoreV1Api(k8s_api)
    name = _ns_name(request.node.nodeid)
    core.create_namespace({"metadata": {"name": name, "labels": {"thresher.dev/test": "true"}}})
    # pods are refused until the serviceaccount controller made "default"
    watch_until(core.list_namespaced_service_account, lambda o: True, timeout=60,
                namespace=name, field_selector="metadata.name=default")
    yield name
    try:
        core.delete_namespace(name, propagation_policy="Background")
    except client.ApiException as e:
        if e.status != 404:
            raise


@pytest.fixture
def pvc_folder(k8s_cluster: Cluster) -> Callable[[str, str], Path]:
    """``pvc_folder(namespace, claim)`` -> local folder the node agent mounts for that PVC.

    Write inputs there before starting pods; read outputs after. Only on the local cluster.
    """
    if not k8s_cluster.local:
        pytest.skip("PVC host folders exist only with the local node agent")

    def folder(namespace: str, claim: str) -> Path:
        p = k8s_cluster.pvc_root / namespace / claim
        p.mkdir(parents=True, exist_ok=True)
        return p
    return folder


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path) -> Callable[..., str]:
    """``kubectl("get", "pods", "-n", ns)`` -> stdout (raises on a non-zero exit)."""
    import subprocess

    exe = tool("kubectl")

    def run(*args: str, input: str | None = None) -> str:
        r = subprocess.run([exe, f"--kubeconfig={kubeconfig}", *args], input=input,
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r.stdout
    return run


def pytest_terminal_summary(terminalreporter, config):
    """One line of evidence in the CI log: start time and memory of the local control plane."""
    cluster = getattr(config, "_thresher_cluster", None)
    if cluster is None or cluster.control_plane is None:
        return
    cp = cluster.control_plane
    rss = cp.rss_kib()
    plane = sum(v for k, v in rss.items() if not k.startswith("node-agent"))
    terminalreporter.section("thresher local cluster")
    terminalreporter.write_line(
        f"kubernetes v{cp.version}: ready in {cp.timings.get('ready_s')}s "
        f"(apiserver ready {cp.timings.get('apiserver_ready_s')}s); RSS at session end: "
        + ", ".join(f"{k} {v // 1024} MiB" for k, v in rss.items())
        + f"; control plane {plane // 1024} MiB")
