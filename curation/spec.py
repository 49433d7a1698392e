"""The pipeline spec: the single source of truth for local runs and CurationJobs.

A local pipeline file and a CurationJob's ``spec`` are the same document. Field names are
camelCase on the wire (Kubernetes convention); snake_case is accepted too.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from curation.errors import SpecError
from curation.params import (
    CamelModel,
    CurriculumParams,
    ExactDedupParams,
    HeuristicFilterParams,
    MinHashParams,
    QualityScoreParams,
    RedundancyControlParams,
    RephraseParams,
    SemanticDedupParams,
)

API_GROUP = "thresher.dev"
API_VERSION = "v1alpha1"
KIND = "CurationJob"
STAGE_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$")
QUANTITY_RE = r"^[0-9]+(\.[0-9]+)?([eE][0-9]+|[mkMGTPE]i?|[KMGTPE]i|m)?$"


class StageType(StrEnum):
    EXACT_DEDUP = "exact-dedup"
    MINHASH_DEDUP = "minhash-dedup"
    HEURISTIC_FILTER = "heuristic-filter"
    QUALITY_SCORE = "quality-score"
    SEMANTIC_DEDUP = "semantic-dedup"
    REDUNDANCY_CONTROL = "redundancy-control"
    REPHRASE = "rephrase"
    CURRICULUM = "curriculum"


class InputSpec(CamelModel):
    """Where the documents come from."""

    path: str = Field(min_length=1)
    """Folder of Parquet (or JSONL) files. Relative paths are resolved against the working directory
    locally, and against the root of `pvc` in a cluster."""

    format: Literal["parquet", "jsonl"] = "parquet"
    """File format of the input shards."""

    text_field: str = Field(default="text", min_length=1)
    """Column holding the document text."""

    id_field: str | None = None
    """Column holding a stable unique document id. When unset, ids are derived deterministically
    from the source file and row (`<file stem>:<row>`), so reruns agree."""

    pvc: str | None = None
    """PersistentVolumeClaim holding the input (cluster only; mounted read-only)."""

    skip_invalid: bool = False
    """By default a null or non-UTF-8 text is an error naming the file and row. When true, such
    documents go to `rejected/` (reason `invalid-text`) and the run continues."""

    shard_text_bytes: int = Field(default=128 << 20, ge=1)
    """Target size of a canonical shard, in bytes of text. Ingest streams every input file and
    cuts it into shards of about this size, so ranks are balanced and memory is bounded whatever
    the input files look like (one huge file, or thousands of small ones)."""

    @model_validator(mode="after")
    def _distinct_fields(self) -> InputSpec:
        if self.id_field is not None and self.id_field == self.text_field:
            raise ValueError(
                f"idField and textField both name '{self.text_field}'; the id must be its own column"
            )
        return self


class OutputSpec(CamelModel):
    """Where the curated dataset, the rejected set and the reports go."""

    path: str = Field(min_length=1)
    """Output folder (must differ from the input). Holds `data/`, `rejected/`, `summary.json`,
    `report.html` and the `_work/` folder of intermediate files."""

    pvc: str | None = None
    """PersistentVolumeClaim for the output (cluster only)."""

    keep_work: bool = False
    """Keep `_work/` (the canonical corpus copy, every stage's decision files and intermediate files)
    after a successful run. By default it is deleted once the output is published and checked;
    the owner record and completion markers stay, so rerunning a finished run does nothing.
    Output shards follow the canonical shards (`input.shardTextBytes`), or the curriculum's
    `rowsPerShard` when a curriculum orders the documents."""


class ModelsSpec(CamelModel):
    """Where model weights live. Never a hub name: models are loaded offline from this location."""

    path: str = "models"
    """Folder of model directories / files. Relative paths as for the input."""

    pvc: str | None = None
    """PersistentVolumeClaim holding the models (cluster only; mounted read-only)."""


class Resources(CamelModel):
    """Per-stage resources for the step pods."""

    gpus: int = Field(default=0, ge=0, le=16)
    """`nvidia.com/gpu` requested per rank."""

    cpu: str | None = Field(default=None, pattern=QUANTITY_RE)
    """CPU request per rank (Kubernetes quantity, e.g. `2` or `500m`)."""

    memory: str | None = Field(default=None, pattern=QUANTITY_RE)
    """Memory request and limit per rank (e.g. `8Gi`)."""


class _StageBase(CamelModel):
    name: str | None = None
    """Unique stage name (lowercase letters, digits, '-', at most 20 chars); default: the type."""

    resources: Resources = Resources()
    """Resources for this stage's pods."""

    parallelism: int | None = Field(default=None, ge=1, le=1024)
    """Ranks per step of this stage; default: the pipeline's parallelism."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not STAGE_NAME_RE.match(value):
            raise ValueError(
                "stage names use lowercase letters, digits and '-', start and end with a letter "
                "or digit, and are at most 20 characters"
            )
        return value

    @property
    def stage_name(self) -> str:
        return self.name or str(getattr(self, "type"))  # noqa: B009 (set by each subclass)


class ExactDedupStage(_StageBase):
    type: Literal[StageType.EXACT_DEDUP]
    params: ExactDedupParams = ExactDedupParams()


class MinHashDedupStage(_StageBase):
    type: Literal[StageType.MINHASH_DEDUP]
    params: MinHashParams = MinHashParams()


class HeuristicFilterStage(_StageBase):
    type: Literal[StageType.HEURISTIC_FILTER]
    params: HeuristicFilterParams = HeuristicFilterParams()


class QualityScoreStage(_StageBase):
    type: Literal[StageType.QUALITY_SCORE]
    params: QualityScoreParams = QualityScoreParams()


class SemanticDedupStage(_StageBase):
    type: Literal[StageType.SEMANTIC_DEDUP]
    params: SemanticDedupParams = SemanticDedupParams()


class RedundancyControlStage(_StageBase):
    type: Literal[StageType.REDUNDANCY_CONTROL]
    params: RedundancyControlParams = RedundancyControlParams()


class RephraseStage(_StageBase):
    type: Literal[StageType.REPHRASE]
    params: RephraseParams = RephraseParams()


class CurriculumStage(_StageBase):
    type: Literal[StageType.CURRICULUM]
    params: CurriculumParams = CurriculumParams()


StageSpec = Annotated[
    ExactDedupStage
    | MinHashDedupStage
    | HeuristicFilterStage
    | QualityScoreStage
    | SemanticDedupStage
    | RedundancyControlStage
    | RephraseStage
    | CurriculumStage,
    Field(discriminator="type"),
]


class Toleration(CamelModel):
    """A core/v1 Toleration: lets step pods run on nodes with a matching taint."""

    key: str | None = None
    """Taint key to tolerate (e.g. `nvidia.com/gpu`); empty with `Exists` tolerates every taint."""

    operator: Literal["Exists", "Equal"] | None = None
    """`Equal` (the default) matches `value`; `Exists` matches any value of `key`."""

    value: str | None = None
    """Taint value to match with `Equal`."""

    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to tolerate; empty tolerates every effect."""

    toleration_seconds: int | None = None
    """With `NoExecute`: how long a pod stays on the node after the taint appears."""


class PodOverrides(CamelModel):
    """Scheduling and identity settings copied onto every step pod."""

    node_selector: dict[str, str] = {}
    """Node labels every step pod requires (e.g. `{pool: gpu}`)."""

    tolerations: list[Toleration] = []
    """Taints step pods tolerate. GPU steps also tolerate `nvidia.com/gpu` unless listed here."""

    affinity: dict[str, Any] | None = None
    """A core/v1 Affinity object, passed through unchanged."""

    priority_class_name: str | None = None
    """PriorityClass of the step pods (e.g. a low priority for batch curation)."""

    runtime_class_name: str | None = None
    """e.g. `nvidia` on clusters where GPU containers need the NVIDIA runtime class."""

    image_pull_secrets: list[str] = []
    """Names of Secrets (in the job's namespace) for pulling the worker image."""

    service_account_name: str | None = None
    """Default: the chart's worker ServiceAccount (no API rights)."""


class ExtraVolume(CamelModel):
    """An additional PVC mounted into every step pod."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    """Volume name (a DNS label); the pod's volume is called `x-<name>`."""

    pvc: str
    """PersistentVolumeClaim to mount (in the job's namespace)."""

    mount_path: str = Field(pattern=r"^/")
    """Absolute path inside the step pods where the volume is mounted."""

    read_only: bool = True
    """Mount read-only; set false for scratch space the workers write to."""


class PipelineSpec(CamelModel):
    """A curation pipeline: input, ordered stages, output; plus cluster settings for CurationJobs."""

    input: InputSpec
    output: OutputSpec
    models: ModelsSpec = ModelsSpec()
    stages: list[StageSpec] = Field(min_length=1, max_length=32)
    """Ordered stages; each reads the previous stage's kept documents."""

    parallelism: int = Field(default=1, ge=1, le=1024)
    """Ranks per step: processes locally, the completions of each step's Indexed Job in a cluster
    (`concurrency` caps how many of its pods run at once)."""

    image: str | None = None
    """Worker image (cluster only); default: the operator's configured worker image."""

    pod: PodOverrides = PodOverrides()
    """Scheduling and identity settings for every step pod (cluster only)."""

    volumes: list[ExtraVolume] = []
    """Additional PVCs mounted into every step pod (cluster only)."""

    queue_name: str | None = None
    """Kueue LocalQueue; step Jobs get the `kueue.x-k8s.io/queue-name` label."""

    suspend: bool = False
    """Suspend the running step (cluster only); set back to false to resume."""

    retries: int = Field(default=3, ge=0, le=20)
    """Retries per rank of a step before the step (and the job) fails."""

    step_deadline_seconds: int | None = Field(default=None, ge=60)
    """activeDeadlineSeconds of each step Job."""

    concurrency: int | None = Field(default=None, ge=1, le=1024)
    """Pods of a step that run at once (cluster only: the Indexed Job's `parallelism`); the step
    still runs all its ranks (`parallelism`), at most this many at a time. Default: every rank at
    once."""

    engine_resources: Resources = Resources()
    """CPU and memory of the ingest and finalize step pods, which read and publish the whole corpus
    (cluster only; `gpus` must be 0). Unset fields default to cpu `1` and memory `2Gi`."""

    unschedulable_timeout_seconds: int | None = Field(default=None, ge=1)
    """Fail the job (reason `Unschedulable`) once a step pod could not be scheduled for this long
    (cluster only). Default: wait for as long as it takes (e.g. for a GPU node or an autoscaler);
    meanwhile the job stays `Running` with the condition `Ready=False`, reason `Unschedulable`."""

    @model_validator(mode="after")
    def _check(self) -> PipelineSpec:
        names = [s.stage_name for s in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"stage names must be unique; repeated: {', '.join(dupes)} "
                "(give repeated stage types distinct `name`s)"
            )
        if _norm(self.input.path) == _norm(self.output.path) and self.input.pvc == self.output.pvc:
            raise ValueError("output.path must differ from input.path (the input is never modified)")
        return self


def _norm(path: str) -> str:
    return str(Path(path).expanduser()).rstrip("/") or "/"


def format_validation_error(err: ValidationError, prefix: str = "spec") -> str:
    """One line per problem: `spec.stages[1].params.bands: Input should be ...`."""
    lines = []
    for item in err.errors():
        parts: list[str] = [prefix]
        for loc in item["loc"]:
            if isinstance(loc, int):
                parts[-1] += f"[{loc}]"
            elif loc in {t.value for t in StageType}:
                continue  # discriminator tag pydantic inserts into the location
            else:
                parts.append(str(loc))
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown field (check spelling; see `thresher crd` for the schema)"
        elif item["type"] == "union_tag_invalid":
            msg = f"unknown stage type; expected one of: {', '.join(t.value for t in StageType)}"
        lines.append(f"{'.'.join(parts)}: {msg}")
    return "; ".join(lines)


def parse_spec(document: dict[str, Any], source: str = "spec") -> PipelineSpec:
    """Accept a full CurationJob document or a bare spec; raise SpecError with a readable message."""
    if not isinstance(document, dict):
        raise SpecError(f"{source}: expected a mapping (a CurationJob or a pipeline spec)")
    body = document
    if "kind" in document or "apiVersion" in document:
        if document.get("kind") != KIND:
            raise SpecError(f"{source}: kind must be {KIND}, got {document.get('kind')!r}")
        expected = f"{API_GROUP}/{API_VERSION}"
        if document.get("apiVersion") != expected:
            raise SpecError(f"{source}: apiVersion must be {expected}, got {document.get('apiVersion')!r}")
        body = document.get("spec") or {}
    try:
        return PipelineSpec.model_validate(body)
    except ValidationError as err:
        raise SpecError(f"{source}: {format_validation_error(err)}") from None


def load_spec(path: str | Path) -> PipelineSpec:
    """Read a YAML/JSON file holding a CurationJob or a bare spec."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{p}: no such spec file") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise SpecError(f"{p}: not valid YAML: {err}".replace("\n", " ")) from None
    jobs = [d for d in docs if isinstance(d, dict) and d.get("kind", KIND) == KIND]
    if len(jobs) != 1:
        raise SpecError(f"{p}: expected exactly one CurationJob or pipeline spec, found {len(jobs)}")
    return parse_spec(jobs[0], source=str(p))
