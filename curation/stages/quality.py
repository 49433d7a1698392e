"""quality-score: annotate with a classifier score and/or perplexity, then select globally.

- score (map, GPU): `score/sNNNNN.parquet` holds, for each document alive in shard N, its `_row`
  and its `quality_score` (classifier probability of the positive label, DCLM / FineWeb-Edu
  style) and/or `perplexity` (small causal LM, Ankner et al. 2024). At the end each rank writes
  `hist/<column>/rNNNNN.parquet`: a fine histogram of its shards' scores (see `fine_histogram`)
  with the count, minimum and maximum of every non-empty bin;
- threshold (global): merges the ranks' histograms (a bounded number of bins, whatever the
  corpus size) and turns `threshold` or `keepFraction` into one cutoff over all shards (a global
  percentile, not a per-shard one), and records coarse score histograms for the report;
- filter (map): adds the score columns to every row and rejects the rows below the cutoff
  (`low-quality-score`, `high-perplexity`).

A fine bin holds the scores that agree in sign, exponent and the top `HIST_BITS - 12` mantissa
bits (relative width 2**-12). `keepFraction` keeps the bins from the best down, and of the bin
where the count crosses the target, all of it or none of it, whichever is closer: the kept
fraction is exact when scores differ by more than a bin width near the cutoff (within one bin of
documents otherwise), and ties are kept together, as an exact percentile keeps them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.corpus import ROW, decision_table
from curation.dataset import TEXT, Location, read_table, write_table_atomic
from curation.errors import SpecError, StepError
from curation.stages.base import Stage, StageStats, StepContext, split_bytes

QUALITY, PERPLEXITY = "quality_score", "perplexity"
REASONS = {QUALITY: "low-quality-score", PERPLEXITY: "high-perplexity"}
HISTOGRAM_BINS = 12
HIST_BITS = 24  # sign, 11 exponent bits, 12 mantissa bits of a float64: at most 2**24 bins
BIN, COUNT, LOW, HIGH = "bin", "count", "min", "max"
HIST_SCHEMA = pa.schema([(BIN, pa.uint32()), (COUNT, pa.int64()), (LOW, pa.float64()), (HIGH, pa.float64())])


def goodness(signal: str, values: np.ndarray) -> np.ndarray:
    """Higher is better for selection; NaN becomes -inf (never selected ahead of a real score)."""
    good = np.asarray(values, dtype=np.float64) * (-1.0 if signal == PERPLEXITY else 1.0)
    return np.where(np.isnan(good), -np.inf, good)


def order_bins(good: np.ndarray) -> np.ndarray:
    """Bin of each (non-NaN) float64: the top `HIST_BITS` bits of an order-preserving integer key."""
    bits = np.ascontiguousarray(good, dtype=np.float64).view(np.uint64)
    negative = (bits >> np.uint64(63)).astype(bool)
    key = np.where(negative, ~bits, bits | np.uint64(1 << 63))
    return (key >> np.uint64(64 - HIST_BITS)).astype(np.uint32)


def fine_histogram(good: np.ndarray) -> pa.Table:
    """(bin, count, min, max) of every non-empty bin of goodness values, sorted by bin."""
    good = np.asarray(good, dtype=np.float64)
    if len(good) == 0:
        return HIST_SCHEMA.empty_table()
    bins = order_bins(good)
    order = np.argsort(bins, kind="stable")
    sorted_bins, sorted_good = bins[order], good[order]
    starts = np.flatnonzero(np.r_[True, sorted_bins[1:] != sorted_bins[:-1]])
    ends = np.r_[starts[1:], len(order)]
    return pa.table(
        {
            BIN: pa.array(sorted_bins[starts], pa.uint32()),
            COUNT: pa.array(ends - starts, pa.int64()),
            LOW: pa.array(np.minimum.reduceat(sorted_good, starts), pa.float64()),
            HIGH: pa.array(np.maximum.reduceat(sorted_good, starts), pa.float64()),
        },
        schema=HIST_SCHEMA,
    )


def merge_histograms(tables: list[pa.Table]) -> pa.Table:
    """Fine histograms added up (bins of the same number are one bin)."""
    if not tables:
        return HIST_SCHEMA.empty_table()
    both = pa.concat_tables(tables)
    merged = both.group_by(BIN).aggregate([(COUNT, "sum"), (LOW, "min"), (HIGH, "max")])
    merged = merged.select([BIN, f"{COUNT}_sum", f"{LOW}_min", f"{HIGH}_max"]).rename_columns(
        HIST_SCHEMA.names
    )
    return merged.sort_by(BIN).cast(HIST_SCHEMA)


def cutoff_from_histogram(hist: pa.Table, keep: int) -> tuple[float, int]:
    """(cutoff on goodness, documents kept) that keeps about the `keep` best documents."""
    total = int(pc.sum(hist.column(COUNT)).as_py() or 0) if hist.num_rows else 0
    if keep <= 0 or total == 0:
        return math.inf, 0
    counts = hist.column(COUNT).to_numpy()[::-1]  # best bin first
    lows, highs = hist.column(LOW).to_numpy()[::-1], hist.column(HIGH).to_numpy()[::-1]
    if keep >= total:
        return float(lows[-1]), total
    cum = np.cumsum(counts)
    b = int(np.searchsorted(cum, keep))  # first bin where the count reaches `keep`
    with_bin = int(cum[b])
    without = with_bin - int(counts[b])
    # All of bin b or none of it, whichever is closer to `keep` (ties, and equal values, kept).
    if with_bin == keep or lows[b] == highs[b] or with_bin - keep <= keep - without:
        return float(lows[b]), with_bin
    if b == 0:
        return math.inf, 0
    return float(lows[b - 1]), without


def selection_cutoff(
    signal: str, values: np.ndarray, threshold: float | None, keep_fraction: float | None
) -> float:
    """Cutoff on `goodness`: documents with goodness >= cutoff are kept (the threshold step's rule
    on one array of scores)."""
    if threshold is not None:
        return -threshold if signal == PERPLEXITY else threshold
    if keep_fraction is None:
        return -math.inf
    good = goodness(signal, values)
    return cutoff_from_histogram(fine_histogram(good), int(round(keep_fraction * len(good))))[0]


def histogram(
    values: np.ndarray, log10: bool = False, weights: np.ndarray | None = None
) -> dict[str, list[float] | list[int]]:
    """Small histogram (edges and counts) of the finite values, for the report."""
    v = np.asarray(values, dtype=np.float64)
    w = np.ones(len(v)) if weights is None else np.asarray(weights, dtype=np.float64)
    finite = np.isfinite(v)
    v, w = v[finite], w[finite]
    if log10:
        positive = v > 0
        v, w = np.log10(v[positive]), w[positive]
    if len(v) == 0:
        return {"edges": [], "counts": []}
    low, high = float(v.min()), float(v.max())
    if low >= 0.0 and high <= 1.0 and not log10:
        low, high = 0.0, 1.0
    if high == low:
        high = low + 1.0
    counts, edges = np.histogram(v, bins=HISTOGRAM_BINS, range=(low, high), weights=w)
    return {"edges": [float(f"{e:.4g}") for e in edges], "counts": [int(round(c)) for c in counts]}


def report_histogram(column: str, hist: pa.Table) -> dict[str, list[float] | list[int]]:
    """The report's histogram of a column's raw values, from its fine histogram of goodness: each
    fine bin counts at its middle (its exact value when it holds one)."""
    sign = -1.0 if column == PERPLEXITY else 1.0
    low, high = hist.column(LOW).to_numpy(), hist.column(HIGH).to_numpy()
    with np.errstate(invalid="ignore"):
        middle = np.where(low == high, low, low / 2.0 + high / 2.0) * sign
    return histogram(middle, log10=column == PERPLEXITY, weights=hist.column(COUNT).to_numpy())


class QualityScoreStage(Stage):
    type_name = "quality-score"
    steps = ("score", "threshold", "filter")

    def score_file(self, ctx: StepContext, shard: int) -> Location:
        return ctx.scratch.join("score", f"s{shard:05d}.parquet")

    def hist_file(self, ctx: StepContext, column: str, rank: int) -> Location:
        return ctx.scratch.join("hist", column, f"r{rank:05d}.parquet")

    def columns(self) -> list[str]:
        p = self.params
        return [c for c, model in ((QUALITY, p.classifier), (PERPLEXITY, p.perplexity_model)) if model]

    # ---- score (map) -------------------------------------------------------------------------

    def step_score(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        columns = self.columns()
        if not columns:
            raise SpecError(f"stage {self.name}: set params.classifier, params.perplexityModel or both")
        source = self.require_input(ctx)
        scorers: dict[str, Any] = {}  # loaded on the first unfinished shard only

        def score_shard(shard: int) -> dict[str, Any]:
            if not scorers:
                scorers.update(self._scorers(ctx))
            table = source.read_shard(shard, columns=[TEXT])
            texts = table.column(TEXT).to_pylist()
            out: dict[str, Any] = {ROW: table.column(ROW)}
            for column, scorer in scorers.items():
                out[column] = pa.array(np.asarray(scorer.score(texts), dtype=np.float64), pa.float64())
            write_table_atomic(self.score_file(ctx, shard), pa.table(out))
            return {"scored": len(texts)}

        # Only the filter step reports document counts.
        stats = self.map_shards(ctx, rank, world_size, score_shard).to_dict()
        # The rank's histograms, from its score files (also those of shards finished before a restart).
        for column in columns:
            merged = HIST_SCHEMA.empty_table()
            for shard in ctx.shards_for(rank, world_size):
                values = read_table(self.score_file(ctx, shard), [column]).column(column).to_numpy()
                merged = merge_histograms([merged, fine_histogram(goodness(column, values))])
            write_table_atomic(self.hist_file(ctx, column, rank), merged)
        return stats

    def _scorers(self, ctx: StepContext) -> dict[str, Any]:
        p = self.params
        scorers: dict[str, Any] = {}
        if p.classifier:
            from curation.models.classifier import load_classifier

            scorers[QUALITY] = load_classifier(
                ctx.models,
                p.classifier,
                p.positive_label,
                max_tokens=p.max_tokens,
                batch_tokens=p.batch_tokens,
            )
        if p.perplexity_model:
            from curation.models.loading import load_model
            from curation.models.perplexity import PerplexityScorer

            loaded = load_model(ctx.models, p.perplexity_model, "causal-lm")
            scorers[PERPLEXITY] = PerplexityScorer(
                loaded, p.max_tokens, p.batch_tokens, stage_type=self.type_name
            )
        return scorers

    # ---- threshold (global: the ranks' histograms only) --------------------------------------

    def step_threshold(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        stats = StageStats()  # started now: its `seconds` time the step
        p = self.params
        ranks = ctx.peer("score").world_size
        hists: dict[str, pa.Table] = {}
        for column in self.columns():
            merged = HIST_SCHEMA.empty_table()
            for r in range(ranks):  # one rank's bins at a time
                loc = self.hist_file(ctx, column, r)
                if not loc.exists():
                    raise StepError(f"{loc.path}: missing (did the score step finish?)")
                merged = merge_histograms([merged, read_table(loc)])
            hists[column] = merged
        signal = p.signal
        hist = hists[signal]
        n = int(pc.sum(hist.column(COUNT)).as_py() or 0) if hist.num_rows else 0
        if p.threshold is not None:
            cutoff = -p.threshold if signal == PERPLEXITY else p.threshold
            # bins wholly at or above the cutoff: an estimate within the one bin that may hold the
            # cutoff (the filter step's counts, in the summary, are exact)
            kept = (
                int(
                    pc.sum(
                        pc.if_else(pc.greater_equal(hist.column(LOW), cutoff), hist.column(COUNT), 0)
                    ).as_py()
                    or 0
                )
                if n
                else 0
            )
        elif p.keep_fraction is not None:
            cutoff, kept = cutoff_from_histogram(hist, int(round(p.keep_fraction * n)))
        else:
            cutoff, kept = -math.inf, n
        ctx.scratch.join("threshold.json").write_json_atomic({"signal": signal, "cutoff": cutoff})
        extra: dict[str, Any] = {"signal": signal, "kept_fraction": round(kept / n, 4) if n else 1.0}
        if p.selects and math.isfinite(cutoff):
            extra["cutoff"] = float(f"{-cutoff if signal == PERPLEXITY else cutoff:.6g}")
        extra["histograms"] = {
            ("perplexity_log10" if c == PERPLEXITY else c): report_histogram(c, h) for c, h in hists.items()
        }
        extra["histogram_bins"] = {c: h.num_rows for c, h in hists.items()}
        stats.extra = extra
        return stats.to_dict()

    # ---- filter (map) --------------------------------------------------------------------------

    def step_filter(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        decision = ctx.scratch.join("threshold.json")
        if not decision.exists():
            raise StepError(f"{decision.path}: missing (did the threshold step finish?)")
        setting = decision.read_json()
        signal, cutoff = setting["signal"], float(setting["cutoff"])
        columns = self.columns()
        source = self.require_input(ctx)

        def split(shard: int) -> dict[str, Any]:
            table = source.read_shard(shard, [])
            scores = read_table(self.score_file(ctx, shard))
            if not scores.column(ROW).equals(table.column(ROW)):
                raise StepError(
                    f"{ctx.step.id}: scores of shard {shard} do not match its documents; rerun the score step"
                )
            keep = goodness(signal, scores.column(signal).to_numpy()) >= cutoff
            reasons = pa.array([None if k else REASONS[signal] for k in keep], pa.string())
            # Every row carries its scores (rejected rows too: the report shows why they went). The
            # decision file is written here rather than by `write_split`, so a score column the input
            # already had (an earlier stage's, or the user's) is replaced, not kept.
            annotations = {
                c: scores.column(c).combine_chunks() if scores.num_rows else pa.array([], pa.float64())
                for c in columns
            }
            rows = table.column(ROW).to_numpy().astype(np.int64)
            self.write_decisions(ctx, shard, decision_table(rows, reasons, annotations))
            stats = StageStats()
            stats.docs_in, stats.docs_out = table.num_rows, int(keep.sum())
            stats.bytes_in, stats.bytes_out = split_bytes(table, keep)
            stats.removed.update({REASONS[signal]: int((~keep).sum())} if (~keep).any() else {})
            return stats.to_dict()

        return self.map_shards(ctx, rank, world_size, split).to_dict()
