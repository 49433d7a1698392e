"""Materialise a pod's volumes as local folders (there is no mount namespace)."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException

from .podspec import field_value, resource_value

log = logging.getLogger("thresher.node_agent")


class VolumeBuilder:
    """``build()`` returns ``{volume name: local folder}`` for one pod.

    persistentVolumeClaim -> ``<pvc_root>/<namespace>/<claimName>``; hostPath -> the same path;
    emptyDir -> ``<pod dir>/volumes/<name>``; configMap/secret/downwardAPI/projected -> files written
    into ``<pod dir>/volumes/<name>`` once, at pod start (no live updates).
    """

    def __init__(self, core: client.CoreV1Api, pod: dict, pod_dir: Path, pvc_root: Path,
                 allocatable: dict):
        self.core, self.pod, self.pod_dir = core, pod, pod_dir
        self.pvc_root, self.allocatable = pvc_root, allocatable
        self.ns = pod["metadata"]["namespace"]

    def build(self) -> dict[str, Path]:
        return {v["name"]: self._one(v) for v in self.pod["spec"].get("volumes") or []}

    def _one(self, v: dict) -> Path:
        local = self.pod_dir / "volumes" / v["name"]
        if "persistentVolumeClaim" in v:
            local = self.pvc_root / self.ns / v["persistentVolumeClaim"]["claimName"]
            local.mkdir(parents=True, exist_ok=True)
        elif "hostPath" in v:
            local = self._host_path(v["hostPath"])
        elif "configMap" in v:
            self.write_keys(local, self.ref_data("configmap", v["configMap"]), v["configMap"])
        elif "secret" in v:
            ref = {**v["secret"], "name": v["secret"].get("secretName")}
            self.write_keys(local, self.ref_data("secret", ref), v["secret"])
        elif "downwardAPI" in v:
            self._write_downward(local, v["downwardAPI"].get("items") or [])
        elif "projected" in v:
            local.mkdir(parents=True, exist_ok=True)
            for src in v["projected"].get("sources") or []:
                self._projected_source(local, src)
        else:
            if "emptyDir" not in v:
                log.warning("volume %s: unsupported type, using an empty folder", v["name"])
            local.mkdir(parents=True, exist_ok=True)
        return local

    @staticmethod
    def _host_path(spec: dict) -> Path:
        local, kind = Path(spec["path"]), spec.get("type") or ""
        if local.exists():
            return local
        if kind in ("", "DirectoryOrCreate"):
            local.mkdir(parents=True, exist_ok=True)
        elif kind == "FileOrCreate":
            local.parent.mkdir(parents=True, exist_ok=True)
            local.touch()
        else:
            raise RuntimeError(f"hostPath {local} does not exist (type {kind})")
        return local

    def _projected_source(self, folder: Path, src: dict) -> None:
        if "configMap" in src:
            self.write_keys(folder, self.ref_data("configmap", src["configMap"]), src["configMap"])
        elif "secret" in src:
            self.write_keys(folder, self.ref_data("secret", src["secret"]), src["secret"])
        elif "downwardAPI" in src:
            self._write_downward(folder, src["downwardAPI"].get("items") or [])
        elif "serviceAccountToken" in src:
            self._write_token(folder, src["serviceAccountToken"])

    def ref_data(self, kind: str, ref: dict) -> dict[str, bytes]:
        """Data of a referenced ConfigMap or Secret ({} if missing and optional)."""
        name = ref.get("name")
        try:
            if kind == "configmap":
                obj = self.core.read_namespaced_config_map(name, self.ns)
                data = {k: v.encode() for k, v in (obj.data or {}).items()}
                data.update({k: base64.b64decode(v) for k, v in (obj.binary_data or {}).items()})
                return data
            obj = self.core.read_namespaced_secret(name, self.ns)
            return {k: base64.b64decode(v) for k, v in (obj.data or {}).items()}
        except ApiException as e:
            if e.status == 404 and ref.get("optional"):
                return {}
            raise RuntimeError(f"{kind} {self.ns}/{name}: {e.status} {e.reason}") from e

    @staticmethod
    def write_keys(folder: Path, data: dict[str, bytes], spec: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        items = spec.get("items")
        pairs = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]
        for key, rel in pairs:
            if key in data:
                p = folder / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data[key])

    def _write_downward(self, folder: Path, items: list[dict]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        containers = self.pod["spec"]["containers"]
        for it in items:
            if "fieldRef" in it:
                val = field_value(self.pod, it["fieldRef"]["fieldPath"])
            else:
                cname = it["resourceFieldRef"].get("containerName")
                c = next((c for c in containers if c["name"] == cname), containers[0])
                val = resource_value(c, it["resourceFieldRef"], self.allocatable)
            p = folder / it["path"]
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(val)

    def _write_token(self, folder: Path, src: dict) -> None:
        md = self.pod["metadata"]
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        spec: dict = {"expirationSeconds": src.get("expirationSeconds") or 3600,
                      "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": md["name"],
                                         "uid": md["uid"]}}
        if src.get("audience"):
            spec["audiences"] = [src["audience"]]
        try:
            token = self.core.create_namespaced_service_account_token(
                sa, self.ns, {"spec": spec}).status.token
        except ApiException as e:  # e.g. the pod is already being deleted
            log.warning("token request for %s/%s failed: %s %s", self.ns, sa, e.status, e.reason)
            token = ""
        (folder / src.get("path", "token")).write_text(token)
