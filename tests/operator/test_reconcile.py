"""The reconciler against an in-memory API server: adopts, advances, writes status and events once.

The fake API server stores the status as a real one does: pruned to the CRD's status schema.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from curation.crd import build_crd
from curation.plan import plan_steps
from curation.spec import parse_spec
from curation_operator.reconcile import InvalidSpec, Reconciler, merge_patch
from curation_operator.settings import OperatorSettings

from .fakes import prune

STATUS_SCHEMA = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]

NS, NAME = "team-a", "qs"


class FakeKube:
    """Just enough of the API server for the reconciler; each call is recorded."""

    def __init__(self, spec: dict[str, Any], status_schema: dict[str, Any] = STATUS_SCHEMA) -> None:
        self.status_schema = status_schema
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
        self.pod_lists: list[str] = []  # the step of each list_pods call
        self.deleted: list[str] = []
        self.fail_next_delete = False

    def get_curation_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.cj)

    def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        assert self.cj is not None
        self.calls.append("patch_status")
        status = self.cj.setdefault("status", {})
        _apply_merge(status, patch)
        self.cj["status"] = prune(status, self.status_schema)  # as the API server stores it

    def list_jobs(self, namespace: str, parent: str) -> list[dict[str, Any]]:
        return copy.deepcopy(list(self.jobs.values()))

    def list_pods(self, namespace: str, parent: str, step_id: str) -> list[dict[str, Any]]:
        self.pod_lists.append(step_id)
        return copy.deepcopy(
            [p for p in self.pods if p["metadata"]["labels"]["thresher.dev/step"] == step_id]
        )

    def delete_job(self, namespace: str, name: str) -> None:
        self.calls.append(f"delete_job {name}")
        if self.fail_next_delete:
            self.fail_next_delete = False
            raise OSError("connection reset")
        step_id = self.jobs[name]["metadata"]["annotations"]["thresher.dev/step-id"]
        recorded = {s["id"]: s for s in (self.cj or {}).get("status", {}).get("steps", [])}[step_id]
        assert recorded["phase"] in ("Succeeded", "Failed"), "a Job goes only once its step is in the status"
        del self.jobs[name]
        self.pods = [p for p in self.pods if p["metadata"]["labels"]["batch.kubernetes.io/job-name"] != name]
        self.deleted.append(name)

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
                            "labels": {"batch.kubernetes.io/job-name": name, "thresher.dev/step": step_id},
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


def creates(kube: FakeKube) -> list[str]:
    return [c.split()[1] for c in kube.calls if c.startswith("create_job")]


def test_reconciling_step_by_step_runs_the_whole_plan_once():
    kube = FakeKube(SPEC)
    total = len(plan_steps(parse_spec(SPEC)))
    for _ in range(total):
        assert reconciler(kube).reconcile(NS, NAME) == "Running"
        kube.finish_jobs()
    assert reconciler(kube).reconcile(NS, NAME) == "Succeeded"
    assert len(creates(kube)) == len(set(creates(kube))) == total
    status = kube.cj["status"]
    assert (status["docsIn"], status["docsOut"], status["stepsDone"]) == (12, 10, total)
    assert all(s["phase"] == "Succeeded" for s in status["steps"])
    reasons = [e.reason for e in kube.events]
    assert reasons.count("StepStarted") == total and reasons.count("StepSucceeded") == total
    assert reasons[-1] == "Succeeded"
    # every finished step's Job was deleted once its counts were in the status: none is left
    assert kube.jobs == {} and kube.pods == []
    assert sorted(kube.deleted) == sorted(creates(kube))
    reconciler(kube).reconcile(NS, NAME)
    assert len(kube.deleted) == total and len(creates(kube)) == total


def test_a_reconcile_reads_only_the_pods_of_the_steps_without_recorded_results():
    kube = FakeKube({**SPEC, "parallelism": 3})
    steps = [s.id for s in plan_steps(parse_spec(kube.cj["spec"]))]
    for position in range(len(steps)):
        kube.pod_lists.clear()
        reconciler(kube).reconcile(NS, NAME)
        # the step that just finished (its counts are recorded now) and the step just created
        assert kube.pod_lists == steps[max(0, position - 1) : position], kube.pod_lists
        kube.finish_jobs()
    kube.pod_lists.clear()
    assert reconciler(kube).reconcile(NS, NAME) == "Succeeded"
    assert kube.pod_lists == steps[-1:]
    kube.pod_lists.clear()
    reconciler(kube).reconcile(NS, NAME)
    assert kube.pod_lists == []


def test_a_restarted_operator_never_reruns_a_step_whose_job_is_already_deleted():
    kube = FakeKube(SPEC)
    total = len(plan_steps(parse_spec(SPEC)))
    for _ in range(total // 2):
        reconciler(kube).reconcile(NS, NAME)
        kube.finish_jobs()
    kube.fail_next_delete = True  # the operator dies between writing the counts and deleting the Job
    with pytest.raises(OSError):
        reconciler(kube).reconcile(NS, NAME)
    for _ in range(total):
        reconciler(kube).reconcile(NS, NAME)  # a new process each time: nothing in memory
        kube.finish_jobs()
    assert reconciler(kube).reconcile(NS, NAME) == "Succeeded"
    assert len(creates(kube)) == len(set(creates(kube))) == total
    assert kube.jobs == {}
    assert kube.cj["status"]["docsIn"] == 12


def test_a_second_reconcile_of_an_unchanged_world_writes_no_status():
    """Every field the operator writes survives the API server's pruning, so nothing differs."""
    kube = FakeKube({**SPEC, "stages": [{"type": "semantic-dedup", "resources": {"gpus": 2}}]})
    r = reconciler(kube)
    for _ in range(len(plan_steps(parse_spec(kube.cj["spec"])))):
        r.reconcile(NS, NAME)  # records the finished step, creates the next Job
        r.reconcile(NS, NAME)  # sees the new Job
        writes = kube.calls.count("patch_status")
        r.reconcile(NS, NAME)
        assert kube.calls.count("patch_status") == writes, kube.cj["status"]
        if "semantic-dedup.embed" in kube.cj["status"]["currentStep"]:
            break
        kube.finish_jobs()
    # the GPU step's pods cannot be scheduled: a problem with a reason on the step
    name = next(
        n
        for n, j in kube.jobs.items()
        if j["metadata"]["annotations"]["thresher.dev/step-id"] == "semantic-dedup.embed"
    )
    kube.pods.append(
        {
            "metadata": {
                "name": f"{name}-0",
                "annotations": {
                    "thresher.dev/step-id": "semantic-dedup.embed",
                    "batch.kubernetes.io/job-completion-index": "0",
                },
                "labels": {"batch.kubernetes.io/job-name": name, "thresher.dev/step": "semantic-dedup.embed"},
            },
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
            },
        }
    )
    r.reconcile(NS, NAME)
    step = next(s for s in kube.cj["status"]["steps"] if s["id"] == "semantic-dedup.embed")
    assert step["reason"] == "Unschedulable", "the stored status keeps the step's reason"
    writes = kube.calls.count("patch_status")
    r.reconcile(NS, NAME)
    r.reconcile(NS, NAME)
    assert kube.calls.count("patch_status") == writes


def test_gpus_on_a_cpu_only_stage_are_refused_not_ignored():
    kube = FakeKube({**SPEC, "stages": [{"type": "exact-dedup", "resources": {"gpus": 8}}]})
    with pytest.raises(
        InvalidSpec, match=r"spec.stages\[0\].resources.gpus: stage type exact-dedup runs on CPU only"
    ):
        reconciler(kube).reconcile(NS, NAME)
    failed = {c["type"]: c for c in kube.cj["status"]["conditions"]}["Failed"]
    assert failed["reason"] == "InvalidSpec" and "remove `gpus`" in failed["message"]
    assert kube.jobs == {}


def test_gpus_for_the_engine_steps_are_refused():
    kube = FakeKube({**SPEC, "engineResources": {"gpus": 1}})
    with pytest.raises(InvalidSpec, match="engineResources.gpus: ingest and finalize run on CPU only"):
        reconciler(kube).reconcile(NS, NAME)
    assert kube.jobs == {}


def test_a_restarted_operator_adopts_the_running_job_instead_of_creating_a_twin():
    kube = FakeKube(SPEC)
    reconciler(kube).reconcile(NS, NAME)
    events_before = len(kube.events)
    fresh = reconciler(kube)  # a new process: nothing in memory
    fresh.reconcile(NS, NAME)
    fresh.reconcile(NS, NAME)
    assert len(kube.jobs) == 1
    assert creates(kube) == ["qs-00-ingest-read"]
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
