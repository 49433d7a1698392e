"""Length-sorted, token-budgeted batching with out-of-memory back-off.

Sorting by length means a batch pads only to its own longest member, so almost no compute goes
to padding; a token budget (longest length x batch size) instead of a fixed batch size keeps
memory flat whether documents are short or long. When a batch does not fit, the budget halves
and the same documents are tried again: OOM-safe without tuning per GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from curation.errors import StepError
from curation.models import metrics

log = logging.getLogger(__name__)

CPU_BUDGETS = {"embed": 16384, "score": 8192}
GPU_BUDGETS = {"embed": 262144, "score": 131072}


def default_budget(kind: str, device: str, configured: int | None) -> int:
    if configured is not None:
        return configured
    return (GPU_BUDGETS if device.startswith("cuda") else CPU_BUDGETS)[kind]


def next_batch(
    order: np.ndarray, start: int, lengths: np.ndarray, budget: int, max_size: int | None
) -> np.ndarray:
    """Indices of the batch starting at `start` of `order` (sorted by length, longest first)."""
    longest = max(1, int(lengths[order[start]]))
    size = max(1, budget // longest)
    if max_size is not None:
        size = min(size, max_size)
    return order[start : start + size]


def is_out_of_memory(err: BaseException) -> bool:
    name = type(err).__name__
    return name in {"OutOfMemoryError", "OutOfMemoryError_"} or "out of memory" in str(err).lower()


def _free_accelerator_memory() -> None:
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_length_sorted(
    lengths: Sequence[int] | np.ndarray,
    budget: int,
    run_batch: Callable[[np.ndarray], None],
    *,
    stage_type: str,
    max_size: int | None = None,
) -> int:
    """Call `run_batch(indices)` over all items, longest first, halving the budget on OOM.

    Returns the final budget (callers may remember it for their next shard)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    start = 0
    while start < len(order):
        batch = next_batch(order, start, lengths, budget, max_size)
        try:
            run_batch(batch)
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            _free_accelerator_memory()
            metrics.OOM_RETRIES.labels(stage_type=stage_type).inc()
            if len(batch) == 1:
                raise StepError(
                    f"{stage_type}: out of memory on a single document of {lengths[batch[0]]} tokens; "
                    "lower maxTokens or request a GPU with more memory"
                ) from None
            budget = max(1, budget // 2)
            if max_size is not None:
                max_size = max(1, len(batch) // 2)
            log.warning(
                "%s: out of memory with %d items; retrying with budget %d", stage_type, len(batch), budget
            )
            continue
        start += len(batch)
    return budget
