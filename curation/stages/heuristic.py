"""Heuristic quality filter: Gopher quality, Gopher repetition, C4 and FineWeb rules in one map step.

Rule families run in a fixed order (gopher-quality, gopher-repetition, c4, fineweb) and a
rejected document carries the first failing rule, `<family>:<rule>`. Every family judges the
document as it came in; C4's optional line removal only changes what is written for kept
documents, and always leaves a record (`c4_lines_removed`, plus `c4_text` in `annotate` mode).

C4 reading: C4 mixes page rules (reject the document: lorem ipsum, curly bracket, bad words, too
few sentences) with line rules (drop lines without terminal punctuation, with too few words, with
"javascript" or cookie/terms policies). We apply the page rules as a document filter and keep the
line rules off by default. FineWeb already dropped the terminal-punctuation line rule (it removed
too much good text in their ablations); we go further because a filter that rewrites text breaks
"annotate, then select": a document would leave the stage different from how it entered, with
nothing to show for it. Turn them on with `c4.lineRemoval` (`annotate` or `replace`); see
`curation.params.heuristic.C4Rules`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from curation.dataset import TEXT
from curation.memory import tune_allocators
from curation.params.heuristic import HeuristicFilterParams
from curation.stages.base import Reasons, Stage, StepContext
from curation.stages.heuristic_rules import (
    C4Cleaning,
    Check,
    TextBatch,
    c4_checks,
    c4_clean_lines,
    fineweb_checks,
    first_failures,
    gopher_quality_checks,
    gopher_repetition_checks,
)

C4_TEXT = "c4_text"
C4_LINES_REMOVED = "c4_lines_removed"
BATCH_ROWS = 4096  # documents measured together: big enough to amortise, small enough for memory


def retain_freed_memory() -> bool:
    """The allocator settings of `curation.memory` (run_rank applies them to every step; called
    here too so the filter gets them when used as a library)."""
    return tune_allocators()


def evaluate(texts: Any, params: HeuristicFilterParams) -> tuple[list[str | None], C4Cleaning | None]:
    """Reasons per document (None = keep) and, when C4 line removal is on, the cleaned texts."""
    batch = texts if isinstance(texts, TextBatch) else TextBatch(texts)
    cleaning = None
    if params.c4.enabled and params.c4.line_removal != "off":
        cleaning = c4_clean_lines(batch, params.c4)

    def checks() -> Any:
        # A generator: a family is measured only while some document is still undecided.
        families: list[tuple[bool, Any]] = [
            (params.gopher_quality.enabled, lambda: gopher_quality_checks(batch, params.gopher_quality)),
            (
                params.gopher_repetition.enabled,
                lambda: gopher_repetition_checks(batch, params.gopher_repetition),
            ),
            (params.c4.enabled, lambda: c4_checks(batch, params.c4, cleaning)),
            (params.fineweb.enabled, lambda: fineweb_checks(batch, params.fineweb)),
        ]
        for enabled, family in families:
            if enabled:
                family_checks: list[Check] = family()
                yield from family_checks

    return first_failures(batch.n, checks()), cleaning


def annotate_kept(table: pa.Table, reasons: Reasons, cleaning: C4Cleaning, mode: str) -> pa.Table:
    """The kept rows with C4's line removal recorded (and applied in `replace` mode)."""
    keep = pa.array([r is None for r in reasons], pa.bool_())
    cleaned = cleaning.text.filter(keep)
    removed = pa.array(cleaning.lines_removed, pa.int64()).filter(keep)
    kept = table.filter(keep)
    for column in (C4_TEXT, C4_LINES_REMOVED):
        if column in kept.column_names:
            kept = kept.drop_columns([column])
    if mode == "replace":
        kept = kept.set_column(kept.column_names.index(TEXT), TEXT, cleaned)
    else:
        kept = kept.append_column(C4_TEXT, cleaned)
    return kept.append_column(C4_LINES_REMOVED, removed)


def evaluate_column(
    texts: pa.ChunkedArray | pa.Array, params: HeuristicFilterParams, batch_rows: int = BATCH_ROWS
) -> tuple[list[str | None], C4Cleaning | None]:
    """`evaluate` over slices of `batch_rows` documents: memory stays bounded on big shards."""
    retain_freed_memory()
    reasons: list[str | None] = []
    cleanings: list[C4Cleaning] = []
    for start in range(0, len(texts), batch_rows):
        part = texts.slice(start, batch_rows)
        part_reasons, cleaning = evaluate(TextBatch(part), params)
        reasons.extend(part_reasons)
        if cleaning is not None:
            cleanings.append(cleaning)
    if not cleanings:
        if params.c4.enabled and params.c4.line_removal != "off":  # empty shard
            empty = np.zeros(0, dtype=np.int64)
            return reasons, C4Cleaning(pa.array([], pa.string()), empty, empty)
        return reasons, None
    return reasons, C4Cleaning(
        pa.concat_arrays([c.text for c in cleanings]),
        np.concatenate([c.lines_removed for c in cleanings]),
        np.concatenate([c.lines_left for c in cleanings]),
    )


class HeuristicFilterStage(Stage):
    """Rule-based quality filter (one map step, `filter`)."""

    type_name = "heuristic-filter"
    steps = ("filter",)

    def step_filter(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        params = self.params
        if not isinstance(params, HeuristicFilterParams):
            raise TypeError(f"heuristic filter got params of type {type(params).__name__}")

        def decide(table: pa.Table, shard: int) -> tuple[Reasons, pa.Table | None]:
            reasons, cleaning = evaluate_column(table.column(TEXT), params)
            if cleaning is None:
                return reasons, None
            return reasons, annotate_kept(table, reasons, cleaning, params.c4.line_removal)

        return self.filter_shards(ctx, rank, world_size, decide, columns=[TEXT])
