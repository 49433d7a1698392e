"""The agent process: Node registration, Lease, the pod watch, and the command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from .extras import Provisioner, serve_logs
from .podspec import LOCAL_IP, now, now_micro
from .runner import PodRunner

log = logging.getLogger("thresher.node_agent")


class _Lost:
    """Placeholder for a pod that an earlier agent process had started."""
    finished = True
    deleting = True


class NodeAgent:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.node = args.node_name
        self.data_root = Path(args.data_root).resolve()
        self.pvc_root = Path(args.pvc_root).resolve() if args.pvc_root else self.data_root / "pvc"
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.pvc_root.mkdir(parents=True, exist_ok=True)
        self.python_bin = str(Path(sys.executable).parent)
        parent = Path(sys.executable).parent.parent
        self.venv = os.environ.get("VIRTUAL_ENV") or (
            str(parent) if (parent / "pyvenv.cfg").exists() else "")
        self.default_command = shlex.split(args.default_command) if args.default_command else []
        self.backoff, self.max_backoff = args.restart_backoff, args.max_restart_backoff
        self.api = config.new_client_from_config(config_file=args.kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.coord = client.CoordinationV1Api(self.api)
        host = urllib.parse.urlparse(self.api.configuration.host)
        self.api_host, self.api_port = host.hostname or LOCAL_IP, str(host.port or 443)
        self.capacity = {"cpu": str(args.cpu), "memory": args.memory, "pods": str(args.pods),
                         "ephemeral-storage": args.ephemeral_storage}
        if args.gpus:
            self.capacity[args.gpu_resource] = str(args.gpus)
        self.allocatable = dict(self.capacity)
        self.runners: dict[str, PodRunner | _Lost] = {}
        self.by_name: dict[tuple[str, str], PodRunner] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.started_at = now()
        self.boot_id = os.urandom(8).hex()
        self.version = "v0.0.0"
        self.node_uid = ""

    # ------------------------------------------------------------------ node and lease
    def _node_status(self) -> dict:
        ts = now()

        def cond(ctype: str, status: str, reason: str, msg: str) -> dict:
            return {"type": ctype, "status": status, "reason": reason, "message": msg,
                    "lastHeartbeatTime": ts, "lastTransitionTime": self.started_at}
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        return {
            "capacity": self.capacity, "allocatable": self.allocatable,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                cond("Ready", "True", "KubeletReady", "thresher test node agent is ready"),
            ],
            "addresses": [{"type": "InternalIP", "address": LOCAL_IP},
                          {"type": "Hostname", "address": self.node}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.args.serve_port or 0}},
            "nodeInfo": {
                "machineID": "thresher", "systemUUID": "thresher", "bootID": self.boot_id,
                "kernelVersion": platform.release(), "osImage": "thresher test node agent",
                "containerRuntimeVersion": "thresher-agent://1", "kubeletVersion": self.version,
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": arch,
            },
        }

    def register(self) -> None:
        with contextlib.suppress(Exception):  # cosmetic only
            self.version = client.VersionApi(self.api).get_code().git_version
        labels = {"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", "thresher.dev/test-node": "true"}
        labels.update(kv.split("=", 1) for kv in self.args.label or [])
        body: dict = {"apiVersion": "v1", "kind": "Node",
                      "metadata": {"name": self.node, "labels": labels}, "spec": {}}
        if self.args.taint:  # key=value:Effect
            body["spec"]["taints"] = [
                {"key": kv.partition("=")[0], "value": kv.partition("=")[2], "effect": effect}
                for kv, _, effect in (t.rpartition(":") for t in self.args.taint)]
        try:
            self.core.create_node(body)
        except ApiException as e:
            if e.status != 409:
                raise
            self.core.patch_node(self.node, {"metadata": {"labels": labels}})
        self.node_uid = self.core.read_node(self.node).metadata.uid
        self.core.patch_node_status(self.node, {"status": self._node_status()})
        log.info("registered node %s %s", self.node, self.capacity)

    def renew_lease(self) -> None:
        spec = {"holderIdentity": self.node, "leaseDurationSeconds": 40, "renewTime": now_micro()}
        try:
            self.coord.patch_namespaced_lease(self.node, "kube-node-lease", {"spec": spec})
        except ApiException as e:
            if e.status != 404:
                raise
            self.coord.create_namespaced_lease("kube-node-lease", {
                "metadata": {"name": self.node, "namespace": "kube-node-lease",
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                  "name": self.node, "uid": self.node_uid}]},
                "spec": spec})

    def heartbeat_loop(self) -> None:
        last_status = time.monotonic()
        while not self.stopping.wait(self.args.lease_interval):
            try:
                self.renew_lease()
                if time.monotonic() - last_status > 50:
                    self.core.patch_node_status(self.node, {"status": self._node_status()})
                    last_status = time.monotonic()
            except Exception as e:  # noqa: BLE001
                log.warning("heartbeat failed: %r", e)

    # ------------------------------------------------------------------ pods
    def find_runner(self, ns: str, name: str) -> PodRunner | None:
        with self.lock:
            return self.by_name.get((ns, name))

    def final_delete(self, ns: str, name: str, uid: str) -> None:
        """What a kubelet does once a deleted pod's containers are gone: delete with grace 0."""
        try:
            self.core.delete_namespaced_pod(
                name, ns, body={"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
            log.info("deleted pod %s/%s", ns, name)
        except ApiException as e:
            if e.status not in (404, 409):
                log.warning("final delete of %s/%s: %s %s", ns, name, e.status, e.body)

    def _background(self, fn, *args) -> None:
        threading.Thread(target=fn, args=args, daemon=True).start()

    def on_pod(self, etype: str, pod: dict) -> None:
        md = pod["metadata"]
        uid, key = md["uid"], (md["namespace"], md["name"])
        with self.lock:
            runner = self.runners.get(uid)
        if etype == "DELETED":
            if isinstance(runner, PodRunner) and not runner.finished:
                runner.abort()
            with self.lock:
                self.runners.pop(uid, None)
                if self.by_name.get(key) is runner:
                    self.by_name.pop(key, None)
            return
        deleting = md.get("deletionTimestamp") is not None
        status = pod.get("status") or {}
        if runner is None:
            if deleting or status.get("phase") == "Running" or status.get("containerStatuses"):
                if status.get("phase") not in ("Succeeded", "Failed"):
                    # never started here, or started by an earlier agent process: report it lost
                    self._background(self._report_lost, pod)
                elif deleting:
                    self._background(self.final_delete, *key, uid)
                with self.lock:
                    self.runners[uid] = _Lost()
                return
            if status.get("phase") in ("Succeeded", "Failed"):
                return
            runner = PodRunner(self, pod)
            with self.lock:
                self.runners[uid] = runner
                self.by_name[key] = runner
            runner.start()
        elif deleting and isinstance(runner, PodRunner) and not runner.deleting:
            runner.deleting = True
            if runner.finished:
                self._background(self.final_delete, *key, uid)
            else:
                runner.request_delete(int(md.get("deletionGracePeriodSeconds") or 0))
        elif deleting and isinstance(runner, _Lost):
            self._background(self.final_delete, *key, uid)

    def _report_lost(self, pod: dict) -> None:
        md = pod["metadata"]
        statuses = [{"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": False,
                     "restartCount": 0, "state": {"terminated": {
                         "exitCode": 137, "reason": "ContainerStatusUnknown", "finishedAt": now(),
                         "message": "the container is not known to this node agent"}}}
                    for c in pod["spec"]["containers"]]
        try:
            self.core.patch_namespaced_pod_status(md["name"], md["namespace"], {
                "status": {"phase": "Failed", "containerStatuses": statuses}})
        except ApiException as e:
            log.warning("reporting lost pod %s/%s: %s", md["namespace"], md["name"], e.status)
        if md.get("deletionTimestamp"):
            self.final_delete(md["namespace"], md["name"], md["uid"])

    def _relist(self, selector: str) -> str:
        resp = self.core.list_pod_for_all_namespaces(field_selector=selector, _preload_content=False)
        lst = json.loads(resp.data)
        seen = {p["metadata"]["uid"] for p in lst["items"]}
        for pod in lst["items"]:
            self.on_pod("ADDED", pod)
        with self.lock:
            gone = [(u, r) for u, r in self.runners.items() if u not in seen]
            for u, _ in gone:
                self.runners.pop(u, None)
        for _, r in gone:  # deleted while we were not watching
            if isinstance(r, PodRunner) and not r.finished:
                r.abort()
        return lst["metadata"]["resourceVersion"]

    def pods_loop(self) -> None:
        selector = f"spec.nodeName={self.node}"  # the Node authorizer insists on this selector
        while not self.stopping.is_set():
            try:
                rv = self._relist(selector)
                w = watch.Watch()
                for ev in w.stream(self.core.list_pod_for_all_namespaces, field_selector=selector,
                                   resource_version=rv, timeout_seconds=300,
                                   allow_watch_bookmarks=True):
                    if self.stopping.is_set() or ev["type"] == "ERROR":
                        break
                    if ev["type"] != "BOOKMARK":
                        self.on_pod(ev["type"], ev["raw_object"])
                w.stop()
            except Exception as e:  # noqa: BLE001
                if self.stopping.is_set():
                    break
                log.warning("pod watch failed, relisting: %r", e)
                self.stopping.wait(1.0)

    # ------------------------------------------------------------------ main
    def run(self) -> None:
        self.register()
        self.renew_lease()
        if self.args.serve_port and self.args.serve_cert:
            serve_logs(self, self.args.serve_port, self.args.serve_cert, self.args.serve_key,
                       self.args.client_ca)
        threading.Thread(target=self.heartbeat_loop, daemon=True, name="heartbeat").start()
        if self.args.provisioner:
            threading.Thread(target=Provisioner(self, self.args.provisioner).loop, daemon=True,
                             name="provisioner").start()
        self.pods_loop()

    def shutdown(self) -> None:
        """Stop watching and kill every local container process (no API calls)."""
        self.stopping.set()
        with self.lock:
            runners = [r for r in self.runners.values() if isinstance(r, PodRunner)]
        for r in runners:
            r._kill(signal.SIGTERM)
        end = time.monotonic() + 3
        for r in runners:
            for p in r.procs.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=max(0.0, end - time.monotonic()))
            r._kill(signal.SIGKILL)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from . import __doc__ as doc

    ap = argparse.ArgumentParser(prog="node_agent", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kubeconfig", required=True,
                    help="a node identity (system:node:<name>, group system:nodes) or admin")
    ap.add_argument("--node-name", default="thresher-node-0")
    ap.add_argument("--data-root", required=True, help="pod sandboxes, logs, emptyDirs")
    ap.add_argument("--pvc-root", help="PVC folders: <pvc-root>/<namespace>/<claimName> "
                                        "(default <data-root>/pvc); share it between agents")
    ap.add_argument("--cpu", default="8")
    ap.add_argument("--memory", default="32Gi")
    ap.add_argument("--pods", type=int, default=110)
    ap.add_argument("--ephemeral-storage", default="100Gi")
    ap.add_argument("--gpus", type=int, default=4, help="extended resource capacity (0: none)")
    ap.add_argument("--gpu-resource", default="nvidia.com/gpu")
    ap.add_argument("--label", action="append", help="extra node label k=v (repeatable)")
    ap.add_argument("--taint", action="append", help="node taint key=value:Effect (repeatable)")
    ap.add_argument("--provisioner", default="",
                    help="act as the dynamic provisioner with this name (hostPath PVs in pvc-root)")
    ap.add_argument("--default-command", default="",
                    help="command for containers that have none (images are never pulled)")
    ap.add_argument("--restart-backoff", type=float, default=1.0,
                    help="first container restart delay (s), doubled per restart")
    ap.add_argument("--max-restart-backoff", type=float, default=20.0)
    ap.add_argument("--lease-interval", type=float, default=10.0)
    ap.add_argument("--serve-port", type=int, default=0, help="HTTPS port for kubectl logs")
    ap.add_argument("--serve-cert")
    ap.add_argument("--serve-key")
    ap.add_argument("--client-ca", help="require API-server client certs signed by this CA")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    for noisy in ("urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    agent = NodeAgent(args)

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        agent.run()
    except SystemExit:
        pass
    finally:
        agent.shutdown()
    return 0
