"""Parameters of the model-based stages (semantic dedup, redundancy control, quality, rephrase).

Models are named by a path relative to the spec's models location, never by a hub name.
This module imports only pydantic: the operator and the CRD generator load it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from curation.params.base import CamelModel, StageDef, StepDef
from curation.params.base import StepKind as _Kind

# WRAP (Maini et al. 2024) style prompts; `{text}` is replaced by a document chunk.
DEFAULT_TEMPLATES: dict[str, str] = {
    "wikipedia": (
        "For the following paragraph give me a paraphrase of the same in high-quality English "
        "language as in sentences on Wikipedia. Reply with the paraphrase only.\n\n{text}"
    ),
    "qa": (
        'Convert the following paragraph into a conversational format with multiple tags of "Question:" '
        'followed by "Answer:". Reply with the questions and answers only.\n\n{text}'
    ),
    "easy": (
        "For the following paragraph give me a paraphrase of the same using a very small vocabulary "
        "and extremely simple sentences that a toddler will understand. Reply with the paraphrase only."
        "\n\n{text}"
    ),
    "hard": (
        "For the following paragraph give me a paraphrase of the same using very terse and abstruse "
        "language that only an erudite scholar will understand. Reply with the paraphrase only.\n\n{text}"
    ),
}


class EmbeddingParams(CamelModel):
    """Sentence embeddings: encoder, mean pooling, L2-normalised."""

    model: str = "all-MiniLM-L6-v2"
    """Encoder directory, relative to the models location."""

    max_tokens: int = Field(default=256, ge=8, le=8192)
    """Tokens per forward pass (capped at the model's limit). What a longer document is
    represented by is `longDocuments`."""

    long_documents: Literal["head", "head-tail", "chunked-mean"] = "head"
    """How a document longer than `maxTokens` is embedded. `head` (default): its first maxTokens
    tokens only; documents that share a long beginning (a licence header, a page template) look
    identical. `head-tail`: the first and the last maxTokens/2 tokens, in one forward pass (the cost
    of `head`), so a shared header no longer decides alone; it also separates near-copies that
    differ by an appended tail. `chunked-mean`: up to `maxChunks` windows of maxTokens spread evenly
    over the document, embedded separately and averaged (weighted by their tokens): the whole
    document counts, at up to maxChunks times the compute for long documents. On the bundled
    sample `chunked-mean` found the most true near-duplicates (recall at Jaccard >= 0.8: 0.85, `head`
    0.71, `head-tail` 0.65, equal precision) for about 45% more CPU (docs/dedup-evidence.md); `head` stays
    the default because it keeps the cost and the results of earlier versions. Documents within
    maxTokens get the same embedding in all three modes."""

    max_chunks: int = Field(default=8, ge=1, le=256)
    """`chunked-mean`: most windows embedded per document."""

    batch_tokens: int | None = Field(default=None, ge=64)
    """Token budget per batch (length-sorted batching). Default: 16384 on CPU, 262144 on a GPU. The
    batch halves and retries on out-of-memory, so a generous value is safe."""


class _ClusteringParams(CamelModel):
    embedding: EmbeddingParams = EmbeddingParams()
    """How documents are embedded before clustering."""

    clusters: int = Field(default=100, ge=1, le=1_000_000)
    """Number of k-means clusters (capped at the number of documents). Aim for clusters of a few
    thousand documents: the per-cluster work grows with the square of the cluster size."""

    kmeans_iterations: int = Field(default=20, ge=1, le=1000)
    """Lloyd iterations of spherical k-means."""

    kmeans_sample: int = Field(default=1_000_000, ge=1)
    """At most this many documents (a seeded sample) train the centroids; all documents are assigned."""

    seed: int = Field(default=0, ge=0)
    """Seed of the k-means initialisation and the training sample."""


class SemanticDedupParams(_ClusteringParams):
    """SemDeDup: k-means on embeddings, then within each cluster drop near-identical neighbours."""

    epsilon: float = Field(default=0.05, ge=0.0, le=1.0)
    """Pairs with cosine similarity >= 1 - epsilon are duplicates (0 removes only identical embeddings)."""

    keep: Literal["farthest-from-centroid", "highest-quality"] = "farthest-from-centroid"
    """Which member of a duplicate group survives: the least prototypical one (SemDeDup) or the one
    with the highest `qualityColumn` (needs a quality-score stage before this one)."""

    quality_column: str = "quality_score"
    """Column used by `keep: highest-quality`."""


class RedundancyControlParams(_ClusteringParams):
    """Density-aware pruning (D4 / density-based pruning): dense clusters keep fewer documents."""

    keep_fraction: float = Field(default=0.8, gt=0.0, le=1.0)
    """Target overall fraction of documents kept."""

    drop_prototypical: bool = True
    """Within a cluster, drop the documents closest to the centroid first (D4). When false, the
    documents a cluster drops are a seeded random choice."""

    temperature: float = Field(default=0.1, gt=0.0, le=100.0)
    """Softmax temperature over cluster complexity: low values concentrate the budget on complex
    (sparse) clusters, high values spread it evenly."""

    neighbours: int = Field(default=5, ge=1, le=1000)
    """Nearest centroids averaged for a cluster's inter-cluster distance."""


class QualityScoreParams(CamelModel):
    """Annotate with a classifier score and/or perplexity, then select by threshold or keep fraction."""

    classifier: str | None = None
    """Classifier relative to the models location: a Hugging Face sequence-classifier directory, a
    Thresher linear classifier (`.npz`, from `thresher train-classifier`) or a fastText model (`.bin`/
    `.ftz`, needs the `fasttext` module). Its score goes to the `quality_score` column."""

    positive_label: str | None = None
    """Label whose probability is the quality score. Default: the label the linear classifier was
    trained as positive, `__label__hq` for fastText, label 1 of a two-label Hugging Face classifier
    (a one-output regression head is used as is, e.g. FineWeb-Edu)."""

    perplexity_model: str | None = None
    """Causal LM directory or GGUF file used for perplexity (relative to the models location).
    Its score goes to the `perplexity` column."""

    select_by: Literal["quality_score", "perplexity"] | None = None
    """Signal used for selection. Default: `quality_score` when a classifier is set, else `perplexity`."""

    threshold: float | None = None
    """Keep documents whose signal passes this value (>= for quality score, <= for perplexity)."""

    keep_fraction: float | None = Field(default=None, gt=0.0, le=1.0)
    """Keep this fraction of documents by the global percentile of the signal (over all shards).
    With neither `threshold` nor `keepFraction` the stage only annotates."""

    max_tokens: int = Field(default=512, ge=8, le=32768)
    """Documents are truncated to this many tokens before scoring."""

    batch_tokens: int | None = Field(default=None, ge=64)
    """Token budget per batch. Default: 8192 on CPU, 131072 on a GPU; halves on out-of-memory."""

    @model_validator(mode="after")
    def _check_selection(self) -> QualityScoreParams:
        # The bare default instance (spec.py's field default) names no model; the stage refuses it at
        # run time. Any explicitly written params must name at least one model.
        if self.model_fields_set and self.classifier is None and self.perplexity_model is None:
            raise ValueError("set `classifier`, `perplexityModel` or both")
        if self.select_by == "quality_score" and self.classifier is None:
            raise ValueError("selectBy quality_score needs `classifier`")
        if self.select_by == "perplexity" and self.perplexity_model is None:
            raise ValueError("selectBy perplexity needs `perplexityModel`")
        if self.threshold is not None and self.keep_fraction is not None:
            raise ValueError("set at most one of `threshold` and `keepFraction`")
        return self

    @property
    def signal(self) -> str:
        """The column selection uses."""
        if self.select_by is not None:
            return self.select_by
        return "quality_score" if self.classifier is not None else "perplexity"

    @property
    def selects(self) -> bool:
        return self.threshold is not None or self.keep_fraction is not None


class RephraseParams(CamelModel):
    """WRAP/BeyondWeb-style rephrasing with a local instruct model."""

    model: str = "SmolLM2-135M-Instruct"
    """Generator directory or GGUF file relative to the models location."""

    styles: list[str] = Field(default=["wikipedia", "qa"], min_length=1)
    """Styles used in turn; built in: wikipedia, qa, easy, hard (WRAP)."""

    templates: dict[str, str] = {}
    """Override or add prompt templates by style name; `{text}` is replaced by the document chunk.
    The model's chat template wraps the prompt when it has one."""

    ratio: float = Field(default=0.5, ge=0.0, le=10.0)
    """Synthetic rows per real row: 0.5 rephrases a seeded half of the documents, 2 rephrases each
    document twice (in two styles)."""

    max_new_tokens: int = Field(default=256, ge=1, le=32768)
    """Generation limit per chunk."""

    chunk_tokens: int = Field(default=512, ge=16, le=32768)
    """Long documents are split into chunks of about this many tokens, rephrased separately and joined."""

    batch_size: int | None = Field(default=None, ge=1, le=4096)
    """Prompts per generation batch (halves on out-of-memory). Default: 256 on a GPU, 16 on CPU."""

    backend: Literal["transformers", "vllm", "auto"] = "auto"
    """`auto` uses vLLM when it is installed and a GPU is present, else transformers."""

    temperature: float = Field(default=0.0, ge=0.0, le=5.0)
    """0 decodes greedily (reproducible); above 0 samples, seeded by `seed`."""

    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    """Nucleus sampling mass (used when temperature > 0)."""

    repetition_penalty: float = Field(default=1.0, ge=1.0, le=3.0)
    """Penalty on tokens already seen. It counts the prompt too, so values above 1 push the model
    away from the words it is asked to paraphrase; degenerate loops are caught by the guards."""

    min_words: int = Field(default=5, ge=0)
    """Guard: shorter generations are rejected (`rephrase:too-short`)."""

    min_length_ratio: float = Field(default=0.1, ge=0.0)
    """Guard: generations under this fraction of the source's words are rejected (`rephrase:too-short`)."""

    max_length_ratio: float = Field(default=4.0, gt=0.0)
    """Guard: generations over this multiple of the source's words are rejected (`rephrase:too-long`)."""

    max_repetition: float = Field(default=0.3, ge=0.0, le=1.0)
    """Guard: generations whose word 3-grams are repeats above this fraction are rejected
    (`rephrase:repeated`)."""

    seed: int = Field(default=0, ge=0)
    """Seed of the choice of documents (for ratio < 1), of styles, and of sampling."""

    @model_validator(mode="after")
    def _check_templates(self) -> RephraseParams:
        known = {**DEFAULT_TEMPLATES, **self.templates}
        missing = [s for s in self.styles if s not in known]
        if missing:
            raise ValueError(
                f"styles without a template: {', '.join(missing)}; add them under `templates` "
                f"(built in: {', '.join(DEFAULT_TEMPLATES)})"
            )
        broken = [name for name, text in self.templates.items() if "{text}" not in text]
        if broken:
            raise ValueError(f"templates must contain {{text}}: {', '.join(broken)}")
        if len(set(self.styles)) != len(self.styles):
            raise ValueError("styles must not repeat")
        return self

    def template(self, style: str) -> str:
        return {**DEFAULT_TEMPLATES, **self.templates}[style]


# ---- the stage declaration (curation/registry.py) ------------------------------------------------

MAP, REDUCE, GLOBAL = _Kind.MAP, _Kind.REDUCE, _Kind.GLOBAL
STAGES = (
    StageDef(
        type="quality-score",
        order=4,
        params=QualityScoreParams,
        title="model-based quality scoring (classifier and/or perplexity) and a global threshold",
        steps=(StepDef("score", MAP, gpu=True), StepDef("threshold", GLOBAL), StepDef("filter", MAP)),
        impl="curation.stages.quality:QualityScoreStage",
        roles=(("classifier", "classifier"), ("perplexity_model", "causal LM")),
        produces=(),
    ),
    StageDef(
        type="semantic-dedup",
        order=5,
        params=SemanticDedupParams,
        title="semantic deduplication (SemDeDup): embeddings, k-means on a sample, per-cluster pairs",
        steps=(StepDef("embed", MAP, gpu=True), StepDef("kmeans", GLOBAL, gpu=True), StepDef("assign", MAP, gpu=True),
               StepDef("dedup", REDUCE, gpu=True), StepDef("filter", MAP)),
        impl="curation.stages.semantic:SemanticDedupStage",
        roles=(("embedding.model", "encoder"),),
        produces=(("dup_of", "string"), ("similarity", "double"), ("dup_group", "string"),
                  ("semantic_cluster", "int32")),
    ),
    StageDef(
        type="redundancy-control",
        order=6,
        params=RedundancyControlParams,
        title="density-aware redundancy control: prune dense clusters to a quota",
        steps=(StepDef("embed", MAP, gpu=True), StepDef("kmeans", GLOBAL, gpu=True), StepDef("assign", MAP, gpu=True),
               StepDef("prune", REDUCE), StepDef("filter", MAP)),
        impl="curation.stages.redundancy:RedundancyControlStage",
        roles=(("embedding.model", "encoder"),),
        produces=(("dup_of", "string"), ("similarity", "double"), ("dup_group", "string"),
                  ("redundancy_cluster", "int32"), ("redundancy_rank", "int64")),
    ),
    StageDef(
        type="rephrase",
        order=7,
        params=RephraseParams,
        title="LLM rephrasing (WRAP/BeyondWeb): synthetic documents next to their sources",
        steps=(StepDef("generate", MAP, gpu=True),),
        impl="curation.stages.rephrase:RephraseStage",
        roles=(("model", "generator"),),
        produces=(("synthetic_source_id", "string"),),
    ),
)
