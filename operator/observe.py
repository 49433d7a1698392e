"""What the operator sees: compact, typed views of the step Jobs and their pods (from plain dicts).

Pure functions; the Kubernetes objects come in as dicts (API JSON, camelCase keys).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from curation_operator.builders import ANNOTATION_STEP_ID, CONTAINER, KUEUE_QUEUE_LABEL, LABEL_STEP

# Container waiting reasons that need a person (the pod will not start by itself).
STUCK_WAITING_REASONS = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
}


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type", ""): c for c in (obj.get("status") or {}).get("conditions") or []}


def _true(conds: dict[str, dict[str, Any]], kind: str) -> bool:
    return conds.get(kind, {}).get("status") == "True"


def parse_time(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one RFC 3339 time to another (None when either is missing or unreadable)."""
    if not start or not end:
        return None
    try:
        return max(0.0, (parse_time(end) - parse_time(start)).total_seconds())
    except ValueError:
        return None


@dataclass(frozen=True)
class JobView:
    name: str
    uid: str
    step_id: str
    owner_uid: str | None
    created: str | None
    suspended: bool
    queued_by_kueue: bool
    complete: bool
    failed: bool
    failure_reason: str
    failure_message: str
    succeeded: int
    failed_pods: int
    active: int
    completion_time: str | None
    failed_time: str | None
    ttl_seconds: int | None
    deleting: bool


def job_view(job: dict[str, Any]) -> JobView:
    meta = job.get("metadata") or {}
    spec = job.get("spec") or {}
    status = job.get("status") or {}
    conds = _conditions(job)
    owners = [o for o in meta.get("ownerReferences") or [] if o.get("controller")]
    annotations = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    # FailureTarget comes first (the Job will fail once its pods are gone), then Failed
    failed_as = "Failed" if _true(conds, "Failed") else "FailureTarget"
    failed = _true(conds, failed_as)
    suspended = bool(spec.get("suspend"))
    return JobView(
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        step_id=annotations.get(ANNOTATION_STEP_ID) or labels.get(LABEL_STEP, ""),
        owner_uid=owners[0].get("uid") if owners else None,
        created=meta.get("creationTimestamp"),
        suspended=suspended,
        queued_by_kueue=suspended and KUEUE_QUEUE_LABEL in labels,
        complete=_true(conds, "Complete"),
        failed=failed,
        failure_reason=conds.get(failed_as, {}).get("reason", "") if failed else "",
        failure_message=conds.get(failed_as, {}).get("message", "") if failed else "",
        succeeded=int(status.get("succeeded") or 0),
        failed_pods=int(status.get("failed") or 0),
        active=int(status.get("active") or 0),
        completion_time=status.get("completionTime"),
        failed_time=conds.get(failed_as, {}).get("lastTransitionTime") if failed else None,
        ttl_seconds=spec.get("ttlSecondsAfterFinished"),
        deleting=bool(meta.get("deletionTimestamp")),
    )


@dataclass(frozen=True)
class RankResult:
    """A finished rank's statistics, from its termination message (the worker's JSON)."""

    rank: int
    docs_in: int = 0
    docs_out: int = 0
    generated: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class PodView:
    name: str
    step_id: str
    index: int | None
    phase: str
    exit_code: int | None
    message: str
    unschedulable: str | None
    stuck_reason: str | None
    stuck_message: str
    job_name: str = ""
    job_uid: str = ""
    created: str | None = None
    unschedulable_since: str | None = None  # when the scheduler first said no
    started_at: str | None = None  # the worker container's start and end (terminated state)
    finished_at: str | None = None


def _container_state(pod: dict[str, Any]) -> dict[str, Any]:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER:
            return dict(cs)
    return {}


def pod_view(pod: dict[str, Any]) -> PodView:
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    index = annotations.get("batch.kubernetes.io/job-completion-index")
    cs = _container_state(pod)
    state = cs.get("state") or {}
    terminated = state.get("terminated") or {}
    waiting = state.get("waiting") or {}
    scheduled = _conditions(pod).get("PodScheduled", {})
    unschedulable = since = None
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        unschedulable = scheduled.get("message") or "no node fits the pod"
        since = scheduled.get("lastTransitionTime") or meta.get("creationTimestamp")
    stuck = waiting.get("reason") if waiting.get("reason") in STUCK_WAITING_REASONS else None
    return PodView(
        name=meta.get("name", ""),
        step_id=annotations.get(ANNOTATION_STEP_ID) or labels.get(LABEL_STEP, ""),
        index=int(index) if index is not None and str(index).isdigit() else None,
        phase=(pod.get("status") or {}).get("phase", "Pending"),
        exit_code=terminated.get("exitCode"),
        message=terminated.get("message") or "",
        unschedulable=unschedulable,
        stuck_reason=stuck,
        stuck_message=waiting.get("message", "") if stuck else "",
        job_name=labels.get("batch.kubernetes.io/job-name", ""),
        job_uid=labels.get("batch.kubernetes.io/controller-uid", ""),
        created=meta.get("creationTimestamp"),
        unschedulable_since=since,
        started_at=terminated.get("startedAt"),
        finished_at=terminated.get("finishedAt"),
    )


def belongs_to(pod: PodView, job: JobView) -> bool:
    """A pod of this very Job (not of a deleted one of the same name whose pods still linger)."""
    if pod.job_uid and job.uid:
        return pod.job_uid == job.uid
    return pod.job_name == job.name


def rank_result(pod: PodView) -> RankResult | None:
    """Statistics of a succeeded pod, or None when its message is not the worker's JSON."""
    if pod.phase != "Succeeded" or pod.index is None:
        return None
    try:
        doc = json.loads(pod.message)
    except ValueError:
        return None
    if not isinstance(doc, dict) or "error" in doc:
        return None
    removed = doc.get("removed") or {}
    seconds = float(doc.get("seconds") or 0.0)
    if seconds <= 0:  # a step that does not time itself: its pod's real start to finish
        seconds = seconds_between(pod.started_at, pod.finished_at) or 0.0
    return RankResult(
        rank=int(doc.get("rank", pod.index)),
        docs_in=int(doc.get("docs_in") or 0),
        docs_out=int(doc.get("docs_out") or 0),
        generated=int(doc.get("generated") or 0),
        removed={str(k): int(v) for k, v in removed.items()} if isinstance(removed, dict) else {},
        seconds=seconds,
    )


@dataclass(frozen=True)
class Failure:
    """Why a step failed, in words a person can act on."""

    reason: str
    message: str


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def pod_failure(pod: PodView) -> Failure | None:
    """The worker writes `{"error", "reason"}` on a known error; on a crash the kubelet falls back to
    the log tail (FallbackToLogsOnError), whose last line is the worker's one-line message."""
    if pod.phase != "Failed":
        return None
    try:
        doc = json.loads(pod.message)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("error"):
        return Failure(str(doc.get("reason") or "StepFailed"), str(doc["error"]))
    line = last_line(pod.message)
    code = f"exit code {pod.exit_code}" if pod.exit_code is not None else "no exit code"
    return Failure("WorkerCrashed", f"pod {pod.name} failed ({code})" + (f": {line}" if line else ""))


JOB_FAILURE_REASONS = {
    "DeadlineExceeded": "StepDeadlineExceeded",
    "BackoffLimitExceeded": "RetriesExhausted",
    "FailedIndexes": "RetriesExhausted",
    "MaxFailedIndexesExceeded": "RetriesExhausted",
    "PodFailurePolicy": "PermanentError",
}


def step_failure(job: JobView, pods: list[PodView]) -> Failure:
    """Prefer the worker's own message (the last failed pod's), else the Job controller's."""
    failures = [f for f in (pod_failure(p) for p in pods) if f is not None]
    reason = JOB_FAILURE_REASONS.get(job.failure_reason, job.failure_reason or "StepFailed")
    if job.failure_reason == "DeadlineExceeded":
        return Failure(reason, f"Job {job.name}: {job.failure_message or 'activeDeadlineSeconds reached'}")
    if failures:
        chosen = failures[-1]
        if chosen.reason == "WorkerCrashed" and reason == "RetriesExhausted":
            return Failure(reason, f"Job {job.name} ran out of retries; last: {chosen.message}")
        return chosen
    return Failure(reason, f"Job {job.name}: {job.failure_message or job.failure_reason or 'failed'}")
