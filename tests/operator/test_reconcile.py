"""The reconciler against an in-memory API server: adopts, advances, writes status and events once."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from curation.plan import plan_steps
from curation.spec import parse_spec
from curation_operator.reconcile import InvalidSpec, Reconciler, merge_patch
from curation_operator.settings import OperatorSettings

NS, NAME = "team-a", "qs"


class FakeKube:
    """Just enough of the API server for the reconciler; each call is recorded."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.cj: dict[str, Any] | None = {
            "apiVersion": "thresher.dev/v1alpha1",
            "kind": "CurationJob",
            "metadata": {"name": NAME, "namespace": NS, "uid": "uid-1", "generation": 1},
            "spec": spec,
        }
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.events: list[Any] = []
        self.configmaps: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []

    def get_curation_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.cj)

    def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        assert self.cj is not None
        self.calls.append("patch_status")
        status = self.cj.setdefault("status", {})
        _apply_merge(status, patch)

    def list_jobs(self, namespace: str, parent: str) -> list[dict[str, Any]]:
        return copy.deepcopy(list(self.jobs.values()))

    def list_pods(self, namespace: str, parent: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.pods)

    def create_job(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        name = body["metadata"]["name"]
        self.calls.append(f"create_job {name}")
        if name in self.jobs:
            return self.jobs[name], False
        body = copy.deepcopy(body)
        body["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
        body["status"] = {}
        self.jobs[name] = body
        return body, True

    def patch_job(self, namespace: str, name: str, spec_patch: dict[str, Any]) -> None:
        self.calls.append(f"patch_job {name} {json.dumps(spec_patch, sort_keys=True)}")
        self.jobs[name]["spec"].update(spec_patch)

    def ensure_configmap(self, body: dict[str, Any]) -> None:
        self.configmaps[body["metadata"]["name"]] = body

    def ensure_service_account(self, namespace: str, name: str) -> None:
        self.calls.append(f"ensure_service_account {name}")

    def post_event(self, parent: dict[str, Any], event: Any) -> None:
        self.events.append(event)

    # ---- what the Job controller and the workers would do
    def finish_jobs(self, docs_out: int = 5) -> None:
        for name, job in self.jobs.items():
            if job.get("status", {}).get("conditions"):
                continue
            ranks = job["spec"]["completions"]
            job["status"] = {
                "succeeded": ranks,
                "completionTime": "2026-01-01T00:00:30Z",
                "conditions": [{"type": "Complete", "status": "True"}],
            }
            step_id = job["metadata"]["annotations"]["thresher.dev/step-id"]
            for rank in range(ranks):
                stats = {
                    "rank": rank,
                    "docs_in": 6,
                    "docs_out": docs_out,
                    "removed": {"exact-duplicate": 6 - docs_out},
                }
                self.pods.append(
                    {
                        "metadata": {
                            "name": f"{name}-{rank}",
                            "annotations": {
                                "thresher.dev/step-id": step_id,
                                "batch.kubernetes.io/job-completion-index": str(rank),
                            },
                            "labels": {"batch.kubernetes.io/job-name": name},
                        },
                        "status": {
                            "phase": "Succeeded",
                            "containerStatuses": [
                                {
                                    "name": "worker",
                                    "state": {"terminated": {"exitCode": 0, "message": json.dumps(stats)}},
                                }
                            ],
                        },
                    }
                )


def _apply_merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _apply_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


SPEC = {
    "input": {"path": "in", "pvc": "data"},
    "output": {"path": "out", "pvc": "data"},
    "parallelism": 2,
    "stages": [{"type": "heuristic-filter"}],
}


def reconciler(kube: FakeKube) -> Reconciler:
    return Reconciler(kube, OperatorSettings(), clock=lambda: "2026-01-01T00:00:10Z")  # type: ignore[arg-type]


def test_merge_patch_nulls_removed_keys_and_keeps_unchanged_ones_out():
    old = {"a": 1, "b": {"c": 2, "d": 3}, "gone": True}
    new = {"a": 1, "b": {"c": 2, "d": 4}, "list": [1]}
    assert merge_patch(old, new) == {"gone": None, "b": {"d": 4}, "list": [1]}


def test_reconciling_step_by_step_runs_the_whole_plan_once():
    kube = FakeKube(SPEC)
    total = len(plan_steps(parse_spec(SPEC)))
    for _ in range(total):
        assert reconciler(kube).reconcile(NS, NAME) == "Running"
        kube.finish_jobs()
    assert reconciler(kube).reconcile(NS, NAME) == "Succeeded"
    assert len([c for c in kube.calls if c.startswith("create_job")]) == total
    assert len(kube.jobs) == total
    status = kube.cj["status"]
    assert (status["docsIn"], status["docsOut"], status["stepsDone"]) == (12, 10, total)
    reasons = [e.reason for e in kube.events]
    assert reasons.count("StepStarted") == total and reasons.count("StepSucceeded") == total
    assert reasons[-1] == "Succeeded"
    # the finished Jobs are handed to the TTL controller exactly once
    ttl_patches = [c for c in kube.calls if "ttlSecondsAfterFinished" in c]
    assert len(ttl_patches) == total
    reconciler(kube).reconcile(NS, NAME)
    assert len([c for c in kube.calls if "ttlSecondsAfterFinished" in c]) == total


def test_a_restarted_operator_adopts_the_running_job_instead_of_creating_a_twin():
    kube = FakeKube(SPEC)
    reconciler(kube).reconcile(NS, NAME)
    events_before = len(kube.events)
    fresh = reconciler(kube)  # a new process: nothing in memory
    fresh.reconcile(NS, NAME)
    fresh.reconcile(NS, NAME)
    assert len(kube.jobs) == 1
    assert [c for c in kube.calls if c.startswith("create_job")] == ["create_job qs-00-ingest-read"]
    assert len(kube.events) == events_before, "no event is repeated"


def test_status_is_written_only_when_it_changes():
    kube = FakeKube(SPEC)
    r = reconciler(kube)
    r.reconcile(NS, NAME)  # creates the first Job
    r.reconcile(NS, NAME)  # sees it
    writes = kube.calls.count("patch_status")
    r.reconcile(NS, NAME)
    r.reconcile(NS, NAME)
    assert kube.calls.count("patch_status") == writes


def test_spec_config_map_and_worker_service_account_exist_before_the_first_job():
    kube = FakeKube(SPEC)
    reconciler(kube).reconcile(NS, NAME)
    assert "qs-spec" in kube.configmaps
    assert kube.calls.index("ensure_service_account thresher-worker") < kube.calls.index(
        "create_job qs-00-ingest-read"
    )


def test_an_invalid_spec_fails_with_a_warning_event_and_creates_nothing():
    kube = FakeKube(
        {**SPEC, "stages": [{"type": "minhash-dedup", "params": {"bands": 256, "rowsPerBand": 64}}]}
    )
    with pytest.raises(InvalidSpec, match="4096"):
        reconciler(kube).reconcile(NS, NAME)
    assert kube.cj["status"]["phase"] == "Failed"
    assert [(e.type, e.reason) for e in kube.events] == [("Warning", "InvalidSpec")]
    assert kube.jobs == {}
    with pytest.raises(InvalidSpec):
        reconciler(kube).reconcile(NS, NAME)
    assert len(kube.events) == 1, "the same failure is reported once"


def test_suspend_and_resume_patch_the_current_job():
    kube = FakeKube(SPEC)
    reconciler(kube).reconcile(NS, NAME)
    kube.cj["spec"]["suspend"] = True
    assert reconciler(kube).reconcile(NS, NAME) == "Suspended"
    assert kube.jobs["qs-00-ingest-read"]["spec"]["suspend"] is True
    kube.cj["spec"]["suspend"] = False
    assert reconciler(kube).reconcile(NS, NAME) == "Running"
    assert kube.jobs["qs-00-ingest-read"]["spec"]["suspend"] is False
    assert [e.reason for e in kube.events if e.reason in ("Suspended", "Resumed")] == ["Suspended", "Resumed"]


def test_a_deleted_curation_job_is_left_to_the_garbage_collector():
    kube = FakeKube(SPEC)
    kube.cj = None
    assert reconciler(kube).reconcile(NS, NAME) is None
    assert kube.calls == []
