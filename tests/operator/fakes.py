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
) -> dict[str, Any]:
    conditions = []
    if complete:
        conditions.append({"type": "Complete", "status": "True"})
    if failed:
        conditions.append(
            {
                "type": "Failed",
                "status": "True",
                "reason": failed,
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
    waiting: str | None = None,
    job_name: str = "",
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "worker", "state": {}}
    if phase in ("Succeeded", "Failed"):
        text = (
            message
            if message is not None
            else json.dumps(stats or {"rank": index, "docs_in": 10, "docs_out": 8})
        )
        code = exit_code if exit_code is not None else (0 if phase == "Succeeded" else 1)
        container["state"] = {"terminated": {"exitCode": code, "message": text}}
    elif waiting:
        container["state"] = {"waiting": {"reason": waiting, "message": f"{waiting} details"}}
    conditions = []
    if unschedulable:
        conditions.append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}
        )
    return {
        "metadata": {
            "name": f"{step_id.replace('.', '-')}-{index}-abcde",
            "annotations": {
                ANNOTATION_STEP_ID: step_id,
                "batch.kubernetes.io/job-completion-index": str(index),
            },
            "labels": {LABEL_STEP: step_id, "batch.kubernetes.io/job-name": job_name},
        },
        "status": {"phase": phase, "conditions": conditions, "containerStatuses": [container]},
    }
