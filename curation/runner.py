"""The local runner: every step of the plan on one machine, ranks in a process pool.

Resumable: ranks with a completion marker are skipped, so rerunning after a crash (or a
Ctrl-C) continues where it stopped and produces the same output.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Any

from curation.dataset import RankMarker
from curation.executor import claim_output, restart_output, run_rank
from curation.layout import RunLayout
from curation.plan import Step, plan_steps
from curation.spec import PipelineSpec

MODEL_STAGES = {"quality-score", "semantic-dedup", "redundancy-control", "rephrase"}


def preflight(spec: PipelineSpec) -> int:
    """Checks that need the data but not the work: fail before anything is written.
    Returns the number of input documents."""
    from curation.dataset import Location
    from curation.errors import SpecError
    from curation.stages.ingest import require_documents

    out = Location.of(spec.output.path)
    for what, other in (("input.path", spec.input.path), ("models.path", spec.models.path)):
        loc = Location.of(other)
        if type(loc.fs) is not type(out.fs):
            continue
        a, b = _resolved(loc), _resolved(out)
        if a.startswith(b) or b.startswith(a):
            raise SpecError(
                f"output.path {spec.output.path} and {what} {other} overlap"
                f"{' (after following symbolic links)' if (a, b) != (loc.path + '/', out.path + '/') else ''}; "
                "the output must be outside them (inputs are never modified)"
            )
    if out.exists() and not out.is_dir():
        raise SpecError(f"output.path {spec.output.path} is a file; choose a folder")
    if os.path.islink(out.path) and not os.path.exists(out.path):
        raise SpecError(f"output.path {spec.output.path} is a dangling symbolic link; remove it or choose another")
    return require_documents(spec)  # also refuses a folder without input files


def _resolved(loc: Any) -> str:
    """A local path with every symbolic link followed (compare real places, not names)."""
    path = os.path.realpath(loc.path) if loc.fs.type_name == "local" else loc.path
    return path.rstrip("/") + "/"


def _run_one(spec_json: str, step_id: str, rank: int, world_size: int) -> dict[str, Any]:
    spec = PipelineSpec.model_validate_json(spec_json)
    return run_rank(spec, step_id, rank, world_size)


def _pool_context(step: Step) -> Any:
    # Model stages load torch: fork after torch has threads is unsafe, so spawn fresh processes.
    return mp.get_context("spawn" if step.stage_type in MODEL_STAGES else "fork")


@contextlib.contextmanager
def _limit_threads(step: Step, procs: int) -> Iterator[None]:
    """Model stages: split the cores between ranks. Two ranks with all cores each oversubscribe
    the CPU (measured: 2.3x slower on 2 cores). Set while the pool spawns its processes."""
    before = os.environ.get("OMP_NUM_THREADS")
    if step.stage_type in MODEL_STAGES and before is None:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // procs))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)


def run_pipeline(
    spec: PipelineSpec,
    workers: int | None = None,
    progress: bool = True,
    restart: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the whole pipeline; returns the summary."""
    preflight(spec)
    if restart:
        restart_output(spec)
    claim_output(spec, check_input=True)
    layout = RunLayout.of(spec.output.path)
    workers = max(1, workers or os.cpu_count() or 1)
    steps = plan_steps(spec)
    spec_json = spec.model_dump_json(by_alias=True)
    bar = _progress(len(steps), progress)
    for step in steps:
        marker = RankMarker(layout.work, step.id)
        todo = [r for r in range(step.world_size) if not marker.is_done(r, step.world_size)]
        started = time.monotonic()
        if bar is not None:
            bar.set_description(f"{step.id:<28}")
        if len(todo) == 1 or workers == 1:
            for rank in todo:
                run_rank(spec, step.id, rank, step.world_size)
        elif todo:
            procs = min(workers, len(todo))
            with _limit_threads(step, procs), ProcessPoolExecutor(
                max_workers=procs, mp_context=_pool_context(step)
            ) as pool:
                futures = [pool.submit(_run_one, spec_json, step.id, r, step.world_size) for r in todo]
                wait(futures, return_when=FIRST_EXCEPTION)
                for fut in futures:  # on the first failure, cancel the ranks not started yet
                    if fut.done() and fut.exception() is not None:
                        for other in futures:
                            other.cancel()
                        raise fut.exception()  # type: ignore[misc]
        if bar is not None:
            bar.set_postfix_str(f"{time.monotonic() - started:.1f}s")
            bar.update(1)
    if bar is not None:
        bar.close()
    summary: dict[str, Any] = layout.summary.read_json()
    return summary


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True, disable=not sys.stderr.isatty())


def describe_summary(summary: dict[str, Any]) -> str:
    """The lines `thresher run` prints at the end."""
    t = summary["totals"]
    lines = [
        f"{t['input_docs']:,} documents in -> {t['real_output_docs']:,} kept ({t['kept_fraction']:.1%}), "
        f"{t['rejected_docs']:,} rejected, {t['synthetic_docs']:,} synthetic; conservation holds",
    ]
    for s in summary["stages"]:
        reasons = sorted(s.get("removed", {}).items(), key=lambda kv: (-kv[1], kv[0]))
        removed = ", ".join(f"{k} {v:,}" for k, v in reasons[:4]) or "nothing removed"
        if len(reasons) > 4:
            removed += f", ... {len(reasons) - 4} more reasons (summary.json)"
        lines.append(f"  {s['name']:<20} {s.get('docs_in', 0):>8,} -> {s.get('docs_out', 0):>8,}  "
                     f"{s.get('seconds', 0):6.1f}s  {removed}")
    return "\n".join(lines)

