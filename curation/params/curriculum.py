"""Parameters of the curriculum ordering stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from curation.params.base import CamelModel, StageDef, StepDef
from curation.params.base import StepKind as _Kind

BUILTIN_SIGNALS = ("length", "words", "compression_ratio")


class CurriculumParams(CamelModel):
    """Orders kept documents by a numeric signal and writes ordered shards plus a mixture manifest.

    Nothing is rejected: every document is written once, with two added columns,
    `curriculum_signal` (float64) and `curriculum_position` (int64, 0-based rank in the order)."""

    signal: str = Field(default="length", min_length=1)
    """Column to order by. Built-in signals computed when absent: `length` (characters),
    `words` (whitespace-separated words), `compression_ratio` (zlib level-6 compressed size over
    UTF-8 size, a difficulty proxy: repetitive text compresses well). Any numeric column written
    by an earlier stage (e.g. `quality_score`, `perplexity`) can be named too; a column that does
    not exist is an error listing the available ones. Documents with a null or NaN signal count as
    the hardest: last in `ascending` and `descending` order, in the last bucket when `interleaved`."""

    order: Literal["ascending", "descending", "interleaved"] = "ascending"
    """`ascending`/`descending` sort globally; `interleaved` splits the range into `buckets` quantile
    buckets and deals documents round-robin from easiest to hardest bucket, so every part of the
    output sees every difficulty level."""

    buckets: int = Field(default=4, ge=1, le=1000)
    """Number of quantile buckets (equal document counts, by rank of the signal), used by
    `interleaved` and reported in the mixture manifest for every order."""

    rows_per_shard: int = Field(default=50_000, ge=1)
    """Rows per ordered output shard; the stage writes ceil(documents / rowsPerShard) shards."""

    seed: int = Field(default=0, ge=0)
    """Seed of the hash that breaks ties and orders documents inside an interleaved bucket
    (hash of the document id: a fixed seed gives the identical order at any parallelism)."""


# ---- the stage declaration (curation/registry.py) ------------------------------------------------

MAP, REDUCE, GLOBAL = _Kind.MAP, _Kind.REDUCE, _Kind.GLOBAL
STAGE = StageDef(
    type="curriculum",
    order=8,
    params=CurriculumParams,
    title="curriculum ordering: score, sample-based range partitioning, per-range sort, positions",
    steps=(StepDef("score", MAP), StepDef("order", GLOBAL), StepDef("partition", MAP), StepDef("rank", REDUCE),
           StepDef("write", MAP)),
    impl="curation.stages.curriculum:CurriculumStage",
    produces=(("curriculum_signal", "double"), ("curriculum_position", "int64")),
)
