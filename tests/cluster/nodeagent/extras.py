"""Optional agent services: a local-path PV provisioner and the kubelet log endpoint."""

from __future__ import annotations

import http.server
import logging
import ssl
import threading
import urllib.parse
from typing import TYPE_CHECKING

from kubernetes import watch
from kubernetes.client.rest import ApiException

if TYPE_CHECKING:
    from .node import NodeAgent

log = logging.getLogger("thresher.node_agent")
PROVISIONER_ANNOTATIONS = ("volume.kubernetes.io/storage-provisioner",
                           "volume.beta.kubernetes.io/storage-provisioner")


class Provisioner:
    """Binds PVCs of a StorageClass whose provisioner is ours to hostPath PVs on
    ``<pvc_root>/<namespace>/<claim>`` (the folder the agent mounts for that claim anyway).
    The PV is deleted with its claim; the folder is kept (tests may read it afterwards)."""

    def __init__(self, agent: NodeAgent, name: str):
        self.agent, self.name = agent, name

    def _ours(self, pvc: dict) -> bool:
        anns = pvc["metadata"].get("annotations") or {}
        return any(anns.get(k) == self.name for k in PROVISIONER_ANNOTATIONS)

    def loop(self) -> None:
        core = self.agent.core
        while not self.agent.stopping.is_set():
            try:
                w = watch.Watch()
                for ev in w.stream(core.list_persistent_volume_claim_for_all_namespaces,
                                   timeout_seconds=300):
                    if self.agent.stopping.is_set() or ev["type"] == "ERROR":
                        break
                    pvc = ev["raw_object"]
                    if not self._ours(pvc):
                        continue
                    if ev["type"] == "DELETED":
                        self._delete_pv(f"pvc-{pvc['metadata']['uid']}")
                    elif not pvc.get("spec", {}).get("volumeName"):
                        self._provision(pvc)
                w.stop()
            except Exception as e:  # noqa: BLE001
                log.warning("provisioner watch failed: %r", e)
                self.agent.stopping.wait(1.0)

    def _provision(self, pvc: dict) -> None:
        md, spec = pvc["metadata"], pvc["spec"]
        folder = self.agent.pvc_root / md["namespace"] / md["name"]
        folder.mkdir(parents=True, exist_ok=True)
        size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        pv = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"pvc-{md['uid']}",
                         "annotations": {"pv.kubernetes.io/provisioned-by": self.name}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "storageClassName": spec.get("storageClassName") or "",
                "persistentVolumeReclaimPolicy": "Delete",
                "hostPath": {"path": str(folder), "type": "DirectoryOrCreate"},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "namespace": md["namespace"], "name": md["name"], "uid": md["uid"]},
            },
        }
        try:
            self.agent.core.create_persistent_volume(pv)
            log.info("provisioned %s for %s/%s at %s", pv["metadata"]["name"], md["namespace"],
                     md["name"], folder)
        except ApiException as e:
            if e.status != 409:
                log.warning("provisioning %s/%s: %s %s", md["namespace"], md["name"], e.status,
                            e.body)

    def _delete_pv(self, name: str) -> None:
        try:
            self.agent.core.delete_persistent_volume(name)
        except ApiException as e:
            if e.status != 404:
                log.warning("deleting PV %s: %s", name, e.status)


class LogHandler(http.server.BaseHTTPRequestHandler):
    """``GET /containerLogs/<ns>/<pod>/<container>`` as the API server asks a kubelet
    (``kubectl logs``, ``read_namespaced_pod_log``): tailLines, limitBytes, previous."""

    agent: NodeAgent

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.debug("http: " + format, *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        url = urllib.parse.urlparse(self.path)
        qs = urllib.parse.parse_qs(url.query)
        parts = url.path.strip("/").split("/")
        if url.path in ("/healthz", "/readyz", "/livez"):
            return self._send(200, b"ok")
        if len(parts) != 4 or parts[0] != "containerLogs":
            return self._send(404, b"not found")
        _, ns, pod, cname = parts
        runner = self.agent.find_runner(ns, pod)
        if runner is None:
            return self._send(404, f"pod {ns}/{pod} is not on this node".encode())
        restart = runner.cstate.get(cname, {}).get("restartCount", 0)
        if qs.get("previous", ["false"])[0] == "true":
            restart -= 1
        path = runner.log_path(cname, restart)
        if restart < 0 or not path.exists():
            return self._send(404, f"no log for container {cname}".encode())
        data = path.read_bytes()
        if "tailLines" in qs:
            n = int(qs["tailLines"][0])
            data = b"".join(data.splitlines(keepends=True)[-n:]) if n > 0 else b""
        if "limitBytes" in qs:
            data = data[: int(qs["limitBytes"][0])]
        return self._send(200, data)

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve_logs(agent: NodeAgent, port: int, cert: str, key: str, client_ca: str | None) -> None:
    handler = type("Handler", (LogHandler,), {"agent": agent})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca:  # only the API server (a client cert from the cluster CA) may read logs
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True, name="log-server").start()
