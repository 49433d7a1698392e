"""Run one rank of one step: the unit of work for a local process and for a step pod.

Safe to repeat: a rank whose completion marker exists returns its recorded statistics; a rank
killed mid-way resumes at shard granularity and rewrites its files atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pyarrow.fs as pafs

from curation import storage
from curation.corpus import CorpusView
from curation.dataset import TMP_PREFIX, Location
from curation.errors import DiskFullError, SpecError, StepError
from curation.layout import RunLayout
from curation.locking import LOCK_NAME
from curation.memory import tune_allocators
from curation.plan import EVALUATE, FINALIZE, INGEST, Step, data_fingerprint, find_step, plan_steps
from curation.spec import PipelineSpec
from curation.stages import load_stage_class
from curation.stages.base import StepContext

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
TMP_NAME = re.compile(r"^" + re.escape(TMP_PREFIX) + r"[0-9a-f]{32}-")


def with_output(spec: PipelineSpec, output: str | None) -> PipelineSpec:
    if not output:
        return spec
    return spec.model_copy(update={"output": spec.output.model_copy(update={"path": output})})


def with_paths(spec: PipelineSpec, input_path: str | None, models_path: str | None,
               eval_set: str | None = None) -> PipelineSpec:
    """Override where input, models and the evaluation set are found (a pod's mount paths); the
    data meaning is unchanged."""
    update: dict[str, Any] = {}
    if input_path:
        update["input"] = spec.input.model_copy(update={"path": input_path})
    if models_path:
        update["models"] = spec.models.model_copy(update={"path": models_path})
    if eval_set and spec.evaluate is not None:
        update["evaluate"] = spec.evaluate.model_copy(update={"eval_set": eval_set})
    return spec.model_copy(update=update) if update else spec


def input_identity(spec: PipelineSpec) -> str:
    """Hash of the input file list with sizes and modification times: a changed input is noticed."""
    from curation.stages.ingest import list_input_files

    entries = []
    for f in list_input_files(spec):
        info = f.fs.get_file_info(f.path)
        entries.append([f.path, info.size, info.mtime_ns])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def claim_output(spec: PipelineSpec, check_input: bool = False) -> None:
    """Record which spec (and which input) owns the output folder; refuse a folder owned by a
    different spec, and an output whose input changed since it was started."""
    layout = RunLayout.of(spec.output.path)
    fp = data_fingerprint(spec)
    if layout.fingerprint.exists():
        record = layout.fingerprint.read_json()
        owner = record.get("fingerprint")
        if owner != fp:
            raise SpecError(
                f"output.path {spec.output.path} holds a run of a different spec (fingerprint {owner}, "
                f"this spec {fp}); choose a new output folder or delete the old one"
            )
        if check_input and record.get("input") not in (None, input_identity(spec)):
            raise SpecError(
                f"output.path {spec.output.path}: the input changed since this output was started "
                f"(files added, removed or modified under {spec.input.path}); use a new output or "
                "rerun with --restart"
            )
        return
    refuse_foreign_output(spec)
    layout.fingerprint.write_json_atomic({"fingerprint": fp, "input": input_identity(spec),
                                          "spec": spec.model_dump(mode="json", by_alias=True)})


def refuse_foreign_output(spec: PipelineSpec) -> None:
    """An existing folder with files that Thresher did not write is never used (or deleted)."""
    layout = RunLayout.of(spec.output.path)
    if layout.fingerprint.exists() or not layout.root.exists():
        return
    if [n for n in layout.root.list(recursive=True, hidden=True) if n != LOCK_NAME]:
        raise SpecError(
            f"output.path {spec.output.path} exists and is not a Thresher output folder; "
            "choose an empty or new folder"
        )


def restart_output(spec: PipelineSpec) -> None:
    """Delete a Thresher output folder's contents (refuses any other folder)."""
    layout = RunLayout.of(spec.output.path)
    if not layout.root.exists():
        return
    if not layout.fingerprint.exists():
        raise SpecError(f"output.path {spec.output.path} is not a Thresher output folder; refusing to delete it")
    for info in layout.root.fs.get_file_info(pafs.FileSelector(layout.root.path)):
        if info.base_name == LOCK_NAME:
            continue  # held by this run: deleting it would let a second run in
        if info.type == pafs.FileType.Directory:
            layout.root.fs.delete_dir(info.path)
        else:
            layout.root.fs.delete_file(info.path)


def remove_temporary_files(spec: PipelineSpec) -> int:
    """Delete the `.tmp-*` files a killed writer left anywhere below the output (every finished
    file was renamed from one); call only when no rank is writing. Returns how many went."""
    layout = RunLayout.of(spec.output.path)
    if not layout.root.is_dir():
        return 0
    stale = [n for n in layout.root.list(recursive=True, hidden=True) if n.rsplit("/", 1)[-1].startswith(TMP_PREFIX)]
    for name in stale:
        with contextlib.suppress(FileNotFoundError):
            layout.root.fs.delete_file(layout.root.join(name).path)
    return len(stale)


@contextlib.contextmanager
def disk_full_is_an_error(output_path: str) -> Iterator[None]:
    """ENOSPC (or a full quota) anywhere inside becomes one line naming the path being written; an
    object store's refusal or network failure becomes one line naming the endpoint and bucket."""
    try:
        yield
    except OSError as err:
        if err.errno not in DISK_FULL:
            converted = storage.as_storage_error(err)
            if converted is not None:
                raise converted from None
            raise
        where = err.filename or _newest_temporary_file(output_path) or f"below {output_path}"
        raise DiskFullError(
            f"disk full writing {where} ({os.strerror(err.errno)}); free space and rerun; the run resumes"
        ) from None


def _newest_temporary_file(output_path: str) -> str | None:
    """The final name of the file most recently being written below the output (a writer that
    failed without saying which file leaves its temporary file behind)."""
    root = Location.of(output_path)
    try:
        infos = root.fs.get_file_info(pafs.FileSelector(root.path, recursive=True, allow_not_found=True))
    except OSError:
        return None
    temporary = [i for i in infos if i.type == pafs.FileType.File and i.base_name.startswith(TMP_PREFIX)]
    if not temporary:
        return None
    newest = max(temporary, key=lambda i: i.mtime_ns or 0)
    final = TMP_NAME.sub("", newest.base_name)
    return f"{newest.path.rsplit('/', 1)[0]}/{final}"


def stage_config(spec: PipelineSpec, step: Step) -> Any:
    if step.stage in (INGEST, FINALIZE, EVALUATE):
        return None
    return spec.stages[step.index - 1]


def build_context(spec: PipelineSpec, step: Step, steps: list[Step]) -> StepContext:
    layout = RunLayout.of(spec.output.path)
    files = layout.stage_files(step.index, step.stage)
    view = None
    num_shards = 0
    if step.stage == INGEST and step.step == "read":
        from curation.stages.ingest import list_input_files

        num_shards = len(list_input_files(spec))
    elif step.stage == EVALUATE:
        pass  # reads the input and the published output, not the (removed) corpus copy
    elif not (step.stage == INGEST and step.step == "index"):
        corpus = layout.corpus
        num_shards = corpus.num_shards
        prior = [layout.stage_files(i, s.stage_name) for i, s in enumerate(spec.stages[: step.index - 1], start=1)]
        view = CorpusView(corpus, prior)
    return StepContext(
        spec=spec,
        step=step,
        plan=tuple(steps),
        work=layout.work,
        input=view,
        files=files,
        scratch=layout.stage_scratch(step.index, step.stage),
        models=Location.of(spec.models.path),
        num_shards=num_shards,
    )


def check_dependencies(step: Step, steps: list[Step], layout: RunLayout) -> None:
    """A step may start only when every rank of the step before it has finished."""
    from curation.dataset import RankMarker

    pos = [s.id for s in steps].index(step.id)
    if pos == 0:
        return
    before = steps[pos - 1]
    if not RankMarker(layout.work, before.id).all_done(before.world_size):
        raise StepError(f"step {step.id} cannot start: step {before.id} has not finished all its ranks")


def run_rank(spec: PipelineSpec, step_id: str, rank: int, world_size: int | None = None) -> dict[str, Any]:
    """Run one rank of one step; returns the rank's statistics (also stored in its marker)."""
    from curation import storage
    from curation.dataset import READS, RankMarker

    storage.configure(spec.storage)
    steps = plan_steps(spec)  # once per rank: the context hands the plan to the stage
    step = find_step(spec, step_id, steps)
    if world_size is None:
        world_size = step.world_size
    if world_size != step.world_size:
        raise SpecError(
            f"step {step.id} runs with world size {step.world_size} for this spec, not {world_size} "
            "(world size must match the plan; see `thresher validate`)"
        )
    if not 0 <= rank < world_size:
        raise SpecError(f"rank {rank} is outside 0..{world_size - 1}")
    tune_allocators()
    layout = RunLayout.of(spec.output.path)
    if step.id != steps[0].id and not layout.fingerprint.exists():
        raise StepError(f"{spec.output.path}: no run found (run step {steps[0].id} first)")
    with disk_full_is_an_error(spec.output.path):
        claim_output(spec)
        marker = RankMarker(layout.work, step.id)
        if marker.is_done(rank, world_size):
            return {**marker.read(rank, world_size), "skipped": True}
        check_dependencies(step, steps, layout)
        started = time.time()
        ctx = build_context(spec, step, steps)
        cls = load_stage_class(step.stage_type)
        stage = cls(stage_config(spec, step), spec)
        reads = dataclasses.replace(READS)
        stats = stage.run(ctx, rank, world_size)
        stats = {**stats, "objects_read": READS.objects - reads.objects, "bytes_read": READS.bytes - reads.bytes,
                 "step": step.id, "rank": rank, "world_size": world_size, "started": started,
                 "finished": time.time()}
        marker.mark(rank, world_size, stats)
        if step.id == steps[-1].id:  # the run is complete and nothing else writes: sweep
            remove_temporary_files(spec)
    return stats
