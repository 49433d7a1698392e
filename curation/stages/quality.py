"""quality-score: annotate with a classifier score and/or perplexity, then select globally.

- score (map, GPU): `score/sNNNNN.parquet` holds each document's id and its `quality_score`
  (classifier probability of the positive label, DCLM / FineWeb-Edu style) and/or `perplexity`
  (small causal LM, Ankner et al. 2024);
- threshold (global): turns `threshold` or `keepFraction` into one cutoff over all shards (a
  global percentile, not a per-shard one) and records score histograms for the report;
- filter (map): adds the score columns to every kept row and rejects the others
  (`low-quality-score`, `high-perplexity`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from curation.dataset import ID, TEXT, read_table, write_table_atomic
from curation.errors import SpecError, StepError
from curation.stages.base import Stage, StepContext

QUALITY, PERPLEXITY = "quality_score", "perplexity"
REASONS = {QUALITY: "low-quality-score", PERPLEXITY: "high-perplexity"}
HISTOGRAM_BINS = 12


def goodness(signal: str, values: np.ndarray) -> np.ndarray:
    """Higher is better for selection; NaN becomes -inf (never selected ahead of a real score)."""
    good = np.asarray(values, dtype=np.float64) * (-1.0 if signal == PERPLEXITY else 1.0)
    return np.where(np.isnan(good), -np.inf, good)


def selection_cutoff(
    signal: str, values: np.ndarray, threshold: float | None, keep_fraction: float | None
) -> float:
    """Cutoff on `goodness`: documents with goodness >= cutoff are kept."""
    if threshold is not None:
        return -threshold if signal == PERPLEXITY else threshold
    if keep_fraction is None:
        return -math.inf
    good = np.sort(goodness(signal, values))[::-1]
    keep = int(round(keep_fraction * len(good)))
    if keep == 0:
        return math.inf
    return float(good[keep - 1])


def histogram(values: np.ndarray, log10: bool = False) -> dict[str, list[float] | list[int]]:
    """Small histogram (edges and counts) of the finite values, for the report."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if log10:
        v = np.log10(v[v > 0])
    if len(v) == 0:
        return {"edges": [], "counts": []}
    low, high = float(v.min()), float(v.max())
    if low >= 0.0 and high <= 1.0 and not log10:
        low, high = 0.0, 1.0
    if high == low:
        high = low + 1.0
    counts, edges = np.histogram(v, bins=HISTOGRAM_BINS, range=(low, high))
    return {"edges": [float(f"{e:.4g}") for e in edges], "counts": [int(c) for c in counts]}


class QualityScoreStage(Stage):
    type_name = "quality-score"
    steps = ("score", "threshold", "filter")

    def score_file(self, ctx: StepContext, shard: int) -> Any:
        return ctx.scratch.join("score", f"s{shard:05d}.parquet")

    def columns(self) -> list[str]:
        p = self.params
        return [c for c, model in ((QUALITY, p.classifier), (PERPLEXITY, p.perplexity_model)) if model]

    # ---- score -------------------------------------------------------------------------------

    def step_score(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        if not self.columns():
            raise SpecError(f"stage {self.name}: set params.classifier, params.perplexityModel or both")
        source = self.require_input(ctx)
        scorers: dict[str, Any] = {}  # loaded on the first unfinished shard only

        def score_shard(shard: int) -> dict[str, Any]:
            if not scorers:
                scorers.update(self._scorers(ctx))
            table = source.read_shard(shard, columns=[ID, TEXT])
            texts = table.column(TEXT).to_pylist()
            out = {ID: table.column(ID)}
            for column, scorer in scorers.items():
                out[column] = pa.array(np.asarray(scorer.score(texts), dtype=np.float64), pa.float64())
            write_table_atomic(self.score_file(ctx, shard), pa.table(out))
            return {"docs_in": len(texts), "docs_out": len(texts)}

        return self.map_shards(ctx, rank, world_size, score_shard).to_dict()

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

    # ---- threshold ---------------------------------------------------------------------------

    def step_threshold(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        p = self.params
        columns = self.columns()
        tables = [read_table(self.score_file(ctx, s), columns=columns) for s in range(ctx.num_shards)]
        values = {
            c: np.concatenate([t.column(c).to_numpy() for t in tables]) if tables else np.zeros(0)
            for c in columns
        }
        signal = p.signal
        cutoff = (
            selection_cutoff(signal, values[signal], p.threshold, p.keep_fraction) if p.selects else -math.inf
        )
        ctx.scratch.join("threshold.json").write_json_atomic({"signal": signal, "cutoff": cutoff})
        n = len(values[signal])
        kept = int((goodness(signal, values[signal]) >= cutoff).sum())
        extra: dict[str, Any] = {"signal": signal, "kept_fraction": round(kept / n, 4) if n else 1.0}
        if p.selects and math.isfinite(cutoff):
            extra["cutoff"] = float(f"{-cutoff if signal == PERPLEXITY else cutoff:.6g}")
        extra["histograms"] = {
            ("perplexity_log10" if c == PERPLEXITY else c): histogram(values[c], log10=c == PERPLEXITY)
            for c in columns
        }
        return {"docs_in": n, "docs_out": kept, "extra": extra}

    # ---- filter ------------------------------------------------------------------------------

    def step_filter(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        decision = ctx.scratch.join("threshold.json")
        if not decision.exists():
            raise StepError(f"{decision.path}: missing (did the threshold step finish?)")
        setting = decision.read_json()
        signal, cutoff = setting["signal"], float(setting["cutoff"])
        columns = self.columns()

        source = self.require_input(ctx)

        def split(shard: int) -> dict[str, Any]:
            table = source.read_shard(shard)
            scores = read_table(self.score_file(ctx, shard))
            if scores.num_rows != table.num_rows or not scores.column(ID).equals(table.column(ID)):
                raise StepError(
                    f"{ctx.step.id}: scores of shard {shard} do not match its documents; rerun the score step"
                )
            keep = goodness(signal, scores.column(signal).to_numpy()) >= cutoff
            reasons: list[str | None] = [None if k else REASONS[signal] for k in keep]
            # Rejected rows carry their scores too, so the report can show why they went.
            annotated = table.drop_columns([c for c in columns if c in table.column_names])
            for column in columns:
                annotated = annotated.append_column(column, scores.column(column))
            return self.write_split(ctx, shard, annotated, reasons)

        return self.map_shards(ctx, rank, world_size, split).to_dict()
