"""Parameters of the exact and MinHash deduplication stages."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from curation.params.base import CamelModel


class ExactDedupParams(CamelModel):
    """Exact deduplication on a hash of the normalised text; keeps one document per group."""

    normalize: Literal["none", "whitespace", "full"] = "full"
    """How text is normalised before hashing: `none` (bytes as is), `whitespace` (collapse runs of
    whitespace and strip), `full` (also Unicode NFKC, lowercase, and remove punctuation and
    symbols)."""

    keep: Literal["first", "longest"] = "first"
    """Which member of a duplicate group survives: `first` (lowest shard, then row) or `longest`."""

    partitions: int | None = Field(default=None, ge=1, le=4096)
    """Hash partitions for the reduce step (one per rank). Default: the stage's parallelism."""


class MinHashParams(CamelModel):
    """Near-duplicate removal with MinHash + LSH (defaults as FineWeb: word 5-grams, 14 bands x 8 rows).

    A pair with Jaccard similarity s becomes a candidate with probability 1-(1-s^r)^b
    (r = rowsPerBand, b = bands); the 50% point of that S-curve is about (1/b)^(1/r).
    """

    ngram: int = Field(default=5, ge=1, le=32)
    """Word n-gram size of the shingles."""

    bands: int = Field(default=14, ge=1, le=256)
    """Number of LSH bands."""

    rows_per_band: int = Field(default=8, ge=1, le=64)
    """Hashes per band; bands x rowsPerBand hashes are computed per document."""

    seed: int = Field(default=1, ge=0)
    """Seed of the hash permutations (fixed seed = reproducible clusters)."""

    lowercase: bool = True
    """Lowercase, and treat punctuation and symbols as word separators, before shingling. When false,
    only whitespace separates words and case matters."""

    keep: Literal["first", "longest"] = "first"
    """Which member of a duplicate cluster survives: `first` (lowest shard, then row) or `longest`
    (most characters; ties by lowest shard, then row)."""

    verify_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """If set, candidate pairs are kept only if their signature agreement (estimated Jaccard)
    is at least this value, which cuts false positives from single-band collisions. Costs one more
    intermediate file per shard (the full signatures) and reading it in the buckets step."""

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows_per_band

    def threshold(self) -> float:
        """Jaccard similarity at which a pair is found with probability 1/2 (approximately)."""
        return float((1.0 / self.bands) ** (1.0 / self.rows_per_band))

    def detection_probability(self, jaccard: float) -> float:
        """Probability that a pair with this Jaccard similarity shares at least one band."""
        return float(1.0 - (1.0 - jaccard**self.rows_per_band) ** self.bands)

    @model_validator(mode="after")
    def _check_size(self) -> MinHashParams:
        if self.bands * self.rows_per_band > 4096:
            raise ValueError("bands x rowsPerBand must be at most 4096 hashes")
        return self
