"""Parameters of the source policy stage: per-source rules, caps, mixture weights, loss guard."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from curation.params.base import CamelModel, StageDef, StepDef
from curation.params.base import StepKind as _Kind

Name = Annotated[str, Field(min_length=1, max_length=500)]


class SourceRule(CamelModel):
    """What one source may contribute."""

    max_docs: int | None = Field(default=None, ge=0)
    """Keep at most this many of the source's documents (a deterministic choice: the documents
    whose seeded id hash is smallest, whatever the parallelism)."""

    max_bytes: int | None = Field(default=None, ge=0)
    """Keep at most this many bytes of the source's text (same choice as `maxDocs`; with both,
    the tighter one holds)."""

    weight: float = Field(default=1.0, ge=0.0)
    """Mixture weight: written to every kept document as `source_weight`; the statistics give
    each source's share of the weighted mixture (weight x bytes, normalised)."""


class SourcePolicyParams(CamelModel):
    """Keeps or rejects documents by their source and licence, caps sources, guards against
    losing a source, and accounts for every source.

    The source of a document is the column `input.sourceField` (or the one derived from the file
    path by `input.sourceFromPath`). Rules apply in order and the first one that fails names the
    reason: `source:missing` (no source, with `missingSource: reject`), `source:denied`,
    `source:not-allowed`, `source:licence`, then `source:cap`. Caps are global: steps `count`
    (map: per-source histograms of a seeded id hash), `select` (global: the cutoff per source)
    and `filter` (map). A cap keeps at most its number, and at most one hash bin (1/65536 of
    the source's documents) fewer.

    The `select` step also accounts for every source from ingest up to this stage (documents and
    bytes in, removed by each earlier stage and by this one, kept): the statistics' `sources`
    table, and the `maxSourceLoss` guard."""

    field: str | None = None
    """Column holding the source; default: the input's (`input.sourceField`, or `source` with
    `input.sourceFromPath`)."""

    allow: list[Name] = Field(default_factory=list)
    """Sources to keep; empty: every source not denied."""

    deny: list[Name] = Field(default_factory=list)
    """Sources to reject (`source:denied`)."""

    missing_source: Literal["keep", "reject"] = "keep"
    """Documents without a source (null or empty): keep them (accounted as `(none)`) or reject
    them (`source:missing`)."""

    licence_field: str | None = None
    """Column holding each document's licence (e.g. an SPDX id); needed by the two lists below."""

    allowed_licences: list[Name] = Field(default_factory=list)
    """Licence values to keep (exact match); empty: every licence not denied. A document without
    a licence value fails a non-empty allow list."""

    denied_licences: list[Name] = Field(default_factory=list)
    """Licence values to reject (`source:licence`)."""

    sources: dict[str, SourceRule] = Field(default_factory=dict)
    """Per-source caps and weights, by source name."""

    default: SourceRule = SourceRule()
    """Caps and weight of every source not named in `sources`."""

    seed: int = Field(default=0, ge=0)
    """Seed of the id hash that chooses which documents a cap keeps."""

    max_source_loss: float | None = Field(default=None, ge=0.0, le=1.0)
    """Fail the run (naming the source, its counts and which stages removed them) when a
    source lost more than this fraction of its input documents between ingest and the output of
    this stage — e.g. 0.9: no source may lose more than 90%. A source denied or not allowed
    here is exempt (losing it is the rule's intent)."""

    @model_validator(mode="after")
    def _check(self) -> SourcePolicyParams:
        both = sorted(set(self.allow) & set(self.deny))
        if both:
            raise ValueError(f"sources both allowed and denied: {', '.join(both)}")
        both = sorted(set(self.allowed_licences) & set(self.denied_licences))
        if both:
            raise ValueError(f"licences both allowed and denied: {', '.join(both)}")
        if (self.allowed_licences or self.denied_licences) and not self.licence_field:
            raise ValueError("allowedLicences/deniedLicences need licenceField (the column holding the licence)")
        return self

    def rule(self, source: str) -> SourceRule:
        return self.sources.get(source, self.default)

    def has_caps(self) -> bool:
        rules = [self.default, *self.sources.values()]
        return any(r.max_docs is not None or r.max_bytes is not None for r in rules)

    def describe(self) -> list[str]:
        lines = []
        if self.allow:
            lines.append(f"keeps only sources {', '.join(self.allow)}")
        if self.deny:
            lines.append(f"rejects sources {', '.join(self.deny)}")
        if self.licence_field:
            lines.append(
                f"licence column {self.licence_field}: allowed {', '.join(self.allowed_licences) or 'any'}, "
                f"denied {', '.join(self.denied_licences) or 'none'}"
            )
        for name, r in [*self.sources.items(), ("(default)", self.default)]:
            caps = [f"{r.max_docs:,} docs" if r.max_docs is not None else "",
                    f"{r.max_bytes:,} bytes" if r.max_bytes is not None else ""]
            cap = " and ".join(c for c in caps if c)
            if cap or r.weight != 1.0:
                lines.append(f"source {name}: {'cap ' + cap + ', ' if cap else ''}weight {r.weight:g}")
        if self.max_source_loss is not None:
            lines.append(f"fails the run if a source loses more than {self.max_source_loss:.0%} of its documents")
        return lines or ["accounts per source (no rule set)"]


# ---- the stage declaration (curation/registry.py) ------------------------------------------------

MAP, REDUCE, GLOBAL = _Kind.MAP, _Kind.REDUCE, _Kind.GLOBAL
STAGE = StageDef(
    type="source-policy",
    order=12,
    params=SourcePolicyParams,
    title="per-source policy: allow/deny, licences, caps, weights and a loss guard",
    steps=(StepDef("count", MAP), StepDef("select", GLOBAL), StepDef("filter", MAP)),
    impl="curation.stages.source_policy:SourcePolicyStage",
    produces=None,
)
