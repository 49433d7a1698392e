"""The operator's Prometheus metrics (served on THRESHER_METRICS_PORT at /metrics).

Labels are bounded: phase, stage type, step name, outcome, error kind; never job names or ids.
Counters move on status *transitions*, so a restarted operator does not count a step twice.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

from curation_operator.observe import seconds_between
from curation_operator.state import Phase, StepPhase

JOBS = Gauge("thresher_curationjobs", "CurationJobs seen by this operator, by phase.", ["phase"])
STEP_SECONDS = Histogram(
    "thresher_step_duration_seconds",
    "Wall time of finished steps (Job created to Job complete).",
    ["stage_type", "step"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
)
DOCUMENTS = Counter(
    "thresher_documents_total",
    "Documents by outcome (kept, removed, generated) of finished stages, per stage type.",
    ["stage_type", "outcome"],
)
RETRIES = Counter(
    "thresher_step_retries_total",
    "Failed step pods that the Job controller replaced (a failure that ended the step is no retry).",
    ["stage_type"],
)
STEP_JOBS = Counter("thresher_step_jobs_created_total", "Step Jobs created.", ["stage_type"])
FAILURES = Counter("thresher_curationjob_failures_total", "CurationJobs that failed, by reason.", ["reason"])
RECONCILE_ERRORS = Counter("thresher_reconcile_errors_total", "Reconciles that raised, by kind.", ["kind"])
RECONCILE_SECONDS = Histogram(
    "thresher_reconcile_duration_seconds",
    "Time of one reconcile of one CurationJob.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
KNOWN_FAILURE_REASONS = {
    "InvalidSpec", "InvalidInput", "ModelNotFound", "MissingDependency", "ConservationViolated", "StepFailed",
    "PermanentError", "RetriesExhausted", "StepDeadlineExceeded", "WorkerCrashed", "Unschedulable",
}  # fmt: skip

_phases: dict[str, str] = {}  # uid -> phase, only to export the gauge


def serve(port: int) -> None:
    if port > 0:
        start_http_server(port, registry=REGISTRY)
    for phase in Phase:
        JOBS.labels(phase.value)  # export zeros, so dashboards see every phase


def set_phase(uid: str, phase: str | None) -> None:
    """Record a CurationJob's phase (None: it was deleted) and refresh the gauge."""
    if phase is None:
        _phases.pop(uid, None)
    else:
        _phases[uid] = phase
    for p in Phase:
        JOBS.labels(p.value).set(sum(1 for v in _phases.values() if v == p.value))


def record_transition(old: dict[str, Any], new: dict[str, Any], stage_types: dict[str, str]) -> None:
    """Count what changed between two statuses. `stage_types` maps stage name -> stage type."""
    old_steps = {s.get("id"): s for s in old.get("steps") or []}
    for step in new.get("steps") or []:
        stage_type = stage_types.get(step.get("stage", ""), step.get("stage", ""))
        before = old_steps.get(step.get("id"), {})
        retried = int(step.get("retries", 0)) - int(before.get("retries", 0))
        if retried > 0:
            RETRIES.labels(stage_type).inc(retried)
        if step.get("phase") == StepPhase.SUCCEEDED and before.get("phase") != StepPhase.SUCCEEDED:
            seconds = seconds_between(step.get("startTime"), step.get("completionTime"))
            if seconds is not None:
                STEP_SECONDS.labels(stage_type, str(step.get("id", "")).rsplit(".", 1)[-1]).observe(seconds)
    old_stages = {s.get("name"): s for s in old.get("stages") or []}
    for stage in new.get("stages") or []:
        if (
            stage.get("phase") == "Succeeded"
            and old_stages.get(stage.get("name"), {}).get("phase") != "Succeeded"
        ):
            kind = stage.get("type", "")
            DOCUMENTS.labels(kind, "kept").inc(int(stage.get("docsOut", 0)))
            DOCUMENTS.labels(kind, "removed").inc(sum(int(v) for v in (stage.get("removed") or {}).values()))
            DOCUMENTS.labels(kind, "generated").inc(int(stage.get("generated", 0)))
    if new.get("phase") == Phase.FAILED and old.get("phase") != Phase.FAILED:
        reason = {c.get("type"): c for c in new.get("conditions") or []}.get("Failed", {}).get("reason", "")
        FAILURES.labels(reason if reason in KNOWN_FAILURE_REASONS else "Other").inc()
