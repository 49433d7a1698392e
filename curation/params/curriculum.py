"""Parameters of the curriculum ordering stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from curation.params.base import CamelModel


class CurriculumParams(CamelModel):
    """Orders kept documents by a numeric signal and writes ordered shards plus a mixture manifest."""

    signal: str = "length"
    """Column to order by. Built-in signals computed when absent: `length` (characters),
    `words`, `compression_ratio` (zlib compressed/raw size, a difficulty proxy). Any numeric column
    written by an earlier stage (e.g. `quality_score`, `perplexity`) can be named too."""

    order: Literal["ascending", "descending", "interleaved"] = "ascending"
    """`ascending`/`descending` sort globally; `interleaved` splits the range into `buckets` quantile
    buckets and deals documents round-robin from easiest to hardest bucket, so every part of the
    output sees every difficulty level."""

    buckets: int = Field(default=4, ge=1, le=1000)
    """Number of quantile buckets (used by `interleaved`, and reported in the mixture manifest)."""

    rows_per_shard: int = Field(default=50_000, ge=1)
    """Rows per ordered output shard."""

    seed: int = Field(default=0, ge=0)
    """Seed for tie-breaking and round-robin within buckets (fixed seed = identical order)."""
