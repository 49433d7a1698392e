"""Kubernetes events for a CurationJob, derived from the change between two statuses.

Deriving events from the stored status (not from memory) means a restarted operator neither
repeats old events nor needs to remember which ones it sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from curation_operator.state import Action, ActionKind, Phase, StepPhase

NORMAL = "Normal"
WARNING = "Warning"
PROBLEM_REASONS_OK = {
    "NoProblems",
    "Progressing",
    "StepRunning",
    "Completed",
    "Queued",
    "SuspendedByUser",
    "StepRestarting",
}


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


def _steps(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s.get("id", ""): s for s in status.get("steps") or []}


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = {c.get("type"): c for c in status.get("conditions") or []}.get(kind, {})
    return found


def _counts(step: dict[str, Any]) -> str:
    removed = step.get("removed") or {}
    parts = [f"{step.get('docsIn', 0)} in", f"{step.get('docsOut', 0)} out"]
    if removed:
        parts.append("removed " + ", ".join(f"{k}={v}" for k, v in removed.items()))
    if step.get("generated"):
        parts.append(f"generated {step['generated']}")
    return f"{', '.join(parts)} in {step.get('seconds', 0)}s"


def events_for(old: dict[str, Any], new: dict[str, Any], actions: list[Action]) -> list[Event]:
    events: list[Event] = []
    new_steps = _steps(new)
    for action in actions:
        step = new_steps.get(action.step_id, {})
        if action.kind == ActionKind.CREATE_JOB:
            events.append(
                Event(
                    NORMAL,
                    "StepStarted",
                    f"created Job {action.job} for step {action.step_id} ({step.get('ranks', '?')} ranks)",
                )
            )
        elif action.kind == ActionKind.RESUME_JOB:
            events.append(Event(NORMAL, "Resumed", f"resumed Job {action.job} of step {action.step_id}"))
        elif action.kind == ActionKind.SUSPEND_JOB:
            events.append(Event(NORMAL, "Suspended", f"suspended Job {action.job} of step {action.step_id}"))
    old_steps = _steps(old)
    for sid, step in new_steps.items():
        before = old_steps.get(sid, {})
        if step.get("phase") == StepPhase.SUCCEEDED and before.get("phase") != StepPhase.SUCCEEDED:
            events.append(Event(NORMAL, "StepSucceeded", f"step {sid}: {_counts(step)}"))
        if (
            int(step.get("retries", 0)) > int(before.get("retries", 0))
            and step.get("phase") != StepPhase.FAILED
        ):
            n = int(step["retries"]) - int(before.get("retries", 0))
            events.append(
                Event(
                    WARNING, "RankRetried", f"step {sid}: {n} failed pod(s), retrying (Job {step.get('job')})"
                )
            )
    ready, ready_before = _condition(new, "Ready"), _condition(old, "Ready")
    if (
        ready.get("status") == "False"
        and ready.get("reason") not in PROBLEM_REASONS_OK
        and new.get("phase") != Phase.FAILED
        and (ready_before.get("status") != "False" or ready_before.get("message") != ready.get("message"))
    ):
        events.append(Event(WARNING, ready.get("reason", "NotReady"), ready.get("message", "")))
    phase, before_phase = new.get("phase"), old.get("phase")
    if phase != before_phase:
        if phase == Phase.SUCCEEDED:
            events.append(Event(NORMAL, "Succeeded", new.get("message", "")))
        elif phase == Phase.FAILED:
            reason = _condition(new, "Failed").get("reason") or "Failed"
            events.append(Event(WARNING, reason, new.get("message", "")))
        elif phase == Phase.PENDING and _condition(new, "Running").get("reason") == "Queued":
            events.append(Event(NORMAL, "Queued", new.get("message", "")))
    return events
