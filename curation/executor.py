"""Run one rank of one step: the unit of work for a local process and for a step pod.

Safe to repeat: a rank whose completion marker exists returns its recorded statistics; a rank
killed mid-way resumes at shard granularity and rewrites its files atomically.
"""

from __future__ import annotations

import time
from typing import Any

from curation.dataset import Location
from curation.errors import SpecError, StepError
from curation.layout import RunLayout
from curation.plan import FINALIZE, INGEST, Step, data_fingerprint, find_step, plan_steps
from curation.spec import PipelineSpec
from curation.stages import load_stage_class
from curation.stages.base import StepContext


def with_output(spec: PipelineSpec, output: str | None) -> PipelineSpec:
    if not output:
        return spec
    return spec.model_copy(update={"output": spec.output.model_copy(update={"path": output})})


def with_paths(spec: PipelineSpec, input_path: str | None, models_path: str | None) -> PipelineSpec:
    """Override where input and models are found (a pod's mount paths); the data meaning is unchanged."""
    update: dict[str, Any] = {}
    if input_path:
        update["input"] = spec.input.model_copy(update={"path": input_path})
    if models_path:
        update["models"] = spec.models.model_copy(update={"path": models_path})
    return spec.model_copy(update=update) if update else spec


def claim_output(spec: PipelineSpec) -> None:
    """Record which spec owns the output folder; refuse a folder owned by a different spec."""
    layout = RunLayout.of(spec.output.path)
    fp = data_fingerprint(spec)
    if layout.fingerprint.exists():
        owner = layout.fingerprint.read_json().get("fingerprint")
        if owner != fp:
            raise SpecError(
                f"output.path {spec.output.path} holds a run of a different spec (fingerprint {owner}, "
                f"this spec {fp}); choose a new output folder or delete the old one"
            )
        return
    if layout.root.exists() and layout.root.list(recursive=True):
        raise SpecError(
            f"output.path {spec.output.path} exists and is not a Thresher output folder; "
            "choose an empty or new folder"
        )
    layout.fingerprint.write_json_atomic({"fingerprint": fp, "spec": spec.model_dump(mode="json", by_alias=True)})


def stage_config(spec: PipelineSpec, step: Step) -> Any:
    if step.stage in (INGEST, FINALIZE):
        return None
    return spec.stages[step.index - 1]


def previous_output_step(spec: PipelineSpec, step: Step) -> Step | None:
    """The step that wrote the dataset this step reads (the previous stage's last step)."""
    steps = plan_steps(spec)
    prior = [s for s in steps if s.index == step.index - 1 and s.writes_output]
    return prior[-1] if prior else None


def num_shards(spec: PipelineSpec, step: Step, layout: RunLayout) -> int:
    if step.stage == INGEST:
        from curation.stages.ingest import list_input_files

        return len(list_input_files(spec))
    prev = previous_output_step(spec, step)
    if prev is None:
        return 0
    return len(layout.stage_output(prev.index, prev.stage).shard_names())


def build_context(spec: PipelineSpec, step: Step) -> StepContext:
    layout = RunLayout.of(spec.output.path)
    prev = previous_output_step(spec, step)
    return StepContext(
        spec=spec,
        step=step,
        work=layout.work,
        input=layout.stage_output(prev.index, prev.stage) if prev else None,
        output=layout.stage_output(step.index, step.stage),
        rejected=layout.stage_rejected(step.index, step.stage),
        scratch=layout.stage_scratch(step.index, step.stage),
        models=Location.of(spec.models.path),
        num_shards=num_shards(spec, step, layout),
    )


def check_dependencies(spec: PipelineSpec, step: Step, layout: RunLayout) -> None:
    """A step may start only when every rank of the step before it has finished."""
    from curation.dataset import RankMarker

    steps = plan_steps(spec)
    pos = [s.id for s in steps].index(step.id)
    if pos == 0:
        return
    before = steps[pos - 1]
    if not RankMarker(layout.work, before.id).all_done(before.world_size):
        raise StepError(f"step {step.id} cannot start: step {before.id} has not finished all its ranks")


def run_rank(spec: PipelineSpec, step_id: str, rank: int, world_size: int | None = None) -> dict[str, Any]:
    """Run one rank of one step; returns the rank's statistics (also stored in its marker)."""
    from curation.dataset import RankMarker

    step = find_step(spec, step_id)
    if world_size is None:
        world_size = step.world_size
    if world_size != step.world_size:
        raise SpecError(
            f"step {step.id} runs with world size {step.world_size} for this spec, not {world_size} "
            "(world size must match the plan; see `thresher validate`)"
        )
    if not 0 <= rank < world_size:
        raise SpecError(f"rank {rank} is outside 0..{world_size - 1}")
    layout = RunLayout.of(spec.output.path)
    if step.stage != INGEST and not layout.fingerprint.exists():
        raise StepError(f"{spec.output.path}: no run found (run step {INGEST}.read first)")
    claim_output(spec)
    marker = RankMarker(layout.work, step.id)
    if marker.is_done(rank, world_size):
        return {**marker.read(rank, world_size), "skipped": True}
    check_dependencies(spec, step, layout)
    started = time.time()
    ctx = build_context(spec, step)
    cls = load_stage_class(step.stage_type)
    stage = cls(stage_config(spec, step), spec)
    stats = stage.run(ctx, rank, world_size)
    stats = {**stats, "step": step.id, "rank": rank, "world_size": world_size, "started": started,
             "finished": time.time()}
    marker.mark(rank, world_size, stats)
    return stats

