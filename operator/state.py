"""The state machine: from what exists in the cluster to the next actions and the whole status.

`decide` is pure: it gets the parsed spec, the plan, the owned Jobs, the pods of the steps whose
results are not recorded yet and the previous status (all read from the API server, never from
memory) and returns the actions to take and the complete new status, checked against the one
status model (`curation.crd_status`) the CRD's schema is made of. One place computes status; the
reconciler only writes it.

A step's counts, once recorded as Succeeded in the stored status, are final: its Job is deleted
after that status is written, and a restarted operator reads the step from the status, never runs
it again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from curation.crd_status import TERMINAL, ConditionType, Phase, StagePhase, StepPhase, status_document
from curation.plan import EVALUATE, FINALIZE, INGEST, Step
from curation.spec import PipelineSpec
from curation_operator.builders import job_name
from curation_operator.observe import JobView, PodView, rank_result, seconds_between, step_failure

__all__ = ["TERMINAL", "Action", "ActionKind", "Decision", "Phase", "StepPhase", "World", "decide"]

_REASON_UNSAFE = re.compile(r"[^A-Za-z0-9_,:]+")


class ActionKind(StrEnum):
    CREATE_JOB = "CreateJob"
    SUSPEND_JOB = "SuspendJob"
    RESUME_JOB = "ResumeJob"
    EXPIRE_JOB = "ExpireJob"  # a failed step's Job: ttlSecondsAfterFinished once the CurationJob finished
    DELETE_JOB = "DeleteJob"  # a recorded step's Job, or one that must stop: after the status write


# Actions that destroy what the status is computed from: the reconciler runs them only after the
# status that records their step has been written.
AFTER_STATUS = frozenset({ActionKind.DELETE_JOB})


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    step_id: str
    job: str


@dataclass(frozen=True)
class World:
    """What the reconciler read from the cluster for one CurationJob."""

    name: str
    generation: int
    spec: PipelineSpec
    steps: list[Step]
    jobs: dict[str, JobView]  # by step id; only Jobs this CurationJob owns
    pods: dict[str, list[PodView]]  # by step id; only for the steps of `steps_to_observe`
    previous: dict[str, Any]  # the status as stored


@dataclass
class Decision:
    status: dict[str, Any]
    actions: list[Action] = field(default_factory=list)


def _previous_steps(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s.get("id", ""): s for s in status.get("steps") or []}


def steps_to_observe(steps: list[Step], jobs: dict[str, JobView], previous: dict[str, Any]) -> list[Step]:
    """The steps whose pods a reconcile reads: those with a Job and no recorded result.

    Usually one (the current step), two when a step just finished; never the whole plan."""
    if previous.get("phase") in TERMINAL:
        return []
    recorded = _previous_steps(previous)
    return [s for s in steps if s.id in jobs and recorded.get(s.id, {}).get("phase") != StepPhase.SUCCEEDED]


# --------------------------------------------------------------------------- step records


def _sum_removed(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for reason, count in part.items():
            total[reason] = total.get(reason, 0) + int(count)
    return dict(sorted(total.items()))


def _step_phase(job: JobView, spec: PipelineSpec) -> StepPhase:
    if job.complete:
        return StepPhase.SUCCEEDED
    if job.failed:
        return StepPhase.FAILED
    if job.suspended:
        if job.queued_by_kueue and not spec.suspend:
            return StepPhase.QUEUED
        return StepPhase.SUSPENDED
    return StepPhase.RUNNING


def retried_pods(job: JobView, pods: list[PodView]) -> int:
    """Failed pods that the Job controller replaced: every pod of a rank but its latest one.

    A failure that ended the step (a permanent error failed by the pod failure policy, the last
    try of a rank, pods stopped because the Job failed) has no successor, so it is no retry. Capped
    by the Job's own count of failed pods (an evicted pod is replaced but is no failure)."""
    per_rank: dict[int, int] = {}
    for pod in pods:
        if pod.index is not None:
            per_rank[pod.index] = per_rank.get(pod.index, 0) + 1
    replaced = sum(n - 1 for n in per_rank.values())
    return replaced if replaced < job.failed_pods else job.failed_pods


def _problem(pods: list[PodView]) -> tuple[str, str, PodView] | None:
    """A reason a person must act on: pods that cannot be scheduled (the longest waiting one first)
    or cannot start."""
    waiting = [p for p in pods if p.unschedulable and p.phase == "Pending"]
    if waiting:
        pod = min(waiting, key=lambda p: p.unschedulable_since or "~")
        return "Unschedulable", pod.unschedulable or "", pod
    for pod in pods:
        if pod.stuck_reason:
            return pod.stuck_reason, f"pod {pod.name}: {pod.stuck_message or pod.stuck_reason}", pod
    return None


def _unschedulable_for_too_long(spec: PipelineSpec, pod: PodView, message: str, now: str) -> str | None:
    """The failure message once `spec.unschedulableTimeoutSeconds` has passed, else None."""
    limit = spec.unschedulable_timeout_seconds
    waited = seconds_between(pod.unschedulable_since, now)
    if limit is None or waited is None or waited < limit:
        return None
    return (
        f"pod {pod.name} could not be scheduled for {int(waited)}s "
        f"(spec.unschedulableTimeoutSeconds is {limit}): {message}"
    )


def step_record(world: World, position: int, step: Step, now: str) -> dict[str, Any]:
    """Status of one step: the recorded one once it finished, else from its Job and pods."""
    job = world.jobs.get(step.id)
    previous = _previous_steps(world.previous).get(step.id, {})
    if previous.get("phase") == StepPhase.SUCCEEDED or (
        job is None and previous.get("phase") == StepPhase.FAILED
    ):
        return dict(previous)  # final; its Job and pods may be gone
    record: dict[str, Any] = {
        "id": step.id,
        "stage": step.stage,
        "job": job.name if job else job_name(world.name, position, step),
        "phase": StepPhase.PENDING.value,
        "ranks": step.world_size,
        "ranksDone": 0,
    }
    if job is None:
        return record
    pods = world.pods.get(step.id, [])
    phase = _step_phase(job, world.spec)
    results = {r.rank: r for r in (rank_result(p) for p in pods) if r is not None}
    record.update(
        phase=phase.value,
        ranksDone=max(job.succeeded, len(results)),
        retries=retried_pods(job, pods),
        startTime=job.created,
        docsIn=sum(r.docs_in for r in results.values()),
        docsOut=sum(r.docs_out for r in results.values()),
        generated=sum(r.generated for r in results.values()),
        removed=_sum_removed(r.removed for r in results.values()),
        seconds=round(max((r.seconds for r in results.values()), default=0.0), 3),
    )
    if phase == StepPhase.SUCCEEDED:
        record["completionTime"] = job.completion_time
    elif phase == StepPhase.FAILED:
        failure = step_failure(job, sorted((p for p in pods if p.phase == "Failed"), key=lambda p: p.name))
        record.update(
            completionTime=job.failed_time or previous.get("completionTime") or now,
            reason=failure.reason,
            message=failure.message,
        )
    elif phase == StepPhase.RUNNING and (problem := _problem(pods)):
        reason, message, pod = problem
        record.update(reason=reason, message=message)
        if reason == "Unschedulable" and (
            gave_up := _unschedulable_for_too_long(world.spec, pod, message, now)
        ):
            record.update(phase=StepPhase.FAILED.value, message=gave_up, completionTime=now)
    return {k: v for k, v in record.items() if v is not None}


# --------------------------------------------------------------------------- conditions


@dataclass
class _Outcome:
    """What the first unfinished step (or the end of the plan) says about the whole job."""

    phase: Phase
    reason: str
    message: str
    problem: tuple[str, str] | None = None  # (reason, message) a person must act on


def condition_reason(text: str) -> str:
    """A metav1.Condition reason (CamelCase letters, digits, `_`, `,`, `:`), from any text."""
    cleaned = _REASON_UNSAFE.sub("", text).lstrip("0123456789_,:").rstrip(",:")
    return cleaned[:1024] or "StepFailed"


def _condition(
    kind: ConditionType,
    ok: bool,
    reason: str,
    message: str,
    generation: int,
    previous: dict[str, dict[str, Any]],
    now: str,
) -> dict[str, Any]:
    status = "True" if ok else "False"
    old = previous.get(kind.value, {})
    changed = old.get("status") != status
    return {
        "type": kind.value,
        "status": status,
        "observedGeneration": generation,
        "lastTransitionTime": now
        if changed or "lastTransitionTime" not in old
        else old["lastTransitionTime"],
        "reason": condition_reason(reason),
        "message": message[:32768],
    }


def conditions_for(
    outcome: _Outcome, done: int, total: int | None, generation: int, old: dict[str, Any], now: str
) -> list[dict[str, Any]]:
    """The five conditions, each with its own reason and message.

    Ready is False only when a person must act: a failure, unschedulable or unstartable pods.
    `total` is None when nothing was planned (the spec was refused)."""
    phase = outcome.phase
    progress = f"{done}/{total} steps done" if total is not None else "no step ran"
    failed = phase == Phase.FAILED
    if outcome.problem:
        ready = (False, *outcome.problem)
    elif failed:
        ready = (
            False,
            "JobFailed",
            f"the job failed ({outcome.reason}); the Failed condition says what to do",
        )
    else:
        ready = (True, "NoProblems", "nothing needs a person")
    running = {
        Phase.RUNNING: (True, outcome.reason, outcome.message),
        Phase.PENDING: (False, outcome.reason, outcome.message),
        Phase.SUSPENDED: (False, "Suspended", "no step runs while spec.suspend is true"),
        Phase.SUCCEEDED: (False, "Completed", f"all {total} steps finished"),
        Phase.FAILED: (False, "Stopped", f"stopped after a failure; {progress}"),
    }[phase]
    if phase == Phase.SUCCEEDED:
        succeeded = (True, "Completed", outcome.message)
    elif failed:
        succeeded = (False, "JobFailed", "the job failed and will not complete")
    else:
        succeeded = (False, "InProgress", progress)
    failure = (
        (True, outcome.reason, outcome.message) if failed else (False, "NoFailure", "no step has failed")
    )
    if phase == Phase.SUSPENDED:
        suspended = (True, "SuspendedByUser", f"{outcome.message}; set spec.suspend to false to resume")
    else:
        suspended = (False, "NotSuspended", "spec.suspend is false" if phase not in TERMINAL else "finished")
    prev = {c.get("type", ""): c for c in old.get("conditions") or []}
    return [
        _condition(kind, ok, reason, message, generation, prev, now)
        for kind, (ok, reason, message) in (
            (ConditionType.READY, ready),
            (ConditionType.RUNNING, running),
            (ConditionType.SUCCEEDED, succeeded),
            (ConditionType.FAILED, failure),
            (ConditionType.SUSPENDED, suspended),
        )
    ]


# --------------------------------------------------------------------------- totals


def _stage_records(steps: list[Step], records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for stage in dict.fromkeys(s.stage for s in steps if s.stage not in (INGEST, FINALIZE, EVALUATE)):
        own = [s for s in steps if s.stage == stage]
        phases = [records[s.id]["phase"] for s in own]
        done = sum(p == StepPhase.SUCCEEDED for p in phases)
        if done == len(own):
            phase = StagePhase.SUCCEEDED
        elif StepPhase.FAILED in phases:
            phase = StagePhase.FAILED
        elif any(p != StepPhase.PENDING for p in phases):
            phase = StagePhase.RUNNING
        else:
            phase = StagePhase.PENDING
        record: dict[str, Any] = {
            "name": stage,
            "type": own[0].stage_type,
            "phase": phase.value,
            "stepsDone": done,
            "steps": len(own),
        }
        last = records[own[-1].id]  # the stage's last step writes its output and rejected rows
        if last["phase"] == StepPhase.SUCCEEDED:
            for key in ("docsIn", "docsOut", "generated", "removed"):
                if key in last:
                    record[key] = last[key]
        out.append(record)
    return out


def _totals(
    steps: list[Step], records: dict[str, dict[str, Any]], stages: list[dict[str, Any]]
) -> dict[str, Any]:
    """Documents in (the first ingest step's reads), out, removed and generated so far."""
    ingest = [records[s.id] for s in steps if s.stage == INGEST]
    if not ingest or ingest[0].get("phase") != StepPhase.SUCCEEDED:
        return {}
    docs_in = int(ingest[0].get("docsIn", 0))
    finished = [s for s in stages if s["phase"] == StagePhase.SUCCEEDED]
    docs_out = int(finished[-1]["docsOut"]) if finished else int(ingest[0].get("docsOut", docs_in))
    removed = sum(sum(r.get("removed", {}).values()) for r in ingest) + sum(
        sum(s.get("removed", {}).values()) for s in finished
    )
    totals: dict[str, Any] = {
        "docsIn": docs_in,
        "docsOut": docs_out,
        "docsRemoved": removed,
        "docsGenerated": sum(int(s.get("generated", 0)) for s in finished),
    }
    if docs_in:
        totals["keptPercent"] = round(100.0 * docs_out / docs_in, 1)
    return totals


# --------------------------------------------------------------------------- decide


def _running_message(step: Step, position: int, total: int, record: dict[str, Any]) -> str:
    return (
        f"step {step.id} ({position + 1}/{total}): {record.get('ranksDone', 0)}/{step.world_size} ranks done"
    )


def _act_on(
    world: World, step: Step, position: int, record: dict[str, Any], now: str, actions: list[Action]
) -> _Outcome:
    """The first unfinished step decides the phase and, maybe, one action on its Job."""
    spec, total = world.spec, len(world.steps)
    job = world.jobs.get(step.id)
    if record["phase"] == StepPhase.FAILED:
        return _Outcome(
            Phase.FAILED, record.get("reason", "StepFailed"), f"step {step.id}: {record.get('message', '')}"
        )
    if job is None:
        if spec.suspend:
            return _Outcome(Phase.SUSPENDED, "SuspendedByUser", f"suspended before step {step.id}")
        actions.append(Action(ActionKind.CREATE_JOB, step.id, record["job"]))
        if spec.queue_name:
            record.update(phase=StepPhase.QUEUED.value, startTime=now)
            return _Outcome(
                Phase.PENDING, "Queued", f"step {step.id}: waiting for Kueue (queue {spec.queue_name})"
            )
        record.update(phase=StepPhase.RUNNING.value, startTime=now)
        return _Outcome(Phase.RUNNING, "StepRunning", _running_message(step, position, total, record))
    if job.deleting:
        return _Outcome(
            Phase.RUNNING, "StepRestarting", f"step {step.id}: waiting for Job {job.name} to go away"
        )
    if spec.suspend:
        if not job.suspended:
            actions.append(Action(ActionKind.SUSPEND_JOB, step.id, job.name))
            record["phase"] = StepPhase.SUSPENDED.value
        return _Outcome(Phase.SUSPENDED, "SuspendedByUser", f"suspended at step {step.id}")
    if job.suspended and job.queued_by_kueue:
        message = f"step {step.id}: waiting for Kueue to admit Job {job.name} (queue {spec.queue_name})"
        return _Outcome(Phase.PENDING, "Queued", message)
    if job.suspended:
        actions.append(Action(ActionKind.RESUME_JOB, step.id, job.name))
        record["phase"] = StepPhase.RUNNING.value
    problem = (record["reason"], f"step {step.id}: {record['message']}") if "reason" in record else None
    return _Outcome(Phase.RUNNING, "StepRunning", _running_message(step, position, total, record), problem)


def _clean_up(world: World, records: dict[str, dict[str, Any]], finished: bool) -> list[Action]:
    """Jobs whose work is over: a recorded step's Job is deleted (its counts are in the status);
    once the CurationJob finished, a failed step's Job is kept for `ttlSecondsAfterFinished` (its
    pods' logs explain the failure) and any other Job is deleted, so nothing keeps running."""
    actions = []
    for step in world.steps:
        job = world.jobs.get(step.id)
        if job is None or job.deleting:
            continue
        if records.get(step.id, {}).get("phase") == StepPhase.SUCCEEDED:
            actions.append(Action(ActionKind.DELETE_JOB, step.id, job.name))
        elif finished and job.failed:
            if job.ttl_seconds is None:
                actions.append(Action(ActionKind.EXPIRE_JOB, step.id, job.name))
        elif finished:
            actions.append(Action(ActionKind.DELETE_JOB, step.id, job.name))
    return actions


def decide(world: World, now: str) -> Decision:
    """Walk the plan in order: finished steps are skipped, the first unfinished one is acted on."""
    steps, old = world.steps, world.previous
    if old.get("phase") in TERMINAL:
        return _finished(world, now)
    records = {s.id: step_record(world, i, s, now) for i, s in enumerate(steps)}
    actions: list[Action] = []
    outcome = _Outcome(Phase.SUCCEEDED, "Completed", "")
    current: Step | None = None
    for position, step in enumerate(steps):
        if records[step.id]["phase"] != StepPhase.SUCCEEDED:
            current = step
            outcome = _act_on(world, step, position, records[step.id], now, actions)
            break
    stages = _stage_records(steps, records)
    totals = _totals(steps, records, stages)
    if outcome.phase == Phase.SUCCEEDED:
        outcome.message = (
            f"{totals.get('docsIn', 0)} documents in, {totals.get('docsOut', 0)} kept "
            f"({totals.get('keptPercent', 0.0)}%)"
        )
    done = sum(r["phase"] == StepPhase.SUCCEEDED for r in records.values())
    status: dict[str, Any] = {
        "phase": outcome.phase.value,
        "observedGeneration": world.generation,
        "conditions": conditions_for(outcome, done, len(steps), world.generation, old, now),
        "currentStage": (current or steps[-1]).stage,
        "currentStep": (current or steps[-1]).id,
        "progress": f"{done}/{len(steps)}",
        "stepsDone": done,
        "stepsTotal": len(steps),
        **totals,
        "message": outcome.message,
        "stages": stages,
        "steps": [records[s.id] for s in steps],
    }
    starts = [r["startTime"] for r in records.values() if r.get("startTime")]
    if old.get("startTime") or starts:
        status["startTime"] = old.get("startTime") or min(starts)
    finished = outcome.phase in TERMINAL
    if finished:
        ends = [r["completionTime"] for r in records.values() if r.get("completionTime")]
        status["completionTime"] = max(ends) if ends else now
    actions += _clean_up(world, records, finished)
    return Decision(status=status_document(status), actions=actions)


def _finished(world: World, now: str) -> Decision:
    """A finished CurationJob keeps its status (its Jobs may already be gone); leftover Jobs are
    deleted or expired."""
    status = dict(world.previous)
    status.setdefault("completionTime", now)
    status["observedGeneration"] = world.generation  # e.g. `suspend` toggled after the end: nothing to do
    actions = _clean_up(world, _previous_steps(world.previous), finished=True)
    return Decision(status=status_document(status), actions=actions)


def invalid_spec_status(previous: dict[str, Any], generation: int, message: str, now: str) -> dict[str, Any]:
    """Status of a CurationJob whose spec the API server accepted but the pipeline model refuses."""
    outcome = _Outcome(Phase.FAILED, "InvalidSpec", message)
    return status_document(
        {
            "phase": Phase.FAILED.value,
            "observedGeneration": generation,
            "conditions": conditions_for(outcome, 0, None, generation, previous, now),
            "message": message,
            "completionTime": previous.get("completionTime") or now,
        }
    )


def needs_restart(previous: dict[str, Any], generation: int) -> bool:
    """A job refused for an invalid spec starts over once its spec was fixed (a new generation)."""
    failed = {c.get("type"): c for c in previous.get("conditions") or []}.get("Failed", {})
    return (
        previous.get("phase") == Phase.FAILED
        and failed.get("reason") == "InvalidSpec"
        and previous.get("observedGeneration") != generation
    )
