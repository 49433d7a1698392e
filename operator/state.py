"""The state machine: from what exists in the cluster to the next actions and the whole status.

`decide` is pure: it gets the parsed spec, the plan, the owned Jobs and pods and the previous
status (all read from the API server, never from memory) and returns the actions to take and the
complete new status. One place computes status; the reconciler only writes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from curation.plan import FINALIZE, INGEST, Step
from curation.spec import PipelineSpec
from curation_operator.builders import job_name
from curation_operator.observe import JobView, PodView, rank_result, step_failure


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


TERMINAL = {Phase.SUCCEEDED, Phase.FAILED}


class StepPhase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ActionKind(StrEnum):
    CREATE_JOB = "CreateJob"
    SUSPEND_JOB = "SuspendJob"
    RESUME_JOB = "ResumeJob"
    EXPIRE_JOB = "ExpireJob"  # set ttlSecondsAfterFinished once the CurationJob has finished


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
    pods: dict[str, list[PodView]]  # by step id
    previous: dict[str, Any]  # the status as stored


@dataclass
class Decision:
    status: dict[str, Any]
    actions: list[Action] = field(default_factory=list)


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


def _problem(pods: list[PodView]) -> tuple[str, str] | None:
    """A reason a person must act on: pods that cannot be scheduled or cannot start."""
    for pod in pods:
        if pod.unschedulable and pod.phase == "Pending":
            return "Unschedulable", pod.unschedulable
    for pod in pods:
        if pod.stuck_reason:
            return pod.stuck_reason, f"pod {pod.name}: {pod.stuck_message or pod.stuck_reason}"
    return None


def step_record(world: World, position: int, step: Step) -> dict[str, Any]:
    """Status of one step, from its Job and pods; results of a finished step survive its Job's TTL."""
    job = world.jobs.get(step.id)
    pods = world.pods.get(step.id, [])
    previous = _previous_steps(world.previous).get(step.id, {})
    record: dict[str, Any] = {
        "id": step.id,
        "stage": step.stage,
        "job": job.name if job else job_name(world.name, position, step),
        "phase": StepPhase.PENDING.value,
        "ranks": step.world_size,
        "ranksDone": 0,
    }
    if job is None:
        if previous.get("phase") in (StepPhase.SUCCEEDED, StepPhase.FAILED):
            return dict(previous)
        return record
    phase = _step_phase(job, world.spec)
    results = {r.rank: r for r in (rank_result(p) for p in pods) if r is not None}
    record.update(phase=phase.value, ranksDone=max(job.succeeded, len(results)), retries=job.failed_pods)
    if job.created:
        record["startTime"] = job.created
    if (
        phase == StepPhase.SUCCEEDED
        and len(results) < step.world_size
        and previous.get("ranksDone") == step.world_size
    ):
        # pods were garbage-collected after the counts had been recorded
        for key in ("docsIn", "docsOut", "generated", "removed", "seconds"):
            if key in previous:
                record[key] = previous[key]
    else:
        record["docsIn"] = sum(r.docs_in for r in results.values())
        record["docsOut"] = sum(r.docs_out for r in results.values())
        record["generated"] = sum(r.generated for r in results.values())
        record["removed"] = _sum_removed(r.removed for r in results.values())
        record["seconds"] = round(max((r.seconds for r in results.values()), default=0.0), 3)
    if phase == StepPhase.SUCCEEDED and job.completion_time:
        record["completionTime"] = job.completion_time
    if phase == StepPhase.FAILED:
        failure = step_failure(job, sorted((p for p in pods if p.phase == "Failed"), key=lambda p: p.name))
        record["completionTime"] = job.failed_time or previous.get("completionTime")
        record["message"] = failure.message
        record["reason"] = failure.reason
    elif phase == StepPhase.RUNNING and (problem := _problem(pods)):
        record["reason"], record["message"] = problem
    return {k: v for k, v in record.items() if v is not None}


def _previous_steps(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s.get("id", ""): s for s in status.get("steps") or []}


# --------------------------------------------------------------------------- conditions


def _condition(
    kind: str,
    ok: bool,
    reason: str,
    message: str,
    generation: int,
    previous: dict[str, dict[str, Any]],
    now: str,
) -> dict[str, Any]:
    status = "True" if ok else "False"
    old = previous.get(kind, {})
    changed = old.get("status") != status
    return {
        "type": kind,
        "status": status,
        "observedGeneration": generation,
        "lastTransitionTime": now
        if changed or "lastTransitionTime" not in old
        else old["lastTransitionTime"],
        "reason": reason,
        "message": message[:32768],
    }


def conditions_for(
    phase: Phase,
    reason: str,
    message: str,
    problem: tuple[str, str] | None,
    generation: int,
    old: dict[str, Any],
    now: str,
) -> list[dict[str, Any]]:
    """The five conditions (Ready, Running, Succeeded, Failed, Suspended) for a phase.

    Ready is False only when a person must act: a failure, unschedulable or unstartable pods.
    """
    prev = {c.get("type", ""): c for c in old.get("conditions") or []}
    ready = (False, *problem) if problem else (phase != Phase.FAILED, reason, message)
    return [
        _condition("Ready", ready[0], ready[1], ready[2], generation, prev, now),
        _condition("Running", phase == Phase.RUNNING, reason, message, generation, prev, now),
        _condition("Succeeded", phase == Phase.SUCCEEDED, reason, message, generation, prev, now),
        _condition("Failed", phase == Phase.FAILED, reason, message, generation, prev, now),
        _condition("Suspended", phase == Phase.SUSPENDED, reason, message, generation, prev, now),
    ]


# --------------------------------------------------------------------------- totals


def _stage_records(steps: list[Step], records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for stage in dict.fromkeys(s.stage for s in steps if s.stage not in (INGEST, FINALIZE)):
        own = [s for s in steps if s.stage == stage]
        phases = [records[s.id]["phase"] for s in own]
        done = sum(p == StepPhase.SUCCEEDED for p in phases)
        if done == len(own):
            phase = "Succeeded"
        elif StepPhase.FAILED in phases:
            phase = "Failed"
        elif any(p != StepPhase.PENDING for p in phases):
            phase = "Running"
        else:
            phase = "Pending"
        record: dict[str, Any] = {
            "name": stage,
            "type": own[0].stage_type,
            "phase": phase,
            "stepsDone": done,
            "steps": len(own),
        }
        last = records[own[-1].id]
        if last["phase"] == StepPhase.SUCCEEDED:
            for key in ("docsIn", "docsOut", "generated", "removed"):
                if key in last:
                    record[key] = last[key]
        out.append(record)
    return out


def _totals(
    steps: list[Step], records: dict[str, dict[str, Any]], stages: list[dict[str, Any]]
) -> dict[str, Any]:
    ingest = records.get(steps[0].id, {})
    if ingest.get("phase") != StepPhase.SUCCEEDED:
        return {}
    docs_in = int(ingest.get("docsIn", 0))
    finished = [s for s in stages if s["phase"] == "Succeeded"]
    docs_out = int(finished[-1]["docsOut"]) if finished else int(ingest.get("docsOut", docs_in))
    removed = sum(ingest.get("removed", {}).values()) + sum(
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


@dataclass
class _Outcome:
    phase: Phase
    reason: str
    message: str
    problem: tuple[str, str] | None = None


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


def decide(world: World, now: str) -> Decision:
    """Walk the plan in order: finished steps are skipped, the first unfinished one is acted on."""
    steps, old = world.steps, world.previous
    if old.get("phase") in TERMINAL:
        return _finished(world, now)
    records = {s.id: step_record(world, i, s) for i, s in enumerate(steps)}
    actions: list[Action] = []
    outcome = _Outcome(Phase.SUCCEEDED, "Completed", "")
    current: Step | None = None
    for position, step in enumerate(steps):
        if records[step.id]["phase"] != StepPhase.SUCCEEDED:
            current = step
            outcome = _act_on(world, step, position, records[step.id], now, actions)
            break
    phase, reason, message, problem = outcome.phase, outcome.reason, outcome.message, outcome.problem
    stages = _stage_records(steps, records)
    totals = _totals(steps, records, stages)
    if phase == Phase.SUCCEEDED:
        message = f"{totals.get('docsIn', 0)} documents in, {totals.get('docsOut', 0)} kept ({totals.get('keptPercent', 0.0)}%)"
    done = sum(r["phase"] == StepPhase.SUCCEEDED for r in records.values())
    status: dict[str, Any] = {
        "phase": phase.value,
        "observedGeneration": world.generation,
        "conditions": conditions_for(phase, reason, message, problem, world.generation, old, now),
        "currentStage": (current or steps[-1]).stage,
        "currentStep": (current or steps[-1]).id,
        "progress": f"{done}/{len(steps)}",
        "stepsDone": done,
        "stepsTotal": len(steps),
        **totals,
        "message": message,
        "stages": stages,
        "steps": [records[s.id] for s in steps],
    }
    starts = [r["startTime"] for r in records.values() if r.get("startTime")]
    if old.get("startTime") or starts:
        status["startTime"] = old.get("startTime") or min(starts)
    if phase in TERMINAL:
        ends = [r["completionTime"] for r in records.values() if r.get("completionTime")]
        status["completionTime"] = max(ends) if ends else now
        actions += _expire(world)
    return Decision(status=status, actions=actions)


def _expire(world: World) -> list[Action]:
    return [
        Action(ActionKind.EXPIRE_JOB, sid, job.name)
        for sid, job in world.jobs.items()
        if job.ttl_seconds is None
    ]


def _finished(world: World, now: str) -> Decision:
    """A finished CurationJob keeps its status (its Jobs may already be gone); only TTLs are set."""
    status = dict(world.previous)
    status.setdefault("completionTime", now)
    status["observedGeneration"] = world.generation  # e.g. `suspend` toggled after the end: nothing to do
    return Decision(status=status, actions=_expire(world))


def invalid_spec_status(previous: dict[str, Any], generation: int, message: str, now: str) -> dict[str, Any]:
    """Status of a CurationJob whose spec the API server accepted but the pipeline model refuses."""
    return {
        "phase": Phase.FAILED.value,
        "observedGeneration": generation,
        "conditions": conditions_for(Phase.FAILED, "InvalidSpec", message, None, generation, previous, now),
        "message": message,
        "completionTime": previous.get("completionTime") or now,
    }


def needs_restart(previous: dict[str, Any], generation: int) -> bool:
    """A job refused for an invalid spec starts over once its spec was fixed (a new generation)."""
    failed = {c.get("type"): c for c in previous.get("conditions") or []}.get("Failed", {})
    return (
        previous.get("phase") == Phase.FAILED
        and failed.get("reason") == "InvalidSpec"
        and previous.get("observedGeneration") != generation
    )
