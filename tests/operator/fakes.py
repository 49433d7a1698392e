"""Kubernetes objects as the API server returns them (dicts), for operator unit tests."""

from __future__ import annotations

import json
from typing import Any

from curation.spec import parse_spec
from curation_operator.builders import ANNOTATION_STEP_ID, LABEL_STEP

T0 = "2026-01-01T00:00:00Z"
UID = "uid-1"


def quick_spec(**overrides: Any):
    doc: dict[str, Any] = {
        "input": {"path": "in", "pvc": "data", "idField": "doc_id"},
        "output": {"path": "out", "pvc": "data"},
        "parallelism": 2,
        "stages": [{"type": "exact-dedup"}, {"type": "heuristic-filter"}],
    }
    doc.update(overrides)
    return parse_spec(doc)


def job(
    step_id: str,
    name: str,
    *,
    complete: bool = False,
    failed: str | None = None,
    failed_message: str = "",
    suspended: bool = False,
    succeeded: int = 0,
    failed_pods: int = 0,
    active: int = 0,
    owner: str = UID,
    labels: dict[str, str] | None = None,
    ttl: int | None = None,
    created: str = T0,
    completed: str = "2026-01-01T00:01:00Z",
    failure_target: str | None = None,
) -> dict[str, Any]:
    """A step Job; `failure_target` is the reason of a FailureTarget condition (the Job will fail
    once its pods are gone), `failed` that of a Failed condition."""
    conditions = []
    if complete:
        conditions.append({"type": "Complete", "status": "True"})
    for kind, reason in (("FailureTarget", failure_target), ("Failed", failed)):
        if reason:
            conditions.append(
                {
                    "type": kind,
                    "status": "True",
                    "reason": reason,
                    "message": failed_message,
                    "lastTransitionTime": completed,
                }
            )
    spec: dict[str, Any] = {"suspend": suspended}
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    status: dict[str, Any] = {
        "succeeded": succeeded,
        "failed": failed_pods,
        "active": active,
        "conditions": conditions,
    }
    if complete:
        status["completionTime"] = completed
    return {
        "metadata": {
            "name": name,
            "uid": f"job-uid-{name}",
            "creationTimestamp": created,
            "annotations": {ANNOTATION_STEP_ID: step_id},
            "labels": {LABEL_STEP: step_id, **(labels or {})},
            "ownerReferences": [{"controller": True, "uid": owner, "kind": "CurationJob", "name": "qs"}],
        },
        "spec": spec,
        "status": status,
    }


def pod(
    step_id: str,
    index: int,
    phase: str = "Succeeded",
    *,
    stats: dict[str, Any] | None = None,
    message: str | None = None,
    exit_code: int | None = None,
    unschedulable: str | None = None,
    unschedulable_since: str = T0,
    waiting: str | None = None,
    job_name: str = "",
    attempt: int = 0,
    started: str = T0,
    finished: str = "2026-01-01T00:00:20Z",
) -> dict[str, Any]:
    """A step pod (rank `index`; `attempt` tells the tries of one rank apart)."""
    container: dict[str, Any] = {"name": "worker", "state": {}}
    if phase in ("Succeeded", "Failed"):
        text = (
            message
            if message is not None
            else json.dumps(stats or {"rank": index, "docs_in": 10, "docs_out": 8})
        )
        code = exit_code if exit_code is not None else (0 if phase == "Succeeded" else 1)
        container["state"] = {
            "terminated": {"exitCode": code, "message": text, "startedAt": started, "finishedAt": finished}
        }
    elif waiting:
        container["state"] = {"waiting": {"reason": waiting, "message": f"{waiting} details"}}
    conditions = []
    if unschedulable:
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": unschedulable,
                "lastTransitionTime": unschedulable_since,
            }
        )
    return {
        "metadata": {
            "name": f"{step_id.replace('.', '-')}-{index}-try{attempt}",
            "annotations": {
                ANNOTATION_STEP_ID: step_id,
                "batch.kubernetes.io/job-completion-index": str(index),
            },
            "labels": {LABEL_STEP: step_id, "batch.kubernetes.io/job-name": job_name},
        },
        "status": {"phase": phase, "conditions": conditions, "containerStatuses": [container]},
    }


def prune(doc: Any, schema: dict[str, Any]) -> Any:
    """What the API server stores of `doc` under a structural schema: unknown fields dropped."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return doc
    if isinstance(doc, dict):
        props = schema.get("properties")
        if props is None:
            extra = schema.get("additionalProperties")
            return {k: prune(v, extra) for k, v in doc.items()} if isinstance(extra, dict) else {}
        return {k: prune(v, props[k]) for k, v in doc.items() if k in props}
    if isinstance(doc, list):
        return [prune(v, schema.get("items", {})) for v in doc]
    return doc


def unknown_keys(doc: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Paths of the keys of `doc` that `schema` does not declare (what `prune` would drop)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(doc, dict):
        props = schema.get("properties")
        if props is None:
            extra = schema.get("additionalProperties", {})
            return [m for k, v in doc.items() for m in unknown_keys(v, extra, f"{path}.{k}")]
        out = [f"{path}.{k}" for k in doc if k not in props]
        return out + [
            m for k, v in doc.items() if k in props for m in unknown_keys(v, props[k], f"{path}.{k}")
        ]
    if isinstance(doc, list):
        return [
            m for i, v in enumerate(doc) for m in unknown_keys(v, schema.get("items", {}), f"{path}[{i}]")
        ]
    return []
