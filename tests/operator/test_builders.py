"""The child objects of a CurationJob, built without a cluster."""

from __future__ import annotations

import pytest
import yaml

from curation.errors import SpecError
from curation.plan import plan_steps
from curation.spec import parse_spec
from curation_operator.builders import (
    ENGINE_CPU,
    ENGINE_MEMORY,
    GPU_RESOURCE,
    KUEUE_QUEUE_LABEL,
    LABEL_JOB,
    LABEL_STEP,
    MAX_JOB_NAME,
    CurationJobRef,
    build_spec_configmap,
    build_step_job,
    check_cluster_spec,
    child_name,
    job_name,
    pod_spec_document,
    worker_args,
)
from curation_operator.settings import OperatorSettings

REF = CurationJobRef(name="quickstart", namespace="team-a", uid="1234-uid")
SETTINGS = OperatorSettings(worker_image="registry.local/thresher:1.0", worker_metrics_port=9400)


def make_spec(**overrides):
    doc = {
        "input": {"path": "corpora/web", "pvc": "data", "idField": "doc_id"},
        "output": {"path": "/out/run1", "pvc": "results"},
        "models": {"path": "models", "pvc": "weights"},
        "parallelism": 3,
        "stages": [
            {"type": "exact-dedup"},
            {"type": "semantic-dedup", "resources": {"gpus": 2, "cpu": "4", "memory": "16Gi"}},
        ],
    }
    doc.update(overrides)
    return parse_spec(doc)


def step_named(spec, step_id):
    steps = plan_steps(spec)
    position = [s.id for s in steps].index(step_id)
    return steps[position], position


def test_job_names_are_deterministic_dns_labels_with_room_for_the_index():
    spec = make_spec()
    names = [job_name(REF.name, i, s) for i, s in enumerate(plan_steps(spec))]
    assert names[0] == "quickstart-00-ingest-read"
    assert names == [job_name(REF.name, i, s) for i, s in enumerate(plan_steps(spec))]
    assert len(set(names)) == len(names)
    long_parent = "x" * 200
    long_names = {job_name(long_parent, i, s) for i, s in enumerate(plan_steps(spec))}
    assert len(long_names) == len(names)
    assert all(len(n) <= MAX_JOB_NAME and n[0].isalnum() and n[-1].isalnum() for n in long_names)


def test_long_names_that_share_a_prefix_stay_distinct():
    a = child_name("a" * 70 + "-first", "03-minhash-dedup-buckets")
    b = child_name("a" * 70 + "-second", "03-minhash-dedup-buckets")
    assert a != b and len(a) <= MAX_JOB_NAME and len(b) <= MAX_JOB_NAME


def test_pod_spec_uses_mount_points_for_paths_on_pvcs():
    doc = pod_spec_document(make_spec())
    assert doc["input"]["path"] == "/data/input/corpora/web"
    assert doc["output"]["path"] == "/data/output/out/run1"
    assert doc["models"]["path"] == "/data/models/models"
    assert "suspend" not in doc
    reparsed = parse_spec(doc)
    assert reparsed.stages[1].resources.gpus == 2


def test_paths_without_a_pvc_are_used_as_written():
    spec = make_spec(input={"path": "s3://bucket/web"}, models={"path": "/mnt/models"},
                     storage={"s3": {"endpoint": "http://seaweedfs.storage:8333"}})
    doc = pod_spec_document(spec)
    assert doc["input"]["path"] == "s3://bucket/web"
    assert doc["models"]["path"] == "/mnt/models"


def test_a_path_that_climbs_out_of_its_pvc_is_refused():
    with pytest.raises(SpecError, match=r"spec.input.path: '../etc' leaves the PVC"):
        pod_spec_document(make_spec(input={"path": "../etc", "pvc": "data"}))


def test_spec_configmap_is_owned_by_the_curation_job_and_holds_the_pod_spec():
    cm = build_spec_configmap(REF, make_spec())
    assert cm["metadata"]["name"] == "quickstart-spec"
    assert cm["metadata"]["ownerReferences"] == [REF.owner_reference()]
    assert cm["metadata"]["ownerReferences"][0]["controller"] is True
    assert yaml.safe_load(cm["data"]["spec.yaml"])["input"]["path"] == "/data/input/corpora/web"


def test_step_job_is_an_indexed_job_with_one_completion_per_rank():
    spec = make_spec()
    step, position = step_named(spec, "exact-dedup.hash")
    job = build_step_job(REF, spec, step, position, SETTINGS)
    js = job["spec"]
    assert job["metadata"]["name"] == f"quickstart-{position:02d}-exact-dedup-hash"
    assert job["metadata"]["labels"][LABEL_JOB] == "quickstart"
    assert job["metadata"]["labels"][LABEL_STEP] == "exact-dedup.hash"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "1234-uid"
    assert (js["completionMode"], js["completions"], js["parallelism"]) == ("Indexed", 3, 3)
    assert js["backoffLimitPerIndex"] == spec.retries and js["maxFailedIndexes"] == 0
    assert "ttlSecondsAfterFinished" not in js  # set once the whole CurationJob has finished
    assert "suspend" not in js


def test_permanent_worker_errors_fail_the_job_and_disruptions_are_not_failures():
    spec = make_spec()
    step, position = step_named(spec, "exact-dedup.hash")
    rules = build_step_job(REF, spec, step, position, SETTINGS)["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "worker", "operator": "In", "values": [2, 3]},
    }
    assert rules[1]["action"] == "Ignore"
    assert rules[1]["onPodConditions"][0]["type"] == "DisruptionTarget"


def test_worker_container_runs_the_step_rank_with_in_pod_paths():
    spec = make_spec()
    step, position = step_named(spec, "exact-dedup.select")
    pod = build_step_job(REF, spec, step, position, SETTINGS)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.local/thresher:1.0"
    assert container["command"] == ["thresher"]
    assert container["args"][:7] == [
        "worker", "--spec", "/etc/thresher/spec.yaml", "--step", "exact-dedup.select", "--world-size", "3",
    ]  # fmt: skip
    assert "--rank" not in container["args"]  # from JOB_COMPLETION_INDEX
    assert container["args"][7:] == [
        "--input", "/data/input/corpora/web", "--output", "/data/output/out/run1", "--models", "/data/models/models",
    ]  # fmt: skip
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["ports"] == [{"name": "metrics", "containerPort": 9400, "protocol": "TCP"}]
    assert pod["restartPolicy"] == "Never"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["input"]["readOnly"] and mounts["models"]["readOnly"] and not mounts["output"]["readOnly"]
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
    assert claims["input"] == "data" and claims["output"] == "results" and claims["models"] == "weights"


def test_only_the_gpu_steps_of_a_gpu_stage_request_gpus():
    spec = make_spec()
    embed, p1 = step_named(spec, "semantic-dedup.embed")
    filt, p2 = step_named(spec, "semantic-dedup.filter")
    embed_res = build_step_job(REF, spec, embed, p1, SETTINGS)["spec"]["template"]["spec"]["containers"][0][
        "resources"
    ]
    filter_res = build_step_job(REF, spec, filt, p2, SETTINGS)["spec"]["template"]["spec"]["containers"][0][
        "resources"
    ]
    assert embed_res["limits"][GPU_RESOURCE] == "2" and embed_res["requests"][GPU_RESOURCE] == "2"
    assert embed_res["requests"]["cpu"] == "4" and embed_res["limits"]["memory"] == "16Gi"
    assert GPU_RESOURCE not in filter_res.get("limits", {})
    embed_pod = build_step_job(REF, spec, embed, p1, SETTINGS)["spec"]["template"]["spec"]
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in embed_pod["tolerations"]


def test_pod_overrides_from_the_spec_reach_every_step_pod():
    spec = make_spec(
        pod={
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "data", "effect": "NoSchedule"}
            ],
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
            "priorityClassName": "batch-low",
            "runtimeClassName": "nvidia",
            "imagePullSecrets": ["regcred"],
            "serviceAccountName": "curation-sa",
        },
        image="private.registry/thresher:2",
        stepDeadlineSeconds=3600,
        volumes=[{"name": "scratch", "pvc": "scratch-pvc", "mountPath": "/scratch", "readOnly": False}],
    )
    step, position = step_named(spec, "ingest.read")
    job = build_step_job(REF, spec, step, position, SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "data", "effect": "NoSchedule"}
    ]
    assert pod["affinity"]["nodeAffinity"] == {"preferredDuringSchedulingIgnoredDuringExecution": []}
    assert (pod["priorityClassName"], pod["runtimeClassName"]) == ("batch-low", "nvidia")
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["serviceAccountName"] == "curation-sa"
    assert pod["containers"][0]["image"] == "private.registry/thresher:2"
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    assert {"name": "x-scratch", "mountPath": "/scratch", "readOnly": False} in pod["containers"][0][
        "volumeMounts"
    ]


def test_step_pods_meet_the_restricted_pod_security_standard():
    spec = make_spec()
    step, position = step_named(spec, "ingest.read")
    pod = build_step_job(REF, spec, step, position, SETTINGS)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "thresher-worker"
    sc = pod["containers"][0]["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}


def test_a_kueue_queue_labels_the_job_and_lets_kueue_admit_it():
    spec = make_spec(queueName="gpu-queue")
    step, position = step_named(spec, "ingest.read")
    job = build_step_job(REF, spec, step, position, SETTINGS)
    assert job["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "gpu-queue"
    assert job["spec"]["suspend"] is True


def test_worker_args_leave_out_paths_that_are_not_on_a_pvc():
    spec = make_spec(input={"path": "/mnt/data"}, output={"path": "/mnt/out"}, models={"path": "m"})
    step, _ = step_named(spec, "ingest.read")
    assert worker_args(spec, step) == [
        "worker", "--spec", "/etc/thresher/spec.yaml", "--step", "ingest.read", "--world-size", "3",
    ]  # fmt: skip


def container_of(job):
    return job["spec"]["template"]["spec"]["containers"][0]


def test_concurrency_caps_the_pods_running_at_once_but_every_rank_still_runs():
    spec = make_spec(parallelism=8, concurrency=3)
    step, position = step_named(spec, "exact-dedup.hash")
    job = build_step_job(REF, spec, step, position, SETTINGS)
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (8, 3)
    args = container_of(job)["args"]
    assert args[args.index("--world-size") + 1] == "8"  # ranks split the data 8 ways, 3 at a time


def test_concurrency_above_a_steps_ranks_runs_just_its_ranks():
    spec = make_spec(parallelism=2, concurrency=16)
    for position, step in enumerate(plan_steps(spec)):
        js = build_step_job(REF, spec, step, position, SETTINGS)["spec"]
        assert js["parallelism"] == step.world_size, step.id


def test_every_engine_step_requests_cpu_and_memory_by_default():
    spec = make_spec()
    engine = [(i, s) for i, s in enumerate(plan_steps(spec)) if s.stage in ("ingest", "finalize")]
    assert {s.stage for _, s in engine} == {"ingest", "finalize"}
    for position, step in engine:
        resources = container_of(build_step_job(REF, spec, step, position, SETTINGS))["resources"]
        assert resources == {
            "requests": {"cpu": ENGINE_CPU, "memory": ENGINE_MEMORY},
            "limits": {"memory": ENGINE_MEMORY},
        }, step.id
    assert (ENGINE_CPU, ENGINE_MEMORY) == ("1", "2Gi")


def test_engine_resources_from_the_spec_reach_ingest_and_finalize_but_not_the_stages():
    spec = make_spec(engineResources={"cpu": "4", "memory": "16Gi"})
    for position, step in enumerate(plan_steps(spec)):
        resources = container_of(build_step_job(REF, spec, step, position, SETTINGS))["resources"]
        if step.stage in ("ingest", "finalize"):
            assert resources["requests"] == {"cpu": "4", "memory": "16Gi"}, step.id
            assert resources["limits"] == {"memory": "16Gi"}
        elif step.stage == "exact-dedup":  # a stage without resources of its own requests nothing
            assert resources == {}, step.id
    only_memory = make_spec(engineResources={"memory": "8Gi"})
    step, position = step_named(only_memory, plan_steps(only_memory)[0].id)
    requests = container_of(build_step_job(REF, only_memory, step, position, SETTINGS))["resources"][
        "requests"
    ]
    assert requests == {"cpu": ENGINE_CPU, "memory": "8Gi"}


def test_engine_resources_with_gpus_are_refused_for_a_cluster_run():
    check_cluster_spec(make_spec(engineResources={"cpu": "2"}))
    with pytest.raises(SpecError, match=r"spec.engineResources.gpus: ingest and finalize run on CPU only"):
        check_cluster_spec(make_spec(engineResources={"gpus": 1}))


def test_step_label_is_a_valid_label_value_for_any_step_id():
    spec = make_spec()
    for position, step in enumerate(plan_steps(spec)):
        labels = build_step_job(REF, spec, step, position, SETTINGS)["spec"]["template"]["metadata"]["labels"]
        assert labels[LABEL_STEP] == step.id  # short ids stay readable (`kubectl get pods -l`)


def test_the_evaluation_step_runs_last_on_its_gpus_with_the_eval_set_on_the_input_pvc():
    spec = make_spec(evaluate={"evalSet": "corpora/heldout", "preset": "proxy-150m", "gpus": 1, "seeds": [0, 1]})
    steps = plan_steps(spec)
    assert steps[-1].id == "evaluate.run" and steps[-2].id == "finalize.summary"
    job = build_step_job(REF, spec, steps[-1], len(steps) - 1, SETTINGS)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"][GPU_RESOURCE] == "1" and job["spec"]["completions"] == 1
    assert container["args"][-2:] == ["--eval-set", "/data/input/corpora/heldout"]
    assert pod_spec_document(spec)["evaluate"]["evalSet"] == "/data/input/corpora/heldout"
    assert "evaluate" not in [s.stage for s in plan_steps(make_spec())]
