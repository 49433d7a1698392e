"""The state machine: next actions and status, decided from what exists in the cluster."""

from __future__ import annotations

import json

from curation.plan import plan_steps
from curation_operator.builders import KUEUE_QUEUE_LABEL, job_name
from curation_operator.observe import job_view, pod_view
from curation_operator.state import ActionKind, Phase, World, decide, invalid_spec_status, needs_restart

from .fakes import T0, UID, job, pod, quick_spec

NOW = "2026-01-01T01:00:00Z"


def world(spec=None, jobs=(), pods=(), previous=None, generation=1):
    spec = spec or quick_spec()
    views = [job_view(j) for j in jobs]
    pod_views = {}
    for p in pods:
        v = pod_view(p)
        pod_views.setdefault(v.step_id, []).append(v)
    return World(
        name="qs",
        generation=generation,
        spec=spec,
        steps=plan_steps(spec),
        jobs={v.step_id: v for v in views if v.owner_uid == UID},
        pods=pod_views,
        previous=previous or {},
    )


def conditions(status):
    return {c["type"]: c for c in status["conditions"]}


def completed_steps(spec, upto, docs=None):
    """Jobs and pods of the first `upto` steps, all complete; docs: step id -> per-rank stats."""
    jobs, pods = [], []
    for i, step in enumerate(plan_steps(spec)[:upto]):
        name = job_name("qs", i, step)
        jobs.append(job(step.id, name, complete=True, succeeded=step.world_size))
        for r in range(step.world_size):
            stats = (docs or {}).get(step.id, {"rank": r, "docs_in": 10, "docs_out": 10})
            pods.append(pod(step.id, r, stats={**stats, "rank": r}, job_name=name))
    return jobs, pods


def test_a_new_job_creates_the_first_step_and_runs():
    decision = decide(world(), NOW)
    assert [(a.kind, a.step_id, a.job) for a in decision.actions] == [
        (ActionKind.CREATE_JOB, "ingest.read", "qs-00-ingest-read")
    ]
    status = decision.status
    assert status["phase"] == Phase.RUNNING
    assert (
        status["progress"] == f"0/{len(plan_steps(quick_spec()))}" and status["currentStep"] == "ingest.read"
    )
    assert conditions(status)["Running"]["status"] == "True"
    assert conditions(status)["Ready"]["status"] == "True"
    assert status["steps"][0]["phase"] == "Running"


def test_an_existing_job_is_adopted_not_created_again():
    decision = decide(world(jobs=[job("ingest.read", "qs-00-ingest-read", active=2)]), NOW)
    assert decision.actions == []
    assert decision.status["phase"] == Phase.RUNNING


def test_jobs_owned_by_another_curation_job_are_ignored():
    stale = job("ingest.read", "qs-00-ingest-read", complete=True, owner="old-uid")
    decision = decide(world(jobs=[stale]), NOW)
    assert decision.actions[0].kind == ActionKind.CREATE_JOB


def test_a_finished_step_starts_the_next_one_with_its_counts_in_status():
    spec = quick_spec()
    jobs, pods = completed_steps(spec, 1, {"ingest.read": {"docs_in": 50, "docs_out": 50, "removed": {}}})
    decision = decide(world(spec, jobs, pods), NOW)
    assert [a.step_id for a in decision.actions] == ["exact-dedup.hash"]
    ingest = decision.status["steps"][0]
    assert ingest["phase"] == "Succeeded" and ingest["ranksDone"] == 2
    assert (ingest["docsIn"], ingest["docsOut"]) == (100, 100)
    assert decision.status["progress"] == f"1/{len(plan_steps(spec))}"
    assert decision.status["docsIn"] == 100


def test_all_steps_done_means_succeeded_with_totals_and_kept_percent():
    spec = quick_spec()
    docs = {
        "ingest.read": {"docs_in": 50, "docs_out": 50},
        "exact-dedup.filter": {"docs_in": 50, "docs_out": 40, "removed": {"exact-duplicate": 10}},
        "heuristic-filter.filter": {
            "docs_in": 40,
            "docs_out": 30,
            "removed": {"gopher-quality:min-words": 10},
        },
    }
    jobs, pods = completed_steps(spec, len(plan_steps(spec)), docs)
    decision = decide(world(spec, jobs, pods), NOW)
    status = decision.status
    assert status["phase"] == Phase.SUCCEEDED
    assert (status["docsIn"], status["docsOut"], status["docsRemoved"]) == (100, 60, 40)
    assert status["keptPercent"] == 60.0
    assert conditions(status)["Succeeded"]["status"] == "True"
    stages = {s["name"]: s for s in status["stages"]}
    assert stages["exact-dedup"]["removed"] == {"exact-duplicate": 20}
    assert stages["heuristic-filter"]["docsOut"] == 60
    assert status["completionTime"] == "2026-01-01T00:01:00Z"
    # the Jobs are handed to the TTL controller once the CurationJob finished
    assert {a.kind for a in decision.actions} == {ActionKind.EXPIRE_JOB}
    assert len(decision.actions) == len(plan_steps(spec))


def test_a_finished_job_keeps_its_status_after_its_jobs_expired():
    spec = quick_spec()
    jobs, pods = completed_steps(spec, len(plan_steps(spec)))
    done = decide(world(spec, jobs, pods), NOW).status
    later = decide(world(spec, [], [], previous=done), "2026-01-02T00:00:00Z")
    assert later.status == done and later.actions == []


def test_a_failed_step_fails_the_job_with_the_workers_message():
    spec = quick_spec()
    jobs, pods = completed_steps(spec, 1)
    name = job_name("qs", 1, plan_steps(spec)[1])
    jobs.append(job("exact-dedup.hash", name, failed="PodFailurePolicy", failed_message="exit code 2"))
    error = json.dumps({"error": "models/x: no such model directory", "reason": "ModelNotFound"})
    pods.append(pod("exact-dedup.hash", 0, "Failed", message=error, exit_code=2, job_name=name))
    status = decide(world(spec, jobs, pods), NOW).status
    assert status["phase"] == Phase.FAILED
    failed = conditions(status)["Failed"]
    assert failed["status"] == "True" and failed["reason"] == "ModelNotFound"
    assert "models/x: no such model directory" in failed["message"]
    assert conditions(status)["Ready"]["status"] == "False"


def test_a_crash_that_exhausts_retries_reports_the_last_log_line():
    spec = quick_spec()
    name = "qs-00-ingest-read"
    jobs = [job("ingest.read", name, failed="FailedIndexes", failed_pods=4)]
    pods = [
        pod(
            "ingest.read",
            0,
            "Failed",
            message="Traceback ...\nMemoryError: out of memory",
            exit_code=137,
            job_name=name,
        )
    ]
    status = decide(world(spec, jobs, pods), NOW).status
    failed = conditions(status)["Failed"]
    assert failed["reason"] == "RetriesExhausted"
    assert "MemoryError: out of memory" in failed["message"] and "exit code 137" in failed["message"]


def test_unschedulable_pods_make_ready_false_with_the_schedulers_reason():
    message = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    jobs = [job("ingest.read", "qs-00-ingest-read", active=2)]
    pods = [pod("ingest.read", 0, "Pending", unschedulable=message, job_name="qs-00-ingest-read")]
    status = decide(world(jobs=jobs, pods=pods), NOW).status
    ready = conditions(status)["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "Unschedulable"
    assert message in ready["message"]
    assert status["phase"] == Phase.RUNNING


def test_image_pull_failures_are_reported():
    jobs = [job("ingest.read", "qs-00-ingest-read", active=1)]
    pods = [pod("ingest.read", 0, "Pending", waiting="ImagePullBackOff")]
    ready = conditions(decide(world(jobs=jobs, pods=pods), NOW).status)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ImagePullBackOff")


def test_suspend_suspends_the_running_step_job_and_resume_resumes_it():
    running = [job("ingest.read", "qs-00-ingest-read", active=2)]
    decision = decide(world(quick_spec(suspend=True), jobs=running), NOW)
    assert [(a.kind, a.job) for a in decision.actions] == [(ActionKind.SUSPEND_JOB, "qs-00-ingest-read")]
    assert decision.status["phase"] == Phase.SUSPENDED
    assert conditions(decision.status)["Suspended"]["status"] == "True"
    suspended = [job("ingest.read", "qs-00-ingest-read", suspended=True)]
    assert decide(world(quick_spec(suspend=True), jobs=suspended), NOW).actions == []
    resumed = decide(world(quick_spec(), jobs=suspended), NOW)
    assert [(a.kind, a.job) for a in resumed.actions] == [(ActionKind.RESUME_JOB, "qs-00-ingest-read")]
    assert resumed.status["phase"] == Phase.RUNNING


def test_a_suspended_job_creates_no_next_step():
    spec = quick_spec(suspend=True)
    jobs, pods = completed_steps(spec, 1)
    decision = decide(world(spec, jobs, pods), NOW)
    assert decision.actions == [] and decision.status["phase"] == Phase.SUSPENDED


def test_a_kueue_suspended_job_is_queued_not_failed_nor_resumed():
    spec = quick_spec(queueName="team-queue")
    queued = [
        job("ingest.read", "qs-00-ingest-read", suspended=True, labels={KUEUE_QUEUE_LABEL: "team-queue"})
    ]
    decision = decide(world(spec, jobs=queued), NOW)
    assert decision.actions == []
    assert decision.status["phase"] == Phase.PENDING
    assert conditions(decision.status)["Running"]["reason"] == "Queued"
    assert conditions(decision.status)["Ready"]["status"] == "True"


def test_retries_are_counted_per_step():
    jobs = [job("ingest.read", "qs-00-ingest-read", active=1, succeeded=1, failed_pods=2)]
    status = decide(world(jobs=jobs), NOW).status
    assert status["steps"][0]["retries"] == 2 and status["steps"][0]["ranksDone"] == 1


def test_condition_transition_times_only_move_when_the_status_changes():
    first = decide(world(), NOW).status
    jobs = [job("ingest.read", "qs-00-ingest-read", active=2)]
    second = decide(world(jobs=jobs, previous=first), "2026-01-01T02:00:00Z").status
    assert conditions(second)["Running"]["lastTransitionTime"] == NOW
    assert second["startTime"] == first["startTime"]


def test_counts_survive_garbage_collected_pods_of_a_finished_step():
    spec = quick_spec()
    jobs, pods = completed_steps(spec, 1, {"ingest.read": {"docs_in": 7, "docs_out": 7}})
    first = decide(world(spec, jobs, pods), NOW).status
    again = decide(world(spec, jobs, [], previous=first), NOW).status
    assert again["steps"][0]["docsOut"] == 14


def test_an_invalid_spec_is_a_failed_condition_that_a_fixed_spec_restarts():
    status = invalid_spec_status({}, 1, "spec.stages[0].params.bands: too many", T0)
    failed = conditions(status)["Failed"]
    assert status["phase"] == Phase.FAILED and failed["reason"] == "InvalidSpec"
    assert not needs_restart(status, 1)
    assert needs_restart(status, 2)
