"""The local runner: every step of the plan on one machine, ranks in a process pool.

Resumable: ranks with a completion marker are skipped, so rerunning after a crash (or a
Ctrl-C) continues where it stopped and produces the same output.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Any

from curation.dataset import RankMarker
from curation.executor import (
    claim_output,
    disk_full_is_an_error,
    remove_temporary_files,
    restart_output,
    run_rank,
)
from curation.layout import RunLayout
from curation.locking import output_lock
from curation.plan import Step, plan_steps
from curation.preflight import preflight
from curation.spec import PipelineSpec

MODEL_STAGES = {"quality-score", "semantic-dedup", "redundancy-control", "rephrase", "evaluate"}  # torch: spawn
THREADED_STEPS = {"finalize.tokenize"}  # fast tokenizers' thread pool: split the cores between ranks too
PR_SET_PDEATHSIG = 1  # linux/prctl.h
__all__ = ["describe_summary", "preflight", "run_pipeline"]


def _die_with_parent(parent: int) -> None:
    """Pool initializer: a worker never outlives the runner, however the runner ends (SIGKILL and
    SIGTERM included). Linux: the kernel kills the worker when its parent dies (PR_SET_PDEATHSIG);
    elsewhere, and as a fallback, a thread checks the parent every second."""
    from curation.locking import release_inherited

    release_inherited()  # a forked worker must not keep the output's lock alive
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the runner died before the line above took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="thresher-parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)


def _run_one(spec_json: str, step_id: str, rank: int, world_size: int) -> dict[str, Any]:
    spec = PipelineSpec.model_validate_json(spec_json)
    return run_rank(spec, step_id, rank, world_size)


def _pool_context(step: Step, spec: PipelineSpec | None = None) -> Any:
    # Model stages load torch: fork after torch has threads is unsafe, so spawn fresh processes.
    # The same for any object-store path: the S3 client (AWS SDK threads and connection pools)
    # that preflight started in this process hangs in a forked child.
    from curation import storage

    uses_store = spec is not None and any(
        storage.is_uri(p) for p in (spec.input.path, spec.output.path, spec.models.path))
    # The tokenize steps too: a forked child's fast tokenizer (a Rust thread pool) hangs when the
    # parent used one first (preflight loads the tokenizer; found in the test suite after torch).
    threaded = step.stage_type in MODEL_STAGES or step.id in THREADED_STEPS
    return mp.get_context("spawn" if threaded or uses_store else "fork")


@contextlib.contextmanager
def _limit_threads(step: Step, procs: int) -> Iterator[None]:
    """Model stages: split the cores between ranks. Two ranks with all cores each oversubscribe
    the CPU (measured: 2.3x slower on 2 cores). Set while the pool spawns its processes."""
    before = os.environ.get("OMP_NUM_THREADS")
    if (step.stage_type in MODEL_STAGES or step.id in THREADED_STEPS) and before is None:
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
    notify: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the whole pipeline; returns the summary. `notify` receives notes for the
    user (e.g. skipped input files) before the first step."""
    survey = preflight(spec)
    if notify is not None and survey.skipped_note():
        notify(f"note: {survey.skipped_note()}")
    with disk_full_is_an_error(spec.output.path), output_lock(spec.output.path):
        if restart:
            restart_output(spec)
        claim_output(spec, check_input=True)
        _run_steps(spec, workers, progress)
        remove_temporary_files(spec)  # also after a rerun that had nothing left to do
        summary: dict[str, Any] = RunLayout.of(spec.output.path).summary.read_json()
    return summary


def _run_steps(spec: PipelineSpec, workers: int | None, progress: bool) -> None:
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
                max_workers=procs, mp_context=_pool_context(step, spec), initializer=_die_with_parent,
                initargs=(os.getpid(),),
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
    tokens = summary.get("tokens")
    if tokens:
        lines.append(f"tokens: {tokens['tokens']:,} in {tokens['documents']:,} documents ({tokens['tokenizer']}), "
                     f"{tokens['files']} merged file(s) ({', '.join(tokens['formats'])}) in {tokens['path']}")
    return "\n".join(lines)

