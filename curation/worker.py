"""`thresher worker`: run exactly one rank of one step (what a step pod runs).

It writes the rank's statistics as compact JSON to the termination message file, so the
operator can read them from the pod status, and serves /metrics while it runs.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from curation.errors import CurationError, SpecError
from curation.executor import run_rank, with_output, with_paths
from curation.plan import find_step
from curation.spec import load_spec

TERMINATION_LIMIT = 4096


def termination_message(stats: dict[str, Any]) -> str:
    """The rank's stats as JSON that fits the 4096-byte termination message (extras dropped first)."""
    keep = ("step", "rank", "world_size", "docs_in", "docs_out", "generated", "removed", "seconds", "skipped")
    small = {k: stats[k] for k in keep if k in stats}
    text = json.dumps(small, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > TERMINATION_LIMIT:
        removed = sorted(small.get("removed", {}).items(), key=lambda kv: -kv[1])
        small["removed"] = dict(removed[:20])
        text = json.dumps(small, separators=(",", ":"), sort_keys=True)[:TERMINATION_LIMIT]
    return text


def write_termination(text: str, path: str | None) -> None:
    target = path or os.environ.get("THRESHER_TERMINATION_LOG") or "/dev/termination-log"
    try:
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError:
        pass  # not in a pod (or no termination log): stdout still carries the stats


def _env_number(name: str, default: int | None, what: str, fix: str) -> int:
    """A whole number from the environment; a missing or malformed value is a one-line error."""
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise SpecError(f"--rank not given and {name} is not set; {fix}")
        return default
    if not value.strip().isdigit():
        raise SpecError(f"{name} is {value!r}, not {what}; {fix}")
    return int(value)


def run_worker(
    spec_path: str,
    step_id: str,
    rank: int | None,
    world_size: int | None,
    output: str | None = None,
    termination_log: str | None = None,
    metrics_port: int | None = None,
    input_path: str | None = None,
    models_path: str | None = None,
    eval_set: str | None = None,
) -> int:
    try:
        if rank is None:
            rank = _env_number("JOB_COMPLETION_INDEX", None, "a rank number (0, 1, 2, ...)",
                               "pass --rank or run in an Indexed Job")
        spec = with_paths(with_output(load_spec(spec_path), output), input_path, models_path, eval_set)
        step = find_step(spec, step_id)
        port = metrics_port if metrics_port is not None else _env_number(
            "THRESHER_METRICS_PORT", 9400, "a port number", "set it to a port, or 0 to serve no metrics")
        from curation import metrics

        try:
            metrics.serve(port)
        except OSError as err:  # a busy port must not fail the data work
            print(f"warning: metrics port {port} unavailable: {err}", file=sys.stderr)
        metrics.RANK_INFO.labels(step.id, str(rank), str(step.world_size)).set(1)
        stats = run_rank(spec, step_id, rank, world_size)
        metrics.record_rank(step.stage_type, step.step, stats)
    except CurationError as err:
        message = f"error: {err.message}"
        write_termination(json.dumps({"error": err.message[:3500], "reason": err.reason}), termination_log)
        print(message, file=sys.stderr)
        return err.exit_code
    text = termination_message(stats)
    write_termination(text, termination_log)
    print(text)
    return 0
