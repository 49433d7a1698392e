"""The state machine: next actions and status, decided from what exists in the cluster.

The tests are written against whatever `plan_steps` plans (ingest and finalize may have several
steps); they name steps by id and find their positions in the plan.
"""

from __future__ import annotations

import json

from curation.plan import plan_steps
from curation_operator.builders import KUEUE_QUEUE_LABEL, job_name
from curation_operator.observe import job_view, pod_view
from curation_operator.state import (
    AFTER_STATUS,
    ActionKind,
    Phase,
    World,
    decide,
    invalid_spec_status,
    needs_restart,
    steps_to_observe,
)

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


def position_of(spec, step_id):
    return [s.id for s in plan_steps(spec)].index(step_id)


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


def running_step(spec, step_id, **job_fields):
    """Everything before `step_id` recorded as done in the previous status, `step_id`'s Job running."""
    position = position_of(spec, step_id)
    jobs, pods = completed_steps(spec, position)
    previous = decide(world(spec, jobs, pods), NOW).status
    step = plan_steps(spec)[position]
    name = job_name("qs", position, step)
    return previous, job(step_id, name, **{"active": step.world_size, **job_fields}), name


def test_a_new_job_creates_the_first_step_and_runs():
    spec = quick_spec()
    first = plan_steps(spec)[0]
    decision = decide(world(), NOW)
    assert [(a.kind, a.step_id, a.job) for a in decision.actions] == [
        (ActionKind.CREATE_JOB, first.id, job_name("qs", 0, first))
    ]
    status = decision.status
    assert status["phase"] == Phase.RUNNING
    assert status["progress"] == f"0/{len(plan_steps(spec))}" and status["currentStep"] == first.id
    assert conditions(status)["Running"]["status"] == "True"
    assert conditions(status)["Ready"]["status"] == "True"
    assert status["steps"][0]["phase"] == "Running"


def test_an_existing_job_is_adopted_not_created_again():
    first = plan_steps(quick_spec())[0]
    decision = decide(world(jobs=[job(first.id, "qs-00-x", active=2)]), NOW)
    assert decision.actions == []
    assert decision.status["phase"] == Phase.RUNNING


def test_jobs_owned_by_another_curation_job_are_ignored():
    first = plan_steps(quick_spec())[0]
    stale = job(first.id, "qs-00-x", complete=True, owner="old-uid")
    decision = decide(world(jobs=[stale]), NOW)
    assert decision.actions[0].kind == ActionKind.CREATE_JOB


def test_a_finished_step_starts_the_next_one_with_its_counts_in_status():
    spec = quick_spec()
    first, second = plan_steps(spec)[:2]
    jobs, pods = completed_steps(spec, 1, {first.id: {"docs_in": 50, "docs_out": 50, "removed": {}}})
    decision = decide(world(spec, jobs, pods), NOW)
    assert [(a.kind, a.step_id) for a in decision.actions if a.kind == ActionKind.CREATE_JOB] == [
        (ActionKind.CREATE_JOB, second.id)
    ]
    recorded = decision.status["steps"][0]
    assert recorded["phase"] == "Succeeded" and recorded["ranksDone"] == first.world_size
    assert (recorded["docsIn"], recorded["docsOut"]) == (50 * first.world_size, 50 * first.world_size)
    assert decision.status["progress"] == f"1/{len(plan_steps(spec))}"
    assert decision.status["docsIn"] == 50 * first.world_size


def test_a_finished_steps_job_is_deleted_once_its_counts_are_in_the_status():
    spec = quick_spec()
    first = plan_steps(spec)[0]
    jobs, pods = completed_steps(spec, 1)
    decision = decide(world(spec, jobs, pods), NOW)
    deletes = [a for a in decision.actions if a.kind == ActionKind.DELETE_JOB]
    assert [(a.step_id, a.job) for a in deletes] == [(first.id, job_name("qs", 0, first))]
    assert ActionKind.DELETE_JOB in AFTER_STATUS, (
        "deleted only after the status holding its counts is written"
    )
    assert decision.status["steps"][0]["docsIn"] == 10 * first.world_size


def test_a_recorded_step_is_final_whether_or_not_its_job_and_pods_still_exist():
    spec = quick_spec()
    first = plan_steps(spec)[0]
    jobs, pods = completed_steps(spec, 1, {first.id: {"docs_in": 7, "docs_out": 7}})
    recorded = decide(world(spec, jobs, pods), NOW).status
    # the Job is still there (its deletion failed, or has not happened yet), its pods are not read
    again = decide(world(spec, jobs, [], previous=recorded), NOW)
    assert again.status["steps"][0] == recorded["steps"][0]
    assert again.status["steps"][0]["docsOut"] == 7 * first.world_size
    assert [a.kind for a in again.actions if a.step_id == first.id] == [ActionKind.DELETE_JOB]
    # the Job is gone: a restarted operator reads the step from the status and never runs it again
    gone = decide(world(spec, [], [], previous=recorded), NOW)
    assert gone.status["steps"][0] == recorded["steps"][0]
    assert all(a.step_id != first.id for a in gone.actions)
    assert [a.step_id for a in gone.actions if a.kind == ActionKind.CREATE_JOB] == [plan_steps(spec)[1].id]


def test_only_the_steps_without_recorded_results_have_their_pods_read():
    spec = quick_spec()
    steps = plan_steps(spec)
    jobs, pods = completed_steps(spec, 2)
    views = {v.step_id: v for v in map(job_view, jobs)}
    # nothing recorded yet: both finished steps are read
    assert [s.id for s in steps_to_observe(steps, views, {})] == [steps[0].id, steps[1].id]
    recorded = decide(world(spec, jobs, pods), NOW).status
    assert steps_to_observe(steps, views, recorded) == []
    running = {**views, steps[2].id: job_view(job(steps[2].id, "qs-02-x", active=1))}
    assert [s.id for s in steps_to_observe(steps, running, recorded)] == [steps[2].id]
    assert steps_to_observe(steps, running, {**recorded, "phase": "Failed"}) == []


def test_all_steps_done_means_succeeded_with_totals_and_kept_percent():
    spec = quick_spec()
    steps = plan_steps(spec)
    docs = {
        steps[0].id: {"docs_in": 50, "docs_out": 50},
        "exact-dedup.filter": {"docs_in": 50, "docs_out": 40, "removed": {"exact-duplicate": 10}},
        "heuristic-filter.filter": {
            "docs_in": 40,
            "docs_out": 30,
            "removed": {"gopher-quality:min-words": 10},
        },
    }
    jobs, pods = completed_steps(spec, len(steps), docs)
    decision = decide(world(spec, jobs, pods), NOW)
    status = decision.status
    ranks = steps[0].world_size
    assert status["phase"] == Phase.SUCCEEDED
    assert (status["docsIn"], status["docsOut"]) == (50 * ranks, 30 * ranks)
    assert status["docsRemoved"] == 20 * ranks
    assert status["keptPercent"] == 60.0
    assert conditions(status)["Succeeded"]["status"] == "True"
    stages = {s["name"]: s for s in status["stages"]}
    assert stages["exact-dedup"]["removed"] == {"exact-duplicate": 10 * ranks}
    assert stages["heuristic-filter"]["docsOut"] == 30 * ranks
    assert status["completionTime"] == "2026-01-01T00:01:00Z"
    # every step's counts are in this status, so every Job goes once it is written
    assert {a.kind for a in decision.actions} == {ActionKind.DELETE_JOB}
    assert len(decision.actions) == len(steps)


def test_a_finished_job_keeps_its_status_after_its_jobs_are_gone():
    spec = quick_spec()
    jobs, pods = completed_steps(spec, len(plan_steps(spec)))
    done = decide(world(spec, jobs, pods), NOW).status
    later = decide(world(spec, [], [], previous=done), "2026-01-02T00:00:00Z")
    assert later.status == done and later.actions == []


def failed_at(spec, step_id, **job_fields):
    previous, failing, name = running_step(spec, step_id, **job_fields)
    jobs, pods = completed_steps(spec, position_of(spec, step_id))
    return previous, [*jobs, failing], pods, name


def test_a_failed_step_fails_the_job_with_the_workers_message():
    spec = quick_spec()
    previous, jobs, pods, name = failed_at(
        spec, "exact-dedup.hash", active=0, failed="PodFailurePolicy", failed_message="exit code 2"
    )
    error = json.dumps({"error": "models/x: no such model directory", "reason": "ModelNotFound"})
    pods.append(pod("exact-dedup.hash", 0, "Failed", message=error, exit_code=2, job_name=name))
    decision = decide(world(spec, jobs, pods, previous=previous), NOW)
    status = decision.status
    assert status["phase"] == Phase.FAILED
    failed = conditions(status)["Failed"]
    assert failed["status"] == "True" and failed["reason"] == "ModelNotFound"
    assert "models/x: no such model directory" in failed["message"]
    assert conditions(status)["Ready"]["status"] == "False"
    step = next(s for s in status["steps"] if s["id"] == "exact-dedup.hash")
    assert (step["reason"], step["phase"]) == ("ModelNotFound", "Failed")
    # the failed step's Job stays a while (its pods' logs explain the failure)
    assert [(a.kind, a.job) for a in decision.actions if a.step_id == "exact-dedup.hash"] == [
        (ActionKind.EXPIRE_JOB, name)
    ]


def test_a_job_marked_as_failure_target_is_a_failed_step():
    spec = quick_spec()
    previous, jobs, pods, name = failed_at(spec, "exact-dedup.hash", failure_target="PodFailurePolicy")
    error = json.dumps({"error": "input/a.parquet: no column 'text'", "reason": "InvalidInput"})
    pods.append(pod("exact-dedup.hash", 0, "Failed", exit_code=2, message=error, job_name=name))
    status = decide(world(spec, jobs, pods, previous=previous), NOW).status
    assert status["phase"] == Phase.FAILED
    assert conditions(status)["Failed"]["reason"] == "InvalidInput"


def test_a_permanent_failure_is_not_a_retry():
    """Exit code 2 fails the Job at once (pod failure policy); the other rank's pod is stopped."""
    spec = quick_spec()
    previous, jobs, pods, name = failed_at(
        spec, "exact-dedup.hash", active=0, failed="PodFailurePolicy", failed_pods=2
    )
    error = json.dumps({"error": "input/a.parquet: no column 'text'", "reason": "InvalidInput"})
    pods += [
        pod("exact-dedup.hash", 0, "Failed", message=error, exit_code=2, job_name=name),
        pod("exact-dedup.hash", 1, "Failed", message="", exit_code=143, job_name=name),
    ]
    status = decide(world(spec, jobs, pods, previous=previous), NOW).status
    step = next(s for s in status["steps"] if s["id"] == "exact-dedup.hash")
    assert step["retries"] == 0


def test_pods_replaced_after_a_failure_are_retries():
    spec = quick_spec()
    previous, running, name = running_step(spec, "exact-dedup.hash", active=2, failed_pods=2)
    jobs, _ = completed_steps(spec, position_of(spec, "exact-dedup.hash"))
    pods = [
        pod("exact-dedup.hash", 0, "Failed", message="Killed", exit_code=137, job_name=name, attempt=0),
        pod("exact-dedup.hash", 0, "Failed", message="Killed", exit_code=137, job_name=name, attempt=1),
        pod("exact-dedup.hash", 0, "Running", job_name=name, attempt=2),
        pod("exact-dedup.hash", 1, "Running", job_name=name),
    ]
    status = decide(world(spec, [*jobs, running], pods, previous=previous), NOW).status
    step = next(s for s in status["steps"] if s["id"] == "exact-dedup.hash")
    assert step["retries"] == 2 and step["phase"] == "Running"


def test_a_rank_that_ran_out_of_retries_counts_every_try_but_the_last():
    spec = quick_spec(retries=2)
    previous, jobs, _, name = failed_at(
        spec, "exact-dedup.hash", active=0, failed="FailedIndexes", failed_pods=3
    )
    pods = [
        pod("exact-dedup.hash", 0, "Failed", message="Killed", exit_code=137, job_name=name, attempt=a)
        for a in range(3)
    ]
    status = decide(world(spec, jobs, pods, previous=previous), NOW).status
    step = next(s for s in status["steps"] if s["id"] == "exact-dedup.hash")
    assert step["retries"] == 2
    assert conditions(status)["Failed"]["reason"] == "RetriesExhausted"


def test_a_crash_that_exhausts_retries_reports_the_last_log_line():
    spec = quick_spec()
    first = plan_steps(spec)[0]
    name = job_name("qs", 0, first)
    jobs = [job(first.id, name, failed="FailedIndexes", failed_pods=4)]
    pods = [
        pod(
            first.id,
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


GPU_MESSAGE = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."


def unschedulable(spec, since):
    first = plan_steps(spec)[0]
    name = job_name("qs", 0, first)
    jobs = [job(first.id, name, active=2)]
    pods = [pod(first.id, 0, "Pending", unschedulable=GPU_MESSAGE, unschedulable_since=since, job_name=name)]
    return world(spec, jobs, pods), first, name


def test_unschedulable_pods_make_ready_false_with_the_schedulers_reason():
    w, first, _ = unschedulable(quick_spec(), T0)
    status = decide(w, NOW).status
    ready = conditions(status)["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "Unschedulable"
    assert GPU_MESSAGE in ready["message"] and first.id in ready["message"]
    assert status["phase"] == Phase.RUNNING
    assert status["steps"][0]["reason"] == "Unschedulable"


def test_by_default_an_unschedulable_step_waits_however_long_it_takes():
    w, _, _ = unschedulable(quick_spec(), T0)
    decision = decide(w, "2026-01-09T00:00:00Z")  # eight days later
    assert decision.status["phase"] == Phase.RUNNING
    assert all(a.kind != ActionKind.DELETE_JOB for a in decision.actions)


def test_an_unschedulable_step_fails_the_job_once_the_timeout_passed():
    spec = quick_spec(unschedulableTimeoutSeconds=600)
    w, first, name = unschedulable(spec, "2026-01-01T00:55:00Z")  # 300 s before NOW
    assert decide(w, NOW).status["phase"] == Phase.RUNNING
    w, first, name = unschedulable(spec, "2026-01-01T00:49:00Z")  # 660 s before NOW
    decision = decide(w, NOW)
    status = decision.status
    assert status["phase"] == Phase.FAILED
    failed = conditions(status)["Failed"]
    assert failed["reason"] == "Unschedulable"
    assert failed["message"] == (
        f"step {first.id}: pod {first.id.replace('.', '-')}-0-try0 could not be scheduled for 660s "
        f"(spec.unschedulableTimeoutSeconds is 600): {GPU_MESSAGE}"
    )
    assert status["steps"][0]["phase"] == "Failed" and status["steps"][0]["completionTime"] == NOW
    # its Job is deleted (after this status is written), so no pod waits on for a failed job
    assert [(a.kind, a.job) for a in decision.actions] == [(ActionKind.DELETE_JOB, name)]
    # and a later pass finds the job finished: the Job, if still listed, is deleted again
    later = decide(World(**{**w.__dict__, "previous": status}), NOW)
    assert later.status["phase"] == Phase.FAILED
    assert [a.kind for a in later.actions] == [ActionKind.DELETE_JOB]


def test_image_pull_failures_are_reported():
    first = plan_steps(quick_spec())[0]
    jobs = [job(first.id, "qs-00-x", active=1)]
    pods = [pod(first.id, 0, "Pending", waiting="ImagePullBackOff", job_name="qs-00-x")]
    ready = conditions(decide(world(jobs=jobs, pods=pods), NOW).status)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ImagePullBackOff")


def test_seconds_come_from_the_workers_timing_else_from_the_pods_start_and_finish():
    spec = quick_spec()
    first = plan_steps(spec)[0]
    name = job_name("qs", 0, first)
    jobs = [job(first.id, name, complete=True, succeeded=first.world_size)]
    timed = [pod(first.id, 0, stats={"rank": 0, "seconds": 3.5}, job_name=name)]
    assert decide(world(spec, jobs, timed), NOW).status["steps"][0]["seconds"] == 3.5
    untimed = [
        pod(first.id, 0, stats={"rank": 0, "seconds": 0.0}, job_name=name, finished="2026-01-01T00:00:42Z"),
        pod(first.id, 1, stats={"rank": 1}, job_name=name, finished="2026-01-01T00:00:12Z"),
    ]
    assert decide(world(spec, jobs, untimed), NOW).status["steps"][0]["seconds"] == 42.0


def test_suspend_suspends_the_running_step_job_and_resume_resumes_it():
    first = plan_steps(quick_spec())[0]
    running = [job(first.id, "qs-00-x", active=2)]
    decision = decide(world(quick_spec(suspend=True), jobs=running), NOW)
    assert [(a.kind, a.job) for a in decision.actions] == [(ActionKind.SUSPEND_JOB, "qs-00-x")]
    assert decision.status["phase"] == Phase.SUSPENDED
    assert conditions(decision.status)["Suspended"]["status"] == "True"
    suspended = [job(first.id, "qs-00-x", suspended=True)]
    assert decide(world(quick_spec(suspend=True), jobs=suspended), NOW).actions == []
    resumed = decide(world(quick_spec(), jobs=suspended), NOW)
    assert [(a.kind, a.job) for a in resumed.actions] == [(ActionKind.RESUME_JOB, "qs-00-x")]
    assert resumed.status["phase"] == Phase.RUNNING


def test_a_suspended_job_creates_no_next_step():
    spec = quick_spec(suspend=True)
    jobs, pods = completed_steps(spec, 1)
    decision = decide(world(spec, jobs, pods), NOW)
    assert all(a.kind != ActionKind.CREATE_JOB for a in decision.actions)
    assert decision.status["phase"] == Phase.SUSPENDED


def test_a_kueue_suspended_job_is_queued_not_failed_nor_resumed():
    spec = quick_spec(queueName="team-queue")
    first = plan_steps(spec)[0]
    queued = [job(first.id, "qs-00-x", suspended=True, labels={KUEUE_QUEUE_LABEL: "team-queue"})]
    decision = decide(world(spec, jobs=queued), NOW)
    assert decision.actions == []
    assert decision.status["phase"] == Phase.PENDING
    assert conditions(decision.status)["Running"]["reason"] == "Queued"
    assert conditions(decision.status)["Ready"]["status"] == "True"


def test_condition_transition_times_only_move_when_the_status_changes():
    first_step = plan_steps(quick_spec())[0]
    first = decide(world(), NOW).status
    jobs = [job(first_step.id, "qs-00-x", active=2)]
    second = decide(world(jobs=jobs, previous=first), "2026-01-01T02:00:00Z").status
    assert conditions(second)["Running"]["lastTransitionTime"] == NOW
    assert second["startTime"] == first["startTime"]


def test_an_invalid_spec_is_a_failed_condition_that_a_fixed_spec_restarts():
    status = invalid_spec_status({}, 1, "spec.stages[0].params.bands: too many", T0)
    failed = conditions(status)["Failed"]
    assert status["phase"] == Phase.FAILED and failed["reason"] == "InvalidSpec"
    assert not needs_restart(status, 1)
    assert needs_restart(status, 2)


# --------------------------------------------------------------------------- conditions


def condition_table(status):
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_each_condition_has_its_own_reason_and_message():
    spec = quick_spec()
    steps = plan_steps(spec)
    first = steps[0]
    running = decide(world(jobs=[job(first.id, "qs-00-x", active=2)]), NOW).status
    jobs, pods = completed_steps(spec, len(steps))
    succeeded = decide(world(spec, jobs, pods), NOW).status
    suspended = decide(world(quick_spec(suspend=True), jobs=[job(first.id, "qs-00-x", active=2)]), NOW).status
    failed = invalid_spec_status({}, 1, "spec.stages[0]: bad", T0)
    for status in (running, succeeded, suspended, failed):
        pairs = [(c["reason"], c["message"]) for c in status["conditions"]]
        assert len(set(pairs)) == 5, pairs
    assert condition_table(running) == {
        "Ready": ("True", "NoProblems"),
        "Running": ("True", "StepRunning"),
        "Succeeded": ("False", "InProgress"),
        "Failed": ("False", "NoFailure"),
        "Suspended": ("False", "NotSuspended"),
    }
    assert condition_table(succeeded) == {
        "Ready": ("True", "NoProblems"),
        "Running": ("False", "Completed"),
        "Succeeded": ("True", "Completed"),
        "Failed": ("False", "NoFailure"),
        "Suspended": ("False", "NotSuspended"),
    }
    assert condition_table(suspended) == {
        "Ready": ("True", "NoProblems"),
        "Running": ("False", "Suspended"),
        "Succeeded": ("False", "InProgress"),
        "Failed": ("False", "NoFailure"),
        "Suspended": ("True", "SuspendedByUser"),
    }
    assert condition_table(failed) == {
        "Ready": ("False", "JobFailed"),
        "Running": ("False", "Stopped"),
        "Succeeded": ("False", "JobFailed"),
        "Failed": ("True", "InvalidSpec"),
        "Suspended": ("False", "NotSuspended"),
    }
    assert conditions(succeeded)["Running"]["message"] == f"all {len(steps)} steps finished"
    assert conditions(running)["Succeeded"]["message"] == f"0/{len(steps)} steps done"
    assert conditions(suspended)["Suspended"]["message"] == (
        f"suspended at step {first.id}; set spec.suspend to false to resume"
    )
    assert conditions(failed)["Ready"]["message"] == (
        "the job failed (InvalidSpec); the Failed condition says what to do"
    )


def test_a_worker_reason_that_is_no_valid_condition_reason_is_cleaned():
    spec = quick_spec()
    previous, jobs, pods, name = failed_at(spec, "exact-dedup.hash", active=0, failed="PodFailurePolicy")
    error = json.dumps({"error": "boom", "reason": "bad reason-with spaces!"})
    pods.append(pod("exact-dedup.hash", 0, "Failed", message=error, exit_code=2, job_name=name))
    status = decide(world(spec, jobs, pods, previous=previous), NOW).status
    assert conditions(status)["Failed"]["reason"] == "badreasonwithspaces"
