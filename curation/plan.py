"""Planning: a spec becomes an ordered list of steps, each run as `world_size` ranks.

This module is pure (pydantic + stdlib): the operator imports it to build one Indexed Job per
step, the local runner to drive its process pool. Step names per stage type live here so that
planning never imports the stage implementations (which load torch lazily).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from curation.errors import SpecError
from curation.params.base import StepKind
from curation.registry import stage_def, stage_defs
from curation.spec import PipelineSpec

__all__ = ["EVALUATE", "FINALIZE", "INGEST", "Step", "StepKind", "plan_steps"]


INGEST = "ingest"
FINALIZE = "finalize"
EVALUATE = "evaluate"  # spec.evaluate: proxy models on the input and the output, after finalize
RESERVED_STAGE_NAMES = {INGEST, FINALIZE, EVALUATE}

# The engine's own steps. Ingest: stream the user's files into canonical shards (map over input
# files), index them (global: the shard list), hash every id into partitions (map) and check that
# no id repeats (reduce). Finalize: publish each shard's kept and rejected rows (map), write the
# ordered output shards when a curriculum ordered the documents (reduce over output shards), check
# conservation exactly per id partition (reduce), then manifests, summary and report (global).
INGEST_STEPS: list[tuple[str, StepKind]] = [
    ("read", StepKind.MAP),
    ("index", StepKind.GLOBAL),
    ("ids", StepKind.MAP),
    ("check", StepKind.REDUCE),
]
FINALIZE_STEPS: list[tuple[str, StepKind]] = [
    ("publish", StepKind.MAP),
    ("order", StepKind.REDUCE),
    ("check", StepKind.REDUCE),
    ("summary", StepKind.GLOBAL),
]
# With `output.tokenize`, before the summary: tokenise each output shard (map), lay the shards out
# in merged files (global: prefix sums of the shards' sizes), write each merged file (reduce).
TOKENIZE_STEPS: list[tuple[str, StepKind]] = [
    ("tokenize", StepKind.MAP),
    ("layout", StepKind.GLOBAL),
    ("merge", StepKind.REDUCE),
]


def finalize_steps(spec: PipelineSpec) -> list[tuple[str, StepKind]]:
    if spec.output.tokenize is None:
        return FINALIZE_STEPS
    return [*FINALIZE_STEPS[:-1], *TOKENIZE_STEPS, FINALIZE_STEPS[-1]]


@dataclass(frozen=True)
class Step:
    """One step of the plan; `id` is what `thresher worker --step` takes."""

    id: str
    stage: str
    stage_type: str
    step: str
    kind: StepKind
    world_size: int
    gpus: int
    index: int  # position of the stage: 0 ingest, 1..n stages, n+1 finalize
    writes_output: bool

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def stage_dir_name(index: int, stage: str) -> str:
    return f"{index:02d}-{stage}"


def stage_uses_gpu(stage_type: str) -> bool:
    """Whether any step of this stage type runs on the stage's GPUs (`resources.gpus`)."""
    return stage_def(stage_type).uses_gpu


def check_stage_gpus(position: int, stage_type: str, gpus: int) -> None:
    """A CPU-only stage type refuses `resources.gpus` instead of silently ignoring it."""
    if gpus and not stage_uses_gpu(stage_type):
        gpu_types = ", ".join(d.type for d in stage_defs() if d.uses_gpu)
        raise SpecError(
            f"spec.stages[{position}].resources.gpus: stage type {stage_type} runs on CPU only, so "
            f"its pods would never use the {gpus} GPU(s); remove `gpus` (GPU stage types: {gpu_types})"
        )


def plan_steps(spec: PipelineSpec) -> list[Step]:
    """The ordered steps of a pipeline. Depends only on the spec, never on the data."""
    steps: list[Step] = [
        Step(f"{INGEST}.{name}", INGEST, INGEST, name, kind, 1 if kind == StepKind.GLOBAL else spec.parallelism,
             0, 0, name == "read")
        for name, kind in INGEST_STEPS
    ]
    for i, stage in enumerate(spec.stages, start=1):
        name = stage.stage_name
        if name in RESERVED_STAGE_NAMES:
            raise SpecError(f"spec.stages[{i - 1}].name: '{name}' is reserved; choose another name")
        check_stage_gpus(i - 1, str(stage.type), stage.resources.gpus)
        table = stage_def(str(stage.type)).steps
        ranks = stage.parallelism or spec.parallelism
        for j, decl in enumerate(table):
            step, kind, gpu = decl.name, decl.kind, decl.gpu
            world = 1 if kind == StepKind.GLOBAL else ranks
            steps.append(
                Step(
                    id=f"{name}.{step}",
                    stage=name,
                    stage_type=str(stage.type),
                    step=step,
                    kind=kind,
                    world_size=world,
                    gpus=stage.resources.gpus if gpu else 0,
                    index=i,
                    writes_output=j == len(table) - 1,
                )
            )
    last = len(spec.stages) + 1
    steps.extend(
        Step(f"{FINALIZE}.{name}", FINALIZE, FINALIZE, name, kind,
             1 if kind == StepKind.GLOBAL else spec.parallelism, 0, last, False)
        for name, kind in finalize_steps(spec)
    )
    if spec.evaluate is not None:  # reads the published output: after the summary, on its own GPUs
        steps.append(Step(f"{EVALUATE}.run", EVALUATE, EVALUATE, "run", StepKind.GLOBAL, 1, spec.evaluate.gpus,
                          last + 1, False))
    return steps


def find_step(spec: PipelineSpec, step_id: str, steps: list[Step] | None = None) -> Step:
    steps = steps if steps is not None else plan_steps(spec)
    for step in steps:
        if step.id == step_id:
            return step
    raise SpecError(f"unknown step '{step_id}'; this spec's steps are: {', '.join(s.id for s in steps)}")


def data_fingerprint(spec: PipelineSpec) -> str:
    """Hash of everything that changes the data (not cluster settings such as image or suspend)."""
    doc = spec.model_dump(
        mode="json",
        by_alias=True,
        include={"input", "output", "models", "stages", "parallelism"},
    )
    doc["output"] = {}
    doc["input"].pop("readInPlace", None)  # where the text is read from: the same data either way
    if spec.output.tokenize is not None:  # token files are data too (absent: fingerprints unchanged)
        doc["output"] = {"tokenize": spec.output.tokenize.model_dump(mode="json", by_alias=True,
                                                                   exclude={"batch_documents"})}
    for stage in doc["stages"]:
        stage.pop("resources", None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
