"""Parameters of the model-based stages (semantic dedup, redundancy control, quality, rephrase).

Models are named by a path relative to the spec's models location, never by a hub name.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from curation.params.base import CamelModel


class EmbeddingParams(CamelModel):
    """Sentence embeddings: encoder, mean pooling, L2-normalised."""

    model: str = "all-MiniLM-L6-v2"
    """Encoder directory, relative to the models location."""

    max_tokens: int = Field(default=256, ge=8, le=8192)
    """Documents are truncated to this many tokens before embedding."""

    batch_tokens: int = Field(default=16384, ge=64)
    """Token budget per batch (length-sorted batching; the batch shrinks on out-of-memory)."""


class SemanticDedupParams(CamelModel):
    """SemDeDup: k-means on embeddings, then within each cluster drop near-identical neighbours."""

    embedding: EmbeddingParams = EmbeddingParams()
    clusters: int = Field(default=100, ge=1)
    """Number of k-means clusters (capped at the number of documents)."""

    epsilon: float = Field(default=0.05, ge=0.0, le=1.0)
    """Pairs with cosine similarity > 1 - epsilon are duplicates."""

    keep: Literal["farthest-from-centroid", "highest-quality"] = "farthest-from-centroid"
    """Which member of a duplicate group survives."""

    quality_column: str = "quality_score"
    """Column used by `keep: highest-quality`."""

    kmeans_iterations: int = Field(default=20, ge=1, le=1000)
    seed: int = Field(default=0, ge=0)


class RedundancyControlParams(CamelModel):
    """Density-aware pruning (D4 / density-based pruning): dense clusters keep fewer documents."""

    embedding: EmbeddingParams = EmbeddingParams()
    clusters: int = Field(default=100, ge=1)
    keep_fraction: float = Field(default=0.8, gt=0.0, le=1.0)
    """Target overall fraction of documents kept."""

    drop_prototypical: bool = True
    """Within a cluster, drop the documents closest to the centroid first."""

    kmeans_iterations: int = Field(default=20, ge=1, le=1000)
    seed: int = Field(default=0, ge=0)


class QualityScoreParams(CamelModel):
    """Annotate with a classifier score and/or perplexity, then select by threshold or keep fraction."""

    classifier: str | None = None
    """Sequence-classifier directory or fastText/linear model file (relative to the models location)."""

    perplexity_model: str | None = None
    """Causal LM directory or GGUF file used for perplexity (relative to the models location)."""

    select_by: Literal["quality_score", "perplexity", "none"] = "quality_score"
    threshold: float | None = None
    """Keep documents whose signal passes this value (>= for quality score, <= for perplexity)."""

    keep_fraction: float | None = Field(default=None, gt=0.0, le=1.0)
    """Keep this fraction of documents by the global percentile of the signal."""

    max_tokens: int = Field(default=512, ge=8)
    batch_tokens: int = Field(default=16384, ge=64)


class RephraseParams(CamelModel):
    """WRAP/BeyondWeb-style rephrasing with a local instruct model."""

    model: str = "SmolLM2-135M-Instruct"
    """Generator directory or GGUF file relative to the models location."""

    styles: list[str] = ["wikipedia", "qa"]
    templates: dict[str, str] = {}
    """Override or add prompt templates by style name; `{text}` is replaced by the document chunk."""

    ratio: float = Field(default=0.5, ge=0.0, le=10.0)
    """Synthetic rows per real row (0.5 = rephrase half of the documents)."""

    max_new_tokens: int = Field(default=256, ge=1)
    chunk_tokens: int = Field(default=512, ge=16)
    batch_size: int = Field(default=16, ge=1)
    backend: Literal["transformers", "vllm", "auto"] = "auto"
    seed: int = Field(default=0, ge=0)
