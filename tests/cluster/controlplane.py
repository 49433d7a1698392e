"""Start and stop a local Kubernetes control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler) as plain processes, plus the test node agent.

The binaries come from ``tests/cluster/build.sh`` (cached in ``~/.cache/thresher-k8s/v<version>/bin``).
Every cluster gets a fresh temp directory and random free loopback ports, so parallel runs do
not collide.

Library use (what ``conftest.py`` does)::

    cp = ControlPlane.start()          # returns when /readyz is ok and the node is Ready
    cp.kubeconfig                      # admin kubeconfig path
    cp.stop()

Command line::

    python tests/cluster/controlplane.py up [--dir D] [--no-agent]   # foreground, Ctrl-C stops
    python tests/cluster/controlplane.py start [--dir D]              # detached, prints env lines
    python tests/cluster/controlplane.py stop --dir D
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_VERSION = os.environ.get("THRESHER_K8S_VERSION", "1.37.2").lstrip("v")
CACHE_ROOT = Path(os.environ.get("THRESHER_K8S_CACHE", Path.home() / ".cache" / "thresher-k8s"))
SERVICE_CIDR = "10.96.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
NODE_NAME = "thresher-node-0"
AGENT_GROUP = "thresher:test-node-agents"
STORAGE_CLASS = "standard"  # same name as kind's default class
PROVISIONER = "thresher.dev/local-path"

# Controllers run by kube-controller-manager. Each one gets its own ServiceAccount credentials
# (--use-service-account-credentials), which costs start-up time, so only what tests need is on;
# THRESHER_K8S_CONTROLLERS="*" turns on everything that is on by default.
CONTROLLERS = os.environ.get("THRESHER_K8S_CONTROLLERS", ",".join([
    "job-controller", "cronjob-controller", "garbage-collector-controller", "namespace-controller",
    "serviceaccount-controller", "serviceaccount-token-controller", "ttl-after-finished-controller",
    "pod-garbage-collector-controller", "clusterrole-aggregation-controller",
    "node-lifecycle-controller", "taint-eviction-controller",
    "root-ca-certificate-publisher-controller",  # kube-root-ca.crt, used by SA token volumes
    "persistentvolume-binder-controller", "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
    "deployment-controller", "replicaset-controller", "statefulset-controller",
    "daemonset-controller", "disruption-controller", "resourcequota-controller",
    "endpoints-controller", "endpointslice-controller",
]))

# Identities (token auth). The node agent is a real node identity (Node authorizer and
# NodeRestriction apply to it) plus a group that RBAC lets provision PersistentVolumes.
# Extra node identities (node-1 ... node-3) let tests start more agents (start_agent).
NODE_NAMES = [NODE_NAME] + [f"thresher-node-{i}" for i in range(1, 4)]
USERS = {
    "admin": ("admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", ""),
    "scheduler": ("system:kube-scheduler", ""),
    **{("node" if n == NODE_NAME else n): (f"system:node:{n}", f"system:nodes,{AGENT_GROUP}")
       for n in NODE_NAMES},
}


class ClusterError(RuntimeError):
    pass


def bin_dir(version: str = DEFAULT_VERSION) -> Path:
    return CACHE_ROOT / f"v{version}" / "bin"


def ensure_binaries(version: str = DEFAULT_VERSION) -> Path:
    """Return the bin dir, building (slow the first time) if anything is missing."""
    d = bin_dir(version)
    needed = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
    if all((d / b).exists() for b in needed) and (d.parent / "BUILD_OK").exists():
        return d
    subprocess.run(["bash", str(HERE / "build.sh"), version], check=True)
    return d


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def make_pki(pki: Path) -> None:
    """CA, apiserver serving cert, node-agent serving cert, service-account key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
             "-subj", "/CN=thresher-test-ca", cwd=pki)
    sans = ",".join([
        "IP:127.0.0.1", "IP:10.96.0.1", "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local",
    ])
    _openssl("req", "-x509", *ec, "-keyout", "apiserver.key", "-out", "apiserver.crt",
             "-CA", "ca.crt", "-CAkey", "ca.key", "-days", "3650", "-subj", "/CN=kube-apiserver",
             "-addext", f"subjectAltName={sans}", "-addext", "basicConstraints=critical,CA:FALSE",
             "-addext", "extendedKeyUsage=serverAuth", cwd=pki)
    _openssl("req", "-x509", *ec, "-keyout", "node.key", "-out", "node.crt",
             "-CA", "ca.crt", "-CAkey", "ca.key", "-days", "3650", "-subj", f"/CN={NODE_NAME}",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
             "-addext", "basicConstraints=critical,CA:FALSE",
             "-addext", "extendedKeyUsage=serverAuth", cwd=pki)
    # apiserver -> node agent (kubectl logs) client identity
    _openssl("req", "-x509", *ec, "-keyout", "apiserver-kubelet-client.key",
             "-out", "apiserver-kubelet-client.crt", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-days", "3650", "-subj", "/O=kubeadm:cluster-admins/CN=kube-apiserver-kubelet-client",
             "-addext", "basicConstraints=critical,CA:FALSE",
             "-addext", "extendedKeyUsage=clientAuth", cwd=pki)
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", "sa.key", cwd=pki)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def write_kubeconfig(path: Path, server: str, ca: Path, user: str, token: str) -> None:
    import base64

    ca_data = base64.b64encode(ca.read_bytes()).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "thresher-local",
                      "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "thresher-local",
                      "context": {"cluster": "thresher-local", "user": user}}],
        "current-context": "thresher-local",
    }
    path.write_text(json.dumps(doc, indent=1))  # JSON is valid YAML
    path.chmod(0o600)


@dataclass
class ControlPlane:
    dir: Path
    version: str = DEFAULT_VERSION
    ports: dict = field(default_factory=dict)
    procs: dict = field(default_factory=dict)
    owned_dir: bool = False
    timings: dict = field(default_factory=dict)

    # ----------------------------------------------------------------- paths
    @property
    def kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    @property
    def node_kubeconfig(self) -> Path:
        return self.dir / "node.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def agent_root(self) -> Path:
        return self.dir / "agent"

    @property
    def pvc_root(self) -> Path:
        return self.agent_root / "pvc"

    # ----------------------------------------------------------------- start
    @classmethod
    def start(cls, workdir: str | Path | None = None, version: str = DEFAULT_VERSION,
              agent: bool = True, agent_args: list[str] | None = None,
              timeout: float = 90.0) -> ControlPlane:
        owned = workdir is None
        d = Path(workdir or tempfile.mkdtemp(prefix="thresher-k8s-"))
        d.mkdir(parents=True, exist_ok=True)
        cp = cls(dir=d, version=version, owned_dir=owned)
        try:
            cp._start(agent, agent_args or [], timeout)
        except BaseException:
            cp.stop(remove=False)
            raise
        return cp

    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> None:
        with open(self.dir / "logs" / f"{name}.log", "ab") as log:
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, cwd=self.dir, env=env,
                                 start_new_session=True)
        self.procs[name] = p
        self._save_state()

    def _save_state(self) -> None:
        state = {"pids": {k: p.pid for k, p in self.procs.items()}, "ports": self.ports,
                 "kubeconfig": str(self.kubeconfig), "server": self.ports and self.server,
                 "agent_root": str(self.agent_root), "pvc_root": str(self.pvc_root),
                 "version": self.version}
        (self.dir / "state.json").write_text(json.dumps(state, indent=1))

    def _start(self, agent: bool, agent_args: list[str], timeout: float) -> None:
        t0 = self._t0 = time.monotonic()
        bins = ensure_binaries(self.version)
        (self.dir / "logs").mkdir(exist_ok=True)
        pki = self.dir / "pki"
        make_pki(pki)
        tokens = {k: os.urandom(16).hex() for k in USERS}
        with open(pki / "tokens.csv", "w") as f:
            for k, (user, groups) in USERS.items():
                line = f'{tokens[k]},{user},{user}'
                f.write(line + (f',"{groups}"' if groups else "") + "\n")
        self.ports = {n: free_port() for n in
                      ("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler", "agent")}
        self.timings["pki_s"] = round(time.monotonic() - t0, 2)

        etcd_url = f"http://127.0.0.1:{self.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{self.ports['etcd_peer']}"
        self._spawn("etcd", [
            str(bins / "etcd"), "--name=default", f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}", "--unsafe-no-fsync=true",
            "--quota-backend-bytes=2147483648", "--log-level=warn",
        ])
        api = self.ports["apiserver"]
        self._spawn("kube-apiserver", [
            str(bins / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api}",
            f"--cert-dir={pki}", f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={pki / 'tokens.csv'}",
            # front-proxy (aggregation layer) client CA; also keeps components' logs quiet
            f"--requestheader-client-ca-file={pki / 'ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=true", "--profiling=false", "--endpoint-reconciler-type=none",
            "--v=1",
        ])
        for k, (user, _) in USERS.items():
            write_kubeconfig(self.dir / f"{k}.kubeconfig", self.server, pki / "ca.crt", user,
                             tokens[k])
        # The other components start once the API server is live (they retry until it is
        # ready); bootstrap objects wait for /readyz (RBAC roles and priority classes exist).
        self._wait_http(f"{self.server}/livez", tokens["admin"], timeout, "kube-apiserver")
        self.timings["apiserver_live_s"] = round(time.monotonic() - t0, 2)

        cm = self.ports["controller_manager"]
        self._spawn("kube-controller-manager", [
            str(bins / "kube-controller-manager"),
            f"--kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1", f"--secure-port={cm}", f"--cert-dir={self.dir / 'kcm-certs'}",
            "--leader-elect=false", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--controllers={CONTROLLERS}", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--node-monitor-period=2s", "--profiling=false", "--v=1",
        ])
        sch = self.ports["scheduler"]
        self._spawn("kube-scheduler", [
            str(bins / "kube-scheduler"),
            f"--kubeconfig={self.dir / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={self.dir / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={self.dir / 'scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1", f"--secure-port={sch}", f"--cert-dir={self.dir / 'sched-certs'}",
            "--leader-elect=false", "--profiling=false", "--v=1",
        ])
        self._wait_http(f"{self.server}/readyz", tokens["admin"], timeout, "kube-apiserver")
        self.timings["apiserver_ready_s"] = round(time.monotonic() - t0, 2)
        self._bootstrap_objects()
        if agent:
            self.start_agent(agent_args)
        self._wait_http(f"https://127.0.0.1:{cm}/healthz", None, timeout, "kube-controller-manager")
        self.timings["kcm_healthy_s"] = round(time.monotonic() - t0, 2)
        self._wait_http(f"https://127.0.0.1:{sch}/healthz", None, timeout, "kube-scheduler")
        self.timings["scheduler_healthy_s"] = round(time.monotonic() - t0, 2)
        self._wait_cluster_usable(timeout, agent)
        self.timings["ready_s"] = round(time.monotonic() - t0, 2)
        self._save_state()

    def start_agent(self, extra_args: list[str] | None = None, node_name: str = NODE_NAME) -> str:
        """Start a node agent (``thresher-node-0`` .. ``-3``); returns its process name.

        Every agent shares ``pvc_root``; only the first one provisions PersistentVolumes.
        """
        if node_name not in NODE_NAMES:
            raise ValueError(f"node_name must be one of {NODE_NAMES} (they have credentials)")
        pki = self.dir / "pki"
        first = node_name == NODE_NAME
        proc = "node-agent" if first else f"node-agent-{node_name}"
        kubeconfig = self.node_kubeconfig if first else self.dir / f"{node_name}.kubeconfig"
        port = self.ports["agent"] if first else free_port()
        self._spawn(proc, [
            sys.executable, str(HERE / "node_agent.py"),
            f"--kubeconfig={kubeconfig}", f"--node-name={node_name}",
            f"--data-root={self.agent_root if first else self.dir / ('agent-' + node_name)}",
            f"--pvc-root={self.pvc_root}",
            *([f"--provisioner={PROVISIONER}"] if first else []),
            f"--serve-port={port}", f"--serve-cert={pki / 'node.crt'}",
            f"--serve-key={pki / 'node.key'}", f"--client-ca={pki / 'ca.crt'}",
            *(extra_args or []),
        ], env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return proc

    @property
    def admin_token(self) -> str:
        """Bearer token of the admin user (also inside ``admin.kubeconfig``)."""
        return json.loads(self.kubeconfig.read_text())["users"][0]["user"]["token"]

    def restart_process(self, name: str, sig: int = signal.SIGKILL, timeout: float = 60) -> None:
        """Kill one component (SIGKILL by default: a crash) and start it again with the same
        arguments; returns when it is healthy again (the API server: ``/readyz``)."""
        p = self.procs[name]
        argv, env = list(p.args), None
        if name.startswith("node-agent"):
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.stop_process(name, sig=sig)
        self._spawn(name, argv, env=env)
        health = {"kube-apiserver": (f"{self.server}/readyz", self.admin_token),
                  "kube-controller-manager":
                      (f"https://127.0.0.1:{self.ports['controller_manager']}/healthz", None),
                  "kube-scheduler": (f"https://127.0.0.1:{self.ports['scheduler']}/healthz", None)}
        if name in health:
            url, token = health[name]
            self._wait_http(url, token, timeout, name)

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        """Stop one component (e.g. ``"node-agent"`` to simulate a kubelet outage)."""
        p = self.procs.pop(name)
        if p.poll() is None:
            os.killpg(p.pid, sig)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self._save_state()

    def _check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                tail = (self.dir / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                raise ClusterError(f"{name} exited with {p.returncode}; log tail:\n{tail}")

    def _wait_http(self, url: str, token: str | None, timeout: float, what: str) -> None:
        ctx = ssl.create_default_context(cafile=str(self.dir / "pki" / "ca.crt"))
        if token is None:  # component health endpoints use self-signed certs
            ctx = ssl._create_unverified_context()  # noqa: S323 - loopback health probe
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=2) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}: {e.read()[-500:]!r}"
            except (OSError, urllib.error.URLError) as e:
                last = repr(e)
            time.sleep(0.1)
        raise ClusterError(f"{what} not ready at {url} after {timeout}s: {last}")

    def api_client(self):
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def _bootstrap_objects(self) -> None:
        """Default StorageClass served by the agent's provisioner, and RBAC for the agent group."""
        from kubernetes import client

        api = self.api_client()
        try:
            rbac = client.RbacAuthorizationV1Api(api)
            rbac.create_cluster_role({
                "metadata": {"name": "thresher:test-node-agent"},
                "rules": [
                    {"apiGroups": [""], "resources": ["persistentvolumes"],
                     "verbs": ["get", "list", "watch", "create", "delete"]},
                    {"apiGroups": [""], "resources": ["persistentvolumeclaims"],
                     "verbs": ["get", "list", "watch"]},
                    {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"],
                     "verbs": ["get", "list", "watch"]},
                    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
                ],
            })
            rbac.create_cluster_role_binding({
                "metadata": {"name": "thresher:test-node-agent"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "thresher:test-node-agent"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                              "name": AGENT_GROUP}],
            })
            client.StorageV1Api(api).create_storage_class({
                "metadata": {"name": STORAGE_CLASS, "annotations": {
                    "storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": PROVISIONER, "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
            })
        finally:
            api.close()

    def _wait_cluster_usable(self, timeout: float, agent: bool) -> None:
        """Controller-manager made the default ServiceAccount; the node is Ready and untainted."""
        from kubernetes import client, watch

        api = self.api_client()
        try:
            deadline = time.monotonic() + timeout
            core = client.CoreV1Api(api)

            def until(list_fn, pred, **kw):
                while time.monotonic() < deadline:
                    self._check_alive()
                    items = list_fn(**kw)
                    if any(pred(o) for o in items.items):
                        return
                    w = watch.Watch()
                    for ev in w.stream(list_fn, resource_version=items.metadata.resource_version,
                                       timeout_seconds=max(1, min(5, int(deadline - time.monotonic()))),
                                       **kw):
                        if ev["type"] in ("ADDED", "MODIFIED") and pred(ev["object"]):
                            w.stop()
                            return
                raise ClusterError("timed out waiting for the cluster to become usable")

            until(core.list_namespaced_service_account, lambda o: True, namespace="default",
                  field_selector="metadata.name=default")
            self.timings["default_sa_s"] = round(time.monotonic() - self._t0, 2)
            if agent:
                def node_ok(n):
                    ready = any(c.type == "Ready" and c.status == "True"
                                for c in (n.status.conditions or []))
                    return ready and not n.spec.taints
                until(core.list_node, node_ok, field_selector=f"metadata.name={NODE_NAME}")
        finally:
            api.close()

    # ----------------------------------------------------------------- stop
    def stop(self, remove: bool | None = None) -> None:
        core = ["kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]
        order = [n for n in self.procs if n.startswith("node-agent")] + core
        for name in order:
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                p.wait(timeout=15 if name.startswith("node-agent") else 10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if remove is None:
            remove = self.owned_dir
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    def rss_kib(self) -> dict:
        """Resident memory of each running process (KiB), from /proc."""
        out = {}
        for name, p in self.procs.items():
            try:
                for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[name] = int(line.split()[1])
            except FileNotFoundError:
                pass
        return out


def stop_dir(d: Path) -> None:
    """Stop a detached cluster from its state.json (pids are process-group leaders)."""
    state = json.loads((d / "state.json").read_text())
    core = ["kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]
    order = [n for n in state["pids"] if n.startswith("node-agent")] + core
    for name in order:
        pid = state["pids"].get(name)
        if not pid:
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(150):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("up", "start"):
        s = sub.add_parser(name)
        s.add_argument("--dir", help="cluster directory (default: a new temp dir)")
        s.add_argument("--version", default=DEFAULT_VERSION)
        s.add_argument("--no-agent", action="store_true")
        s.add_argument("--gpus", type=int, default=None, help="nvidia.com/gpu capacity of the node")
    s = sub.add_parser("stop")
    s.add_argument("--dir", required=True)
    args = ap.parse_args(argv)

    if args.cmd == "stop":
        stop_dir(Path(args.dir))
        return 0
    agent_args = [f"--gpus={args.gpus}"] if args.gpus is not None else []
    cp = ControlPlane.start(args.dir, version=args.version, agent=not args.no_agent,
                            agent_args=agent_args)
    print(f"export KUBECONFIG={cp.kubeconfig}")
    print(f"# cluster dir: {cp.dir}  (logs in {cp.dir / 'logs'}, PVC folders in {cp.pvc_root})")
    rss = cp.rss_kib()
    print(f"# RSS MiB: {', '.join(f'{k} {v / 1024:.0f}' for k, v in rss.items())}; "
          f"control plane total {sum(v for k, v in rss.items() if 'agent' not in k) / 1024:.0f}")
    print(f"# ready in {cp.timings['ready_s']}s; stop with: "
          f"python {Path(__file__)} stop --dir {cp.dir}", flush=True)
    if args.cmd == "start":
        return 0  # processes are in their own sessions and keep running
    try:
        def on_term(*_: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_term)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
