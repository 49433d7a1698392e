"""The status of a CurationJob: one typed model that the operator writes and the CRD's schema is made of.

The operator builds every status through `CurationJobStatus` (unknown keys are errors), and
`curation.crd` turns the same model into ``status`` of the CRD's OpenAPI schema, so the API server
never prunes a field the operator writes (a pruned field would differ from what the operator
computes on every reconcile and be patched again and again). Descriptions come from the attribute
docstrings, for ``kubectl explain curationjob.status``.

Pure: pydantic only (no Kubernetes client); the operator and the CRD generator both import it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class Phase(StrEnum):
    """Summary of a CurationJob's state."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class StepPhase(StrEnum):
    """State of one step (its Indexed Job)."""

    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class StagePhase(StrEnum):
    """State of one stage (all of its steps)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ConditionType(StrEnum):
    """The five conditions every CurationJob carries."""

    READY = "Ready"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED})
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"  # metav1.Condition's

Count = Annotated[int, Field(ge=0, json_schema_extra={"format": "int64"})]
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class _Status(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )


class Condition(_Status):
    """One aspect of the job's state, in the shape of a metav1.Condition."""

    type: ConditionType = Field(json_schema_extra={"maxLength": 316})  # bounded for CEL cost estimates
    """Ready (False when a person must act), Running, Succeeded, Failed or Suspended."""

    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""

    observed_generation: Count | None = None
    """The CurationJob generation this condition was computed for."""

    last_transition_time: Timestamp
    """When `status` last changed."""

    reason: str = Field(max_length=1024, pattern=CONDITION_REASON_PATTERN)
    """CamelCase reason a person can act on (e.g. `Unschedulable`, `ModelNotFound`); each condition
    has its own."""

    message: str = Field(max_length=32768)
    """What this condition means now, in words."""


class StepStatus(_Status):
    """Progress and document counts of one step (one Indexed Job)."""

    id: str
    """Step id (`<stage>.<step>`), as `thresher worker --step` takes it."""

    stage: str | None = None
    """Stage the step belongs to."""

    job: str | None = None
    """Name of the step's batch/v1 Job (deleted once the step's counts are recorded here)."""

    phase: StepPhase | None = None
    """State of the step."""

    ranks: Count | None = None
    """World size of the step (completions of the Indexed Job)."""

    ranks_done: Count | None = None
    """Ranks that finished successfully."""

    retries: Count | None = None
    """Failed pods that the Job controller replaced by a new pod (a failure that ended the step is
    not a retry)."""

    docs_in: Count | None = None
    """Documents read by the step's ranks."""

    docs_out: Count | None = None
    """Documents written by the step's ranks."""

    generated: Count | None = None
    """Synthetic documents added."""

    removed: dict[str, Count] | None = None
    """Removed documents by reason (e.g. `exact-duplicate`)."""

    seconds: float | None = Field(default=None, ge=0)
    """Longest rank's wall time (the worker's own timing, else its pod's start to finish)."""

    start_time: Timestamp | None = None
    """When the step Job was created."""

    completion_time: Timestamp | None = None
    """When the step finished."""

    reason: str | None = None
    """CamelCase reason of the last problem seen (e.g. `Unschedulable`, `RetriesExhausted`)."""

    message: str | None = None
    """Last problem seen, in words (e.g. a worker's error line)."""


class StageStatus(_Status):
    """Progress and document counts of one stage (the steps of one entry of `spec.stages`)."""

    name: str
    """Stage name."""

    type: str | None = None
    """Stage type."""

    phase: StagePhase | None = None
    """State of the stage."""

    steps_done: Count | None = None
    """Steps of this stage that finished."""

    steps: Count | None = None
    """Steps of this stage."""

    docs_in: Count | None = None
    """Documents entering the stage."""

    docs_out: Count | None = None
    """Documents kept by the stage."""

    generated: Count | None = None
    """Synthetic documents added by the stage."""

    removed: dict[str, Count] | None = None
    """Removed documents by reason."""


class CurationJobStatus(_Status):
    """Observed state, written by the operator through the status subresource."""

    phase: Phase | None = None
    """Summary of the job's state."""

    observed_generation: Count | None = None
    """Generation last acted on."""

    conditions: list[Condition] | None = Field(
        default=None,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Ready, Running, Succeeded, Failed and Suspended, each with its own reason and message
    (`kubectl wait --for=condition=Succeeded curationjob/NAME`)."""

    current_stage: str | None = None
    """Stage of the step that runs now (or ran last)."""

    current_step: str | None = None
    """Step that runs now (or ran last)."""

    progress: str | None = None
    """Finished steps / all steps, e.g. `5/13`."""

    steps_done: Count | None = None
    """Finished steps."""

    steps_total: Count | None = None
    """Steps in the plan."""

    docs_in: Count | None = None
    """Documents read from the input."""

    docs_out: Count | None = None
    """Documents in the curated output."""

    docs_removed: Count | None = None
    """Documents rejected by all stages."""

    docs_generated: Count | None = None
    """Synthetic documents added by all stages."""

    kept_percent: float | None = None
    """docsOut / docsIn, in percent."""

    start_time: Timestamp | None = None
    """When the first step Job was created."""

    completion_time: Timestamp | None = None
    """When the job succeeded or failed."""

    message: str | None = None
    """Human summary of the current state."""

    stages: list[StageStatus] | None = None
    """Per-stage progress and document counts."""

    steps: list[StepStatus] | None = None
    """Per-step progress, in plan order."""


def status_document(status: dict[str, Any]) -> dict[str, Any]:
    """`status` checked against the model and in its wire form (camelCase, no empty fields).

    Raises pydantic's ValidationError for a key the model (and so the CRD) does not have."""
    return CurationJobStatus.model_validate(status).model_dump(mode="json", by_alias=True, exclude_none=True)
