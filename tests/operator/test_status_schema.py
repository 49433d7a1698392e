"""One status model: what the operator writes is exactly what the CRD's status schema declares."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from curation.crd import build_crd
from curation.crd_status import CurationJobStatus, status_document
from curation.plan import plan_steps
from curation_operator.builders import job_name
from curation_operator.state import decide, invalid_spec_status

from .fakes import T0, job, pod, quick_spec, unknown_keys
from .test_state import NOW, completed_steps, failed_at, running_step, unschedulable, world


def root_schema() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def status_schema() -> dict[str, Any]:
    return root_schema()["properties"]["status"]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `X`, `X | None`, `list[X]` (None for scalars and maps)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _missing(model: type[BaseModel], schema: dict[str, Any], path: str) -> list[str]:
    """Fields of `model` (recursively, by their camelCase names) that `schema` lacks."""
    out = []
    props = schema.get("properties", {})
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key not in props:
            out.append(f"{path}.{key}")
            continue
        inner = _model_of(info.annotation)
        if inner is not None:
            node = props[key]
            out += _missing(inner, node.get("items", node), f"{path}.{key}")
    return out


def test_the_crd_status_schema_declares_every_field_of_the_status_model():
    assert _missing(CurationJobStatus, status_schema(), "status") == []


def statuses_the_operator_writes() -> dict[str, dict[str, Any]]:
    """A status for every kind of situation the state machine knows."""
    spec = quick_spec()
    steps = plan_steps(spec)
    everything, pods = completed_steps(spec, len(steps))
    previous, running, name = running_step(spec, "exact-dedup.hash", failed_pods=1)
    before, _ = completed_steps(spec, steps.index(next(s for s in steps if s.id == "exact-dedup.hash")))
    retried = [
        pod("exact-dedup.hash", 0, "Failed", message="Killed", exit_code=137, job_name=name, attempt=0),
        pod("exact-dedup.hash", 0, "Running", job_name=name, attempt=1),
    ]
    failing_previous, failing_jobs, failing_pods, failing_name = failed_at(
        spec, "exact-dedup.hash", active=0, failed="PodFailurePolicy"
    )
    failing_pods.append(
        pod(
            "exact-dedup.hash",
            0,
            "Failed",
            message=json.dumps({"error": "no model", "reason": "ModelNotFound"}),
            exit_code=2,
            job_name=failing_name,
        )
    )
    timed_out, _, _ = unschedulable(quick_spec(unschedulableTimeoutSeconds=60), T0)
    waiting, _, _ = unschedulable(quick_spec(), T0)
    first = steps[0]
    kueue = quick_spec(queueName="q")
    return {
        "new": decide(world(), NOW).status,
        "running with retries": decide(
            world(spec, [*before, running], retried, previous=previous), NOW
        ).status,
        "unschedulable": decide(waiting, NOW).status,
        "unschedulable too long": decide(timed_out, NOW).status,
        "image pull": decide(
            world(
                jobs=[job(first.id, job_name("qs", 0, first), active=1)],
                pods=[pod(first.id, 0, "Pending", waiting="ErrImagePull", job_name=job_name("qs", 0, first))],
            ),
            NOW,
        ).status,
        "failed": decide(world(spec, failing_jobs, failing_pods, previous=failing_previous), NOW).status,
        "succeeded": decide(world(spec, everything, pods), NOW).status,
        "suspended": decide(world(quick_spec(suspend=True)), NOW).status,
        "queued": decide(world(kueue), NOW).status,
        "invalid spec": invalid_spec_status({}, 1, "spec.stages[0]: bad", NOW),
    }


@pytest.mark.parametrize("situation", sorted(statuses_the_operator_writes()))
def test_every_key_the_operator_writes_into_status_is_in_the_crd_status_schema(situation):
    status = statuses_the_operator_writes()[situation]
    assert unknown_keys(status, status_schema(), "status") == []


def test_the_situations_cover_the_fields_that_used_to_be_pruned():
    written = statuses_the_operator_writes()
    step_keys = {k for s in written.values() for step in s.get("steps", []) for k in step}
    assert {"reason", "message", "retries", "seconds", "completionTime"} <= step_keys


def test_a_status_field_outside_the_model_is_refused_before_it_is_written():
    with pytest.raises(ValidationError, match="bogus"):
        status_document({"phase": "Running", "steps": [{"id": "ingest.read", "bogus": 1}]})
    with pytest.raises(ValidationError):
        status_document({"phase": "Sleeping"})


def test_kubectl_explain_has_a_description_for_every_field():
    """`kubectl explain curationjob.spec.volumes`, `.status.conditions`, ...: never `<no description>`."""

    def undocumented(node: dict[str, Any], path: str) -> list[str]:
        out = []
        for key, child in (node.get("properties") or {}).items():
            if not child.get("description") and f"{path}.{key}" != "curationjob.metadata":
                out.append(f"{path}.{key}")
            out += undocumented(child, f"{path}.{key}")
        if "items" in node:
            out += undocumented(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += undocumented(node["additionalProperties"], f"{path}{{}}")
        return out

    assert undocumented(root_schema(), "curationjob") == []
    volume = root_schema()["properties"]["spec"]["properties"]["volumes"]["items"]["properties"]
    assert "PersistentVolumeClaim" in volume["pvc"]["description"]
    condition = status_schema()["properties"]["conditions"]
    assert condition["description"] and condition["items"]["properties"]["reason"]["description"]
