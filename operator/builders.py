"""Pure builders of the child objects of a CurationJob: the spec ConfigMap and one Job per step.

Typed spec in, plain dicts out; deterministic and length-checked names, so that a restarted
operator finds (and adopts) exactly the objects it would have created.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass
from typing import Any

import yaml

from curation.crd import ENGINE_GPUS_MESSAGE
from curation.errors import SpecError
from curation.plan import FINALIZE, INGEST, Step
from curation.spec import API_GROUP, API_VERSION, KIND, PipelineSpec
from curation_operator.settings import OperatorSettings

# Labels on every child (selectors of the operator's lists and watches).
LABEL_JOB = "thresher.dev/curation-job"
LABEL_STEP = "thresher.dev/step"
LABEL_STEP_INDEX = "thresher.dev/step-index"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "thresher-operator"
LABEL_COMPONENT = "app.kubernetes.io/component"
ANNOTATION_STEP_ID = "thresher.dev/step-id"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GPU_RESOURCE = "nvidia.com/gpu"

SPEC_MOUNT = "/etc/thresher"
SPEC_FILE = "spec.yaml"
INPUT_MOUNT = "/data/input"
OUTPUT_MOUNT = "/data/output"
MODELS_MOUNT = "/data/models"
TMP_MOUNT = "/tmp"
TERMINATION_LOG = "/dev/termination-log"
CONTAINER = "worker"

# Job names end up in pod hostnames `<job>-<index>` (a DNS label, at most 63 characters), so
# they leave room for "-" plus a four-digit completion index.
MAX_JOB_NAME = 58
EXIT_PERMANENT = (2, 3)  # invalid spec/data/model, conservation violated: retrying cannot help
# Requests of the engine's own steps (ingest and finalize read or publish the whole corpus) where
# `spec.engineResources` leaves them unset: without any, a busy node starves or OOM-kills them.
ENGINE_STAGES = (INGEST, FINALIZE)
ENGINE_CPU = "1"
ENGINE_MEMORY = "2Gi"
_DNS_UNSAFE = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class CurationJobRef:
    """The identity of the parent CurationJob, for names, labels and owner references."""

    name: str
    namespace: str
    uid: str

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def child_name(parent: str, suffix: str, limit: int = MAX_JOB_NAME) -> str:
    """`<parent>-<suffix>` as a DNS label of at most `limit` characters.

    When too long, the parent part is cut and a hash of the full name keeps names distinct.
    """
    suffix = _DNS_UNSAFE.sub("-", suffix.lower()).strip("-")
    full = f"{parent}-{suffix}"
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:6]
    keep = max(1, limit - len(suffix) - len(digest) - 2)
    head = parent[:keep].rstrip("-.") or "cj"
    name = f"{head}-{digest}-{suffix}"
    if len(name) > limit:  # a very long suffix: hash it too
        name = f"{head[: limit - 14].rstrip('-.')}-{digest}-{hashlib.sha256(suffix.encode()).hexdigest()[:6]}"
    return name


def job_name(parent: str, position: int, step: Step) -> str:
    """Name of the Job of the step at `position` in the plan, e.g. `quickstart-03-minhash-dedup-buckets`."""
    return child_name(parent, f"{position:02d}-{step.id.replace('.', '-')}")


def configmap_name(parent: str) -> str:
    return child_name(parent, "spec", limit=63)


def common_labels(ref: CurationJobRef) -> dict[str, str]:
    return {
        LABEL_JOB: label_value(ref.name),
        LABEL_MANAGED_BY: MANAGED_BY,
        "app.kubernetes.io/name": "thresher",
    }


def label_value(text: str) -> str:
    """Label values are at most 63 characters; long names are cut and hashed (selectors use this)."""
    if len(text) <= 63:
        return text
    return f"{text[:50].rstrip('-.')}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


# --------------------------------------------------------------------------- paths in the pod


def _inside(path: str, field: str) -> str:
    """A path relative to a PVC root; refuse paths that climb out of the volume."""
    rel = posixpath.normpath(path.lstrip("/")) if path.strip("/") else "."
    if rel == ".." or rel.startswith("../"):
        raise SpecError(f"spec.{field}.path: '{path}' leaves the PVC; use a path inside the volume")
    return rel


def mounted(mount: str, path: str, field: str) -> str:
    rel = _inside(path, field)
    return mount if rel == "." else f"{mount}/{rel}"


@dataclass(frozen=True)
class PodPaths:
    """Where input, output and models are inside a step pod."""

    input: str
    output: str
    models: str


def pod_paths(spec: PipelineSpec) -> PodPaths:
    """Paths on a PVC become paths under its mount point; paths without a PVC (object-store URIs,
    paths on an extra volume) are used as written."""
    return PodPaths(
        input=mounted(INPUT_MOUNT, spec.input.path, "input") if spec.input.pvc else spec.input.path,
        output=mounted(OUTPUT_MOUNT, spec.output.path, "output") if spec.output.pvc else spec.output.path,
        models=mounted(MODELS_MOUNT, spec.models.path, "models") if spec.models.pvc else spec.models.path,
    )


def eval_set_path(spec: PipelineSpec) -> str | None:
    """`evaluate.evalSet` in the pod: on the input's PVC when the input has one."""
    if spec.evaluate is None:
        return None
    path = spec.evaluate.eval_set
    return mounted(INPUT_MOUNT, path, "evaluate.evalSet") if spec.input.pvc else path


def pod_spec_document(spec: PipelineSpec) -> dict[str, Any]:
    """The bare spec the workers read, with in-pod paths. `suspend` is left out: toggling it must
    not change what the pods see."""
    doc = spec.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"suspend"})
    paths = pod_paths(spec)
    doc["input"]["path"] = paths.input
    doc["output"]["path"] = paths.output
    doc.setdefault("models", {})["path"] = paths.models
    if spec.evaluate is not None:
        doc["evaluate"]["evalSet"] = eval_set_path(spec)
    return doc


def build_spec_configmap(ref: CurationJobRef, spec: PipelineSpec) -> dict[str, Any]:
    text = yaml.safe_dump(pod_spec_document(spec), sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(ref.name),
            "namespace": ref.namespace,
            "labels": {**common_labels(ref), LABEL_COMPONENT: "spec"},
            "ownerReferences": [ref.owner_reference()],
        },
        "data": {SPEC_FILE: text},
    }


# --------------------------------------------------------------------------- step Job


def worker_args(spec: PipelineSpec, step: Step) -> list[str]:
    """`thresher worker` arguments. Paths are passed as arguments as well as in the spec file, so a
    node that maps volumes to other folders (the test node agent) can rewrite them."""
    paths = pod_paths(spec)
    args = [
        "worker",
        "--spec",
        f"{SPEC_MOUNT}/{SPEC_FILE}",
        "--step",
        step.id,
        "--world-size",
        str(step.world_size),
    ]
    if spec.input.pvc:
        args += ["--input", paths.input]
    if spec.output.pvc:
        args += ["--output", paths.output]
    if spec.models.pvc:
        args += ["--models", paths.models]
    if spec.evaluate is not None and spec.input.pvc:
        args += ["--eval-set", str(eval_set_path(spec))]
    return args


def check_cluster_spec(spec: PipelineSpec) -> None:
    """What only a cluster run needs of a spec (the CRD's CEL rules say the same)."""
    if spec.engine_resources.gpus:
        raise SpecError(f"spec.{ENGINE_GPUS_MESSAGE}")


def _resources(spec: PipelineSpec, step: Step) -> dict[str, Any]:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    cpu: str | None = None
    memory: str | None = None
    if step.stage in ENGINE_STAGES:
        cpu = spec.engine_resources.cpu or ENGINE_CPU
        memory = spec.engine_resources.memory or ENGINE_MEMORY
    elif 0 < step.index <= len(spec.stages):
        stage = spec.stages[step.index - 1]
        cpu, memory = stage.resources.cpu, stage.resources.memory
    if cpu:
        requests["cpu"] = cpu
    if memory:
        requests["memory"] = limits["memory"] = memory
    if step.gpus:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(step.gpus)  # extended resources: equal
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _volumes(ref: CurationJobRef, spec: PipelineSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "spec", "configMap": {"name": configmap_name(ref.name)}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True},
        {"name": "tmp", "mountPath": TMP_MOUNT},
    ]
    for name, pvc, mount, read_only in (
        ("input", spec.input.pvc, INPUT_MOUNT, True),
        ("output", spec.output.pvc, OUTPUT_MOUNT, False),
        ("models", spec.models.pvc, MODELS_MOUNT, True),
    ):
        if pvc:
            volumes.append({"name": name, "persistentVolumeClaim": {"claimName": pvc, "readOnly": read_only}})
            mounts.append({"name": name, "mountPath": mount, "readOnly": read_only})
    for extra in spec.volumes:
        volumes.append(
            {
                "name": f"x-{extra.name}"[:63],
                "persistentVolumeClaim": {"claimName": extra.pvc, "readOnly": extra.read_only},
            }
        )
        mounts.append(
            {"name": f"x-{extra.name}"[:63], "mountPath": extra.mount_path, "readOnly": extra.read_only}
        )
    return volumes, mounts


def _security(settings: OperatorSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `restricted` Pod Security Standard: non-root, no privilege escalation, no capabilities."""
    pod: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if settings.worker_run_as_user is not None:
        pod["runAsUser"] = settings.worker_run_as_user
        pod["runAsGroup"] = settings.worker_run_as_user
    if settings.worker_fs_group is not None:
        pod["fsGroup"] = settings.worker_fs_group
    container = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    return pod, container


def _scheduling(spec: PipelineSpec, step: Step) -> dict[str, Any]:
    pod = spec.pod
    out: dict[str, Any] = {}
    if pod.node_selector:
        out["nodeSelector"] = dict(pod.node_selector)
    tolerations = [t.model_dump(by_alias=True, exclude_none=True) for t in pod.tolerations]
    if step.gpus and not any(t.get("key") == GPU_RESOURCE for t in tolerations):
        # GPU node pools are commonly tainted nvidia.com/gpu:NoSchedule
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    if tolerations:
        out["tolerations"] = tolerations
    if pod.affinity:
        out["affinity"] = pod.affinity
    if pod.priority_class_name:
        out["priorityClassName"] = pod.priority_class_name
    if pod.runtime_class_name:
        out["runtimeClassName"] = pod.runtime_class_name
    if pod.image_pull_secrets:
        out["imagePullSecrets"] = [{"name": s} for s in pod.image_pull_secrets]
    return out


def step_labels(ref: CurationJobRef, position: int, step: Step) -> dict[str, str]:
    return {
        **common_labels(ref),
        LABEL_COMPONENT: "step",
        LABEL_STEP: label_value(step.id),
        LABEL_STEP_INDEX: str(position),
    }


S3_SECRET_KEYS = (("AWS_ACCESS_KEY_ID", False), ("AWS_SECRET_ACCESS_KEY", False), ("AWS_SESSION_TOKEN", True))


def storage_env(spec: PipelineSpec) -> list[dict[str, Any]]:
    """Object-store credentials for the step pods: the keys of `storage.s3.credentialsSecret` as the
    standard AWS variables (never in the CurationJob itself), and no metadata-endpoint lookups."""
    s3 = spec.storage.s3
    if s3 is None:
        return []
    env: list[dict[str, Any]] = [{"name": "AWS_EC2_METADATA_DISABLED", "value": "true"}]
    if s3.credentials_secret:
        for key, optional in S3_SECRET_KEYS:
            env.append({"name": key, "valueFrom": {"secretKeyRef": {
                "name": s3.credentials_secret, "key": key, **({"optional": True} if optional else {})}}})
    return env


def build_step_job(
    ref: CurationJobRef, spec: PipelineSpec, step: Step, position: int, settings: OperatorSettings
) -> dict[str, Any]:
    """One Indexed Job running `step.world_size` ranks of `step`.

    `spec.concurrency` caps the pods that run at once (the Job's `parallelism`); the Job still
    completes every rank. Retries: each rank (index) gets `spec.retries` retries with the Job
    controller's exponential back-off; exit codes 2 and 3 (permanent errors) fail the Job at once,
    and pod disruptions (eviction, preemption, node drain) do not count as failures.
    """
    labels = step_labels(ref, position, step)
    job_labels = dict(labels)
    if spec.queue_name:
        job_labels[KUEUE_QUEUE_LABEL] = spec.queue_name
    volumes, mounts = _volumes(ref, spec)
    pod_security, container_security = _security(settings)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image or settings.worker_image,
        "imagePullPolicy": settings.worker_image_pull_policy,
        "command": list(settings.worker_command),
        "args": worker_args(spec, step),
        "env": [
            {"name": "THRESHER_METRICS_PORT", "value": str(settings.worker_metrics_port)},
            {"name": "THRESHER_TERMINATION_LOG", "value": TERMINATION_LOG},
            {"name": "HOME", "value": TMP_MOUNT},
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            *storage_env(spec),
        ],
        "resources": _resources(spec, step),
        "volumeMounts": mounts,
        "securityContext": container_security,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if settings.worker_metrics_port:
        container["ports"] = [
            {"name": "metrics", "containerPort": settings.worker_metrics_port, "protocol": "TCP"}
        ]
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": step.world_size,
        "parallelism": min(step.world_size, spec.concurrency or step.world_size),
        "backoffLimitPerIndex": spec.retries,
        "maxFailedIndexes": 0,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": list(EXIT_PERMANENT),
                    },
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {
            "metadata": {"labels": labels, "annotations": {ANNOTATION_STEP_ID: step.id}},
            "spec": {
                "restartPolicy": "Never",
                "serviceAccountName": spec.pod.service_account_name or settings.worker_service_account,
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": pod_security,
                "containers": [container],
                "volumes": volumes,
                **_scheduling(spec, step),
            },
        },
    }
    if spec.step_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.step_deadline_seconds
    if spec.queue_name:
        job_spec["suspend"] = True  # Kueue admits the Job by un-suspending it
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(ref.name, position, step),
            "namespace": ref.namespace,
            "labels": job_labels,
            "annotations": {ANNOTATION_STEP_ID: step.id},
            "ownerReferences": [ref.owner_reference()],
        },
        "spec": job_spec,
    }
