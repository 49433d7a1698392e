"""The pipeline spec: the single source of truth for local runs and CurationJobs.

A local pipeline file and a CurationJob's ``spec`` are the same document. Field names are
camelCase on the wire (Kubernetes convention); snake_case is accepted too.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from curation.errors import SpecError
from curation.params import CamelModel
from curation.params.base import StageDef
from curation.params.evaluate import EvaluateSpec
from curation.params.tokenize import TokenizeSpec
from curation.registry import stage_defs

API_GROUP = "thresher.dev"
API_VERSION = "v1alpha1"
KIND = "CurationJob"
STAGE_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$")
QUANTITY_RE = r"^[0-9]+(\.[0-9]+)?([eE][0-9]+|[mkMGTPE]i?|[KMGTPE]i|m)?$"


def _member(type_name: str) -> str:
    return type_name.upper().replace("-", "_")


# Every stage type the registry declares (`curation/registry.py`), e.g. StageType.EXACT_DEDUP.
_enum: Any = StrEnum
StageType: Any = _enum("StageType", {_member(d.type): d.type for d in stage_defs()})


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

    read_in_place: bool = True
    """Read Parquet input in place: ingest checks every file and records, per canonical shard, a
    run of whole row groups (plus ids and sizes); the stages read the text from the input files,
    and the text is written once, when the output is published. A file whose row groups hold more
    than 2 x `shardTextBytes` of text, and JSON lines input, are copied into canonical shards
    instead. The input must not change during the run: every read compares the file's size and
    modification time with ingest's, and a changed file is an error. False: copy every file into
    `_work/` (e.g. when the input sits on storage the stages should not read again)."""

    source_field: str | None = Field(default=None, min_length=1)
    """Column naming each document's source (e.g. `source`, `dataset`, `crawl`): the
    `source-policy` stage's rules and its per-source accounting read it. With `sourceFromPath`,
    the name of the column ingest writes (default `source`)."""

    source_from_path: str | None = Field(default=None, min_length=1, max_length=1000)
    """Derive the source from each input file's path, relative to `path`, by this regular
    expression (Python syntax, searched): its first group, or the whole match without one, is
    the source of every document in the file — e.g. `^([^/]+)/` for one folder per source. A
    file whose path does not match is an error at preflight. The input must not already have the
    source column."""

    @model_validator(mode="after")
    def _distinct_fields(self) -> InputSpec:
        if self.id_field is not None and self.id_field == self.text_field:
            raise ValueError(
                f"idField and textField both name '{self.text_field}'; the id must be its own column"
            )
        if self.source_field is not None and self.source_field in (self.text_field, self.id_field):
            raise ValueError(f"sourceField names '{self.source_field}', the text or id column; name its own column")
        if self.source_from_path is not None:
            try:
                re.compile(self.source_from_path)
            except re.error as err:
                raise ValueError(f"sourceFromPath: invalid regular expression ({err})") from None
        return self

    @property
    def source_column(self) -> str | None:
        """The canonical column holding the source, if the input has one."""
        if self.source_from_path is not None:
            return self.source_field or "source"
        return self.source_field


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

    tokenize: TokenizeSpec | None = None
    """Also write the curated documents, in output order, as training-ready token files under
    `tokens/` (Megatron-LM `.bin`/`.idx` and/or NumPy), merged into a few files; token counts per
    source and per stage go to `summary.json` and the report. See docs/tokenized-output.md."""


class ModelsSpec(CamelModel):
    """Where model weights live. Never a hub name: models are loaded offline from this location."""

    path: str = "models"
    """Folder of model directories / files. Relative paths as for the input."""

    pvc: str | None = None
    """PersistentVolumeClaim holding the models (cluster only; mounted read-only)."""


class S3Spec(CamelModel):
    """An S3-compatible object store (Ceph RGW, MinIO, SeaweedFS, AWS) for `s3://bucket/prefix` paths.

    Credentials never appear in a spec: locally the standard AWS variables or profile are used; in a
    cluster the operator maps the keys of `credentialsSecret` into the step pods. No request ever
    goes to a cloud metadata endpoint."""

    endpoint: str | None = Field(default=None, pattern=r"^https?://[^/\s]+/?$")
    """`http(s)://host[:port]` of the store's S3 API (the scheme decides TLS). Default: AWS's endpoint
    for `region`."""

    region: str = "us-east-1"
    """Region sent in request signatures (on-prem stores accept any; most use `us-east-1`)."""

    addressing: Literal["path", "virtual"] = "path"
    """`path` (`endpoint/bucket/key`, what on-prem stores expect) or `virtual` (`bucket.endpoint/key`)."""

    ca_bundle: str | None = None
    """PEM file of the CA that signed the endpoint's certificate (a path inside the pod, e.g. from
    a mounted ConfigMap). TLS certificates are always verified."""

    credentials_secret: str | None = None
    """Secret (in the job's namespace) with keys `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`
    (optionally `AWS_SESSION_TOKEN`), mapped into every step pod (cluster only)."""

    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    """Give up connecting to the endpoint after this long (an unreachable store fails fast)."""

    request_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    """Give up on a single request after this long."""

    max_attempts: int = Field(default=3, ge=1, le=10)
    """Attempts per request (retries back off); permanent errors such as a refused key are not retried."""


class StorageSpec(CamelModel):
    """Settings of the stores that `s3://` paths name."""

    s3: S3Spec | None = None
    """The S3-compatible store for every `s3://` path of this spec."""


class Resources(CamelModel):
    """Per-stage resources for the step pods."""

    gpus: int = Field(default=0, ge=0, le=16)
    """`nvidia.com/gpu` requested per rank."""

    cpu: str | None = Field(default=None, pattern=QUANTITY_RE)
    """CPU request per rank (Kubernetes quantity, e.g. `2` or `500m`)."""

    memory: str | None = Field(default=None, pattern=QUANTITY_RE)
    """Memory request and limit per rank (e.g. `8Gi`)."""


class _StageBase(CamelModel):
    if TYPE_CHECKING:  # set by each stage type's model (`_stage_model`)
        type: str
        params: Any

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
        return self.name or str(self.type)


def _params_required(model: type[Any]) -> bool:
    return any(f.is_required() for f in model.model_fields.values())


def _stage_model(decl: StageDef) -> type[_StageBase]:
    """`{type: <decl.type>, params: <decl.params>}` on top of the fields every stage has."""
    literal: Any = Literal
    params: Any = (decl.params, ...) if _params_required(decl.params) else (decl.params, decl.params())
    name = "".join(part.capitalize() for part in decl.type.split("-")) + "Stage"
    model: type[_StageBase] = create_model(name, __base__=_StageBase, __module__=__name__,
                                           __doc__=f"A `{decl.type}` stage: {decl.title}.",
                                           type=(literal[StageType[_member(decl.type)]], ...), params=params)
    return model


STAGE_MODELS: tuple[type[_StageBase], ...] = tuple(_stage_model(d) for d in stage_defs())
if TYPE_CHECKING:
    StageSpec = _StageBase
else:
    StageSpec = Annotated[Union[STAGE_MODELS], Field(discriminator="type")]  # noqa: UP007


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
    storage: StorageSpec = StorageSpec()
    """Object-store settings for `s3://` paths in `input`, `output` and `models`."""
    stages: list[StageSpec] = Field(min_length=1, max_length=32)
    """Ordered stages; each reads the previous stage's kept documents."""

    evaluate: EvaluateSpec | None = None
    """After finalize, train small proxy models on the input and the curated output at equal tokens
    and compare their held-out loss (`<output>/eval/`; docs/evaluation.md)."""

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
        uris = [(w, getattr(self, w)) for w in ("input", "output", "models") if getattr(self, w).path.startswith("s3://")]
        for what, part in uris:
            if part.pvc:
                raise ValueError(f"{what}.pvc: {what}.path {part.path} is in an object store; remove `pvc`")
        if uris and self.storage.s3 is None:
            raise ValueError(
                f"{uris[0][0]}.path {uris[0][1].path} is an s3:// URI but spec.storage.s3 is not set; "
                "give at least its `endpoint` (or `{}` for AWS itself)"
            )
        if _norm(self.input.path) == _norm(self.output.path) and self.input.pvc == self.output.pvc:
            raise ValueError("output.path must differ from input.path (the input is never modified)")
        if self.evaluate is not None:
            paths = (self.input.path, self.output.path, self.evaluate.eval_set)
            if any(p.startswith("s3://") for p in paths):
                raise ValueError("evaluate: the input, output and evalSet must be local or PVC paths (thresher eval "
                                 "does not read s3:// yet); run `thresher eval` on copies instead")
            if self.input.format != "parquet":
                raise ValueError("evaluate: the raw arm is the input, which must be Parquet (input.format: parquet)")
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


class _DuplicateKeyError(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(key, line, first)
        self.key, self.line, self.first = key, line, first


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges may be overridden by explicit keys
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool):
                continue  # unhashable keys: SafeLoader refuses them itself
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKeyError(key, line, seen[key])
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _read_spec_text(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{p}: no such spec file") from None
    except IsADirectoryError:
        raise SpecError(f"{p}: is a folder, not a spec file; name the pipeline's YAML file") from None
    except UnicodeDecodeError as err:
        raise SpecError(
            f"{p}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
            "save the spec as UTF-8"
        ) from None
    except OSError as err:
        raise SpecError(f"{p}: cannot read the spec file ({err.strerror or err})") from None


def load_spec(path: str | Path) -> PipelineSpec:
    """Read a YAML/JSON file holding a CurationJob or a bare spec."""
    p = Path(path)
    text = _read_spec_text(p)
    try:
        docs = [d for d in yaml.load_all(text, Loader=_UniqueKeyLoader) if d is not None]
    except _DuplicateKeyError as dup:
        raise SpecError(
            f"{p}: line {dup.line}: key {dup.key!r} appears twice in one mapping (first on line {dup.first}); "
            "remove one of them"
        ) from None
    except yaml.YAMLError as err:
        raise SpecError(f"{p}: not valid YAML: {err}".replace("\n", " ")) from None
    jobs = [d for d in docs if isinstance(d, dict) and d.get("kind", KIND) == KIND]
    if len(jobs) != 1:
        raise SpecError(f"{p}: expected exactly one CurationJob or pipeline spec, found {len(jobs)}")
    return parse_spec(jobs[0], source=str(p))
