"""The operator's only door to the API server: a few typed calls returning plain dicts.

Kept small on purpose; every call here needs a matching rule in manifests/rbac (and nothing else).
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from curation.crd import PLURAL
from curation.spec import API_GROUP, API_VERSION
from curation_operator.builders import LABEL_JOB, LABEL_MANAGED_BY, LABEL_STEP, MANAGED_BY, label_value
from curation_operator.events import Event

COMPONENT = "thresher-operator"


def load_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def _json(response: Any) -> dict[str, Any]:
    return json.loads(response.data)


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.instance = socket.gethostname()

    # ------------------------------------------------------------------ CurationJob
    def get_curation_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)  # type: ignore[no-any-return]
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            API_GROUP, API_VERSION, namespace, PLURAL, name, {"status": patch}
        )

    # ------------------------------------------------------------------ children
    @staticmethod
    def _selector(parent: str) -> str:
        return f"{LABEL_JOB}={label_value(parent)},{LABEL_MANAGED_BY}={MANAGED_BY}"

    def list_jobs(self, namespace: str, parent: str) -> list[dict[str, Any]]:
        resp = self.batch.list_namespaced_job(
            namespace, label_selector=self._selector(parent), _preload_content=False
        )
        return list(_json(resp).get("items") or [])

    def list_pods(self, namespace: str, parent: str, step_id: str) -> list[dict[str, Any]]:
        """The pods of one step (never every pod of the CurationJob: a step has up to 1024)."""
        selector = f"{self._selector(parent)},{LABEL_STEP}={label_value(step_id)}"
        resp = self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
        return list(_json(resp).get("items") or [])

    def create_job(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the Job, or return the existing one of that name (created: False)."""
        meta = body["metadata"]
        try:
            resp = self.batch.create_namespaced_job(meta["namespace"], body, _preload_content=False)
            return _json(resp), True
        except ApiException as err:
            if err.status != 409:
                raise
        resp = self.batch.read_namespaced_job(meta["name"], meta["namespace"], _preload_content=False)
        return _json(resp), False

    def patch_job(self, namespace: str, name: str, spec_patch: dict[str, Any]) -> None:
        self.batch.patch_namespaced_job(name, namespace, {"spec": spec_patch})

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a step Job at once; the garbage collector removes its pods in the background."""
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as err:
            if err.status != 404:
                raise

    def ensure_configmap(self, body: dict[str, Any]) -> None:
        """Create the spec ConfigMap, or bring an existing one (owned by this job) up to date."""
        meta = body["metadata"]
        try:
            self.core.create_namespaced_config_map(meta["namespace"], body)
            return
        except ApiException as err:
            if err.status != 409:
                raise
        current = _json(
            self.core.read_namespaced_config_map(meta["name"], meta["namespace"], _preload_content=False)
        )
        if current.get("data") != body["data"]:
            self.core.patch_namespaced_config_map(meta["name"], meta["namespace"], {"data": body["data"]})

    def ensure_service_account(self, namespace: str, name: str) -> None:
        """The workers' ServiceAccount: no role bindings, no token mounted (no API rights)."""
        body = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace, "labels": {LABEL_MANAGED_BY: MANAGED_BY}},
            "automountServiceAccountToken": False,
        }
        try:
            self.core.create_namespaced_service_account(namespace, body)
        except ApiException as err:
            if err.status != 409:
                raise

    # ------------------------------------------------------------------ events
    def post_event(self, parent: dict[str, Any], event: Event) -> None:
        meta = parent["metadata"]
        stamp = now_rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name'][:200]}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": parent.get("apiVersion", f"{API_GROUP}/{API_VERSION}"),
                "kind": parent.get("kind", "CurationJob"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": event.reason[:128],
            "message": event.message[:1024],
            "type": event.type,
            "source": {"component": COMPONENT},
            "reportingComponent": f"{API_GROUP}/operator",
            "reportingInstance": self.instance[:128],
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        self.core.create_namespaced_event(meta["namespace"], body)
