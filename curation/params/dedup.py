"""Parameters of the exact and MinHash deduplication stages."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from curation.params.base import CamelModel, StageDef, StepDef
from curation.params.base import StepKind as _Kind

DEFAULT_VERIFY_THRESHOLD = 0.8


class ExactDedupParams(CamelModel):
    """Exact deduplication on a hash of the normalised text; keeps one document per group.

    A document whose normalised text is empty (empty or whitespace-only; with `strip-punctuation`
    also punctuation-, symbol- or emoji-only) is never a duplicate of anything: it is kept."""

    normalize: Literal["none", "whitespace", "full", "strip-punctuation"] = "full"
    """How text is normalised before hashing. `none`: the bytes as stored. `whitespace`: every run
    of whitespace (ASCII whitespace and Unicode separators) becomes one space, leading and trailing
    whitespace is removed. `full` (default): also Unicode NFKC (NFC and NFD spellings, full-width
    forms and ligatures compare equal) and lowercase; punctuation, symbols, digits and emoji are
    kept, so code and formulas that differ only in an operator stay different. `strip-punctuation`:
    `full`, and every punctuation and symbol character removed; for prose only (it merges `a + b`
    with `a - b`)."""

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
    """Shingle size in units (words; characters of scripts written without spaces, see
    `tokenizer`)."""

    bands: int = Field(default=14, ge=1, le=256)
    """Number of LSH bands."""

    rows_per_band: int = Field(default=8, ge=1, le=64)
    """Hashes per band; bands x rowsPerBand hashes are computed per document."""

    seed: int = Field(default=1, ge=0)
    """Seed of the hash permutations (fixed seed = reproducible clusters)."""

    lowercase: bool = True
    """Unicode NFKC and lowercase, and punctuation and symbols (emoji included) separate units, before
    shingling. When false: NFC only, only whitespace separates units and case matters."""

    tokenizer: Literal["auto", "words", "chars"] = "auto"
    """What a shingle's units are. `words`: runs of characters between separators (FineWeb).
    `chars`: every non-separator character. `auto` (default): words, except that each character
    of a script written without spaces (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar, Yi) is
    a unit of its own, and so is each Hangul syllable in documents whose Korean is written without
    spaces; text in space-separated scripts gets exactly the `words` units. A document without
    any unit (empty, whitespace, or only punctuation and symbols) has no shingle and is never a
    near-duplicate."""

    keep: Literal["first", "longest"] = "first"
    """Which member of a duplicate cluster survives: `first` (lowest shard, then row) or `longest`
    (most characters; ties by lowest shard, then row)."""

    verify: Literal["none", "signatures", "text"] | None = None
    """How candidate pairs (two documents sharing an LSH band) are checked before they link two
    documents. `none`: every candidate is an edge (the S-curve lets pairs of Jaccard 0.5-0.8 through).
    `signatures`: the pair's signature agreement (the MinHash estimate of the Jaccard, standard error
    about 0.04 at 0.8 with 112 hashes) must reach `verifyThreshold`; costs one read of
    bands x rowsPerBand x 4 bytes per document of the pair. `text`: the exact Jaccard of the two
    documents' shingle sets (the same units, n-grams and normalisation as the signatures) must reach
    `verifyThreshold`; the signatures step also writes each document's shingle set (4 bytes per
    distinct shingle, about the size of the text), and the verify step reads the sets of the
    documents in candidate pairs. Default: `signatures` when `verifyThreshold` is set, else `none`.
    Rejected pairs are counted in the stage's statistics and sampled in the report. Verification
    cannot find pairs LSH missed (14 x 8 finds a pair at Jaccard 0.8 with probability 0.92); with
    `text`, `bands: 20, rowsPerBand: 5` (0.9997 at 0.8) is affordable, since the extra low-Jaccard
    candidates are rejected against the text (docs/dedup-evidence.md)."""

    verify_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """Similarity a candidate pair needs under `verify` (signature agreement for `signatures`, exact
    shingle Jaccard for `text`). Default 0.8 when `verify` is `signatures` or `text`; setting it
    without `verify` means `verify: signatures` (the behaviour before `verify` existed)."""

    @property
    def verify_mode(self) -> str:
        """`none`, `signatures` or `text` (with the default resolved)."""
        if self.verify is not None:
            return self.verify
        return "signatures" if self.verify_threshold is not None else "none"

    @property
    def verify_at(self) -> float | None:
        """The threshold of the chosen mode (None for `none`)."""
        if self.verify_mode == "none":
            return None
        return self.verify_threshold if self.verify_threshold is not None else DEFAULT_VERIFY_THRESHOLD

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
        if self.verify == "none" and self.verify_threshold is not None:
            raise ValueError("verifyThreshold has no effect with verify: none; remove one of them")
        return self


# ---- the stage declaration (curation/registry.py) ------------------------------------------------

MAP, REDUCE, GLOBAL = _Kind.MAP, _Kind.REDUCE, _Kind.GLOBAL
EVIDENCE_COLUMNS = (("dup_of", "string"), ("similarity", "double"), ("dup_group", "string"))
STAGES = (
    StageDef(
        type="exact-dedup",
        order=1,
        params=ExactDedupParams,
        title="exact deduplication on a 128-bit hash of the normalised text",
        steps=(StepDef("hash", MAP), StepDef("select", REDUCE), StepDef("filter", MAP)),
        impl="curation.stages.exact_dedup:ExactDedupStage",
        produces=EVIDENCE_COLUMNS,
    ),
    StageDef(
        type="minhash-dedup",
        order=2,
        params=MinHashParams,
        title="near-duplicate removal with MinHash + LSH, optionally verified against the text",
        steps=(StepDef("signatures", MAP), StepDef("buckets", REDUCE), StepDef("verify", REDUCE),
               StepDef("components", GLOBAL), StepDef("names", MAP), StepDef("filter", MAP)),
        impl="curation.stages.minhash:MinHashDedupStage",
        produces=(*EVIDENCE_COLUMNS, ("similarity_estimate", "double")),
    ),
)
