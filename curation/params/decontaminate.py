"""Parameters of the decontamination stage: n-gram overlap with evaluation sets."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from curation.params.base import CamelModel, StageDef, StepDef
from curation.params.base import StepKind as _Kind

SET_NAME = r"^[a-z0-9][a-z0-9_.-]{0,39}$"


class BenchmarkSet(CamelModel):
    """One evaluation set: files in the models location and the fields that hold its text."""

    name: str = Field(pattern=SET_NAME)
    """Set name, used in the rejection reason `decontaminate:<name>` and the statistics."""

    path: str = Field(min_length=1)
    """File or folder relative to the models location. `.jsonl`/`.json` lines (optionally
    `.gz`/`.zst`) and `.parquet` files are read for `fields`; `.txt` files are split into
    passages at blank lines. A folder is read recursively (hidden files skipped)."""

    fields: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=lambda: ["text"], max_length=32)
    """Fields of JSON/Parquet records whose text is indexed (e.g. `question`, `choices`,
    `answer`); a field may hold a string or a list of strings. Each value is indexed on its own:
    n-grams never span two fields. A file with none of these fields is an error at preflight."""


class DecontaminateParams(CamelModel):
    """Removes (or redacts) documents that share word n-grams with benchmark sets.

    Steps: `index` (global) reads every set once, normalises and hashes its n-grams into a sorted
    array of 64-bit hashes with a bit per set (`_work/.../index/`), shared by every rank; `filter`
    (map) hashes each document's n-grams the same way and looks them up (a binary search of the
    sorted array). Normalisation: Unicode NFKC, lowercase, punctuation and symbols as
    separators, words split on whitespace (as GPT-3's and the peers' 13-gram checks). A record
    shorter than `ngram` words is skipped (counted in the statistics): short answers such as
    "yes" would match everything."""

    benchmarks: list[BenchmarkSet] = Field(min_length=1, max_length=64)
    """Evaluation sets to check against."""

    ngram: int = Field(default=13, ge=3, le=32)
    """Words per n-gram (13: GPT-3, the Pile, FineWeb's decontamination)."""

    min_matches: int = Field(default=1, ge=1)
    """Distinct matching n-grams a document needs to be contaminated."""

    action: Literal["remove", "redact"] = "remove"
    """`remove` rejects a contaminated document (reason `decontaminate:<set>`, the set with the
    most matching n-grams); `redact` keeps it with every matching span (the words of the matching
    n-grams, in the original text) replaced by `placeholder`."""

    placeholder: str = Field(default="<BENCHMARK>", max_length=100)
    """Replacement of a matching span under `redact`."""

    @field_validator("benchmarks")
    @classmethod
    def _unique(cls, value: list[BenchmarkSet]) -> list[BenchmarkSet]:
        names = [b.name for b in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"benchmark names must be unique; repeated: {', '.join(repeated)}")
        return value

    def describe(self) -> list[str]:
        sets = ", ".join(f"{b.name} ({b.path}: {', '.join(b.fields)})" for b in self.benchmarks)
        act = "removes" if self.action == "remove" else f"redacts spans with {self.placeholder} in"
        return [f"word {self.ngram}-grams of {sets}; {act} documents with >= {self.min_matches} matching n-gram(s)"]


# ---- the stage declaration (curation/registry.py) ------------------------------------------------

MAP, REDUCE, GLOBAL = _Kind.MAP, _Kind.REDUCE, _Kind.GLOBAL
STAGE = StageDef(
    type="decontaminate",
    order=11,
    params=DecontaminateParams,
    title="benchmark decontamination: n-gram index built once, then a map over shards",
    steps=(StepDef("index", GLOBAL), StepDef("filter", MAP)),
    impl="curation.stages.decontaminate:DecontaminateStage",
    produces=None,
)
