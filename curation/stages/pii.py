"""pii-redaction: replace personal data and secrets with typed placeholders (one map step, `redact`).

A modifier: every document is kept; a changed text is stored for the changed rows only, and
`pii_counts` (struct, one int32 per type) records what was replaced in each document. Per batch:

1. Arrow (RE2) tests the combined pattern of every enabled type on all texts: documents
   without a candidate are never touched by Python;
2. Arrow marks every candidate span of the remaining documents (`\\x1e<span>\\x1f`);
3. Python walks the marked spans only: the first type whose own pattern matches exactly there,
   its check (pii_patterns.CHECKS), then the placeholder.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dataset import TEXT
from curation.errors import SpecError
from curation.params.pii import PiiRedactionParams
from curation.stages.base import Stage, StepContext
from curation.stages.pii_patterns import CHECKS, KEEP, PATTERNS, Allow, Verdict, check_value, combined_pattern
from curation.stages.tallies import with_shard_extras

COUNTS = "pii_counts"
OPEN, CLOSE = "\x1e", "\x1f"  # ASCII record/unit separators: mark candidate spans
BATCH_ROWS = 8192


@dataclass
class Detector:
    """Compiled once per stage: the combined RE2 pattern, each type's Python pattern, allow lists."""

    types: list[str]
    combined: str
    patterns: list[re.Pattern[str]]
    placeholders: list[str]
    allow: Allow
    redact: bool

    @classmethod
    def from_params(cls, params: PiiRedactionParams) -> Detector:
        builtin = [t for t in PATTERNS if t in params.types]  # PATTERNS' order decides overlaps
        types = [*builtin, *(c.name for c in params.custom)]
        sources = [PATTERNS[t] for t in builtin] + [c.regex for c in params.custom]
        allow = Allow(
            domains=tuple(d.lower().rstrip(".") for d in params.allowed_domains),
            networks=tuple(ipaddress.ip_network(n, strict=False) for n in params.allowed_networks),
            values=frozenset(params.allowed_values),
        )
        combined = combined_pattern(sources)
        try:
            pc.match_substring_regex(pa.array([""]), combined)
        except pa.ArrowInvalid as err:
            raise SpecError(f"pii-redaction: a custom pattern is not valid RE2 syntax ({err}); "
                            "use no look-around or back-references") from None
        return cls(types, combined, [re.compile(p, re.ASCII) for p in sources],
                   [params.placeholder(t) for t in types], allow, params.action == "redact")

    def judge(self, text: str, start: int, end: int) -> tuple[int, tuple[int, int]] | None:
        """(type index, span to replace) for the candidate [start, end), None to leave it."""
        claimed = None
        for k, pattern in enumerate(self.patterns):
            m = pattern.match(text, start)
            if m is None or (claimed is None and m.end() != end) or m.end() > end:
                continue
            if m.group(0) in self.allow.values:
                return None
            verdict: Verdict = CHECKS.get(self.types[k], check_value)(text, m, self.allow)
            if verdict == KEEP:
                return None
            if isinstance(verdict, tuple):
                return k, verdict
            claimed = k  # not this type: a later type may still claim the span (or a prefix of it)
        return None

    def spans(self, text: str, marked: str | None) -> list[tuple[int, int, int]]:
        """(type, start, end) of everything to replace in one document, in order."""
        bounds: list[tuple[int, int]] = []
        if marked is None or OPEN in text or CLOSE in text:  # the text holds the markers itself
            combined = re.compile(self.combined, re.ASCII)
            bounds = [m.span() for m in combined.finditer(text) if m.end() > m.start()]
        else:  # offsets in the original text: walk the marked text once
            pos, i = 0, 0
            while True:
                j = marked.find(OPEN, i)
                if j < 0:
                    break
                pos += j - i
                k = marked.index(CLOSE, j + 1)
                bounds.append((pos, pos + k - j - 1))
                pos += k - j - 1
                i = k + 1
        out: list[tuple[int, int, int]] = []
        for start, end in bounds:
            got = self.judge(text, start, end)
            if got is not None:
                out.append((got[0], *got[1]))
        return out

    def apply(self, texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
        """New texts (unchanged ones as they were) and counts (documents x types)."""
        counts = np.zeros((len(texts), len(self.types)), dtype=np.int32)
        filled = pc.fill_null(texts, "")
        candidate = np.asarray(pc.match_substring_regex(filled, self.combined).to_numpy(zero_copy_only=False), bool)
        idx = np.flatnonzero(candidate)
        if not len(idx):
            return texts, counts
        sub = filled.filter(pa.array(candidate))
        marked = pc.replace_substring_regex(sub, self.combined, f"{OPEN}\\0{CLOSE}").to_pylist()
        new: list[str] = []
        changed = np.zeros(len(texts), dtype=bool)
        for row, text, mark in zip(idx.tolist(), sub.to_pylist(), marked, strict=True):
            found = self.spans(text, mark)
            if not found:
                new.append(text)
                continue
            pieces, last = [], 0
            for kind, start, end in found:
                counts[row, kind] += 1
                pieces += [text[last:start], self.placeholders[kind]]
                last = end
            pieces.append(text[last:])
            new.append("".join(pieces))
            changed[row] = True
        if not self.redact or not changed.any():
            return texts, counts
        values = pa.array([t for t, c in zip(new, changed[idx].tolist(), strict=True) if c], pa.string())
        return pc.replace_with_mask(texts.cast(pa.string()), pa.array(changed), values), counts


def counts_array(types: list[str], counts: np.ndarray) -> pa.StructArray:
    return pa.StructArray.from_arrays(
        [pa.array(counts[:, k], pa.int32()) for k in range(len(types))] if len(types) else [],
        names=types,
    )


class PiiRedactionStage(Stage):
    """PII and secret redaction (one map step, `redact`)."""

    type_name = "pii-redaction"
    steps = ("redact",)

    @classmethod
    def preflight(cls, config: Any, spec: Any, schema: pa.Schema | None = None) -> None:
        """Custom patterns must be RE2 syntax too (the params checked Python's)."""
        try:
            Detector.from_params(config.params)
        except SpecError as err:
            raise SpecError(f"stage {config.stage_name}.params.custom: {err.message}") from None

    def step_redact(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        params: PiiRedactionParams = self.params
        detector = Detector.from_params(params)
        source = self.require_input(ctx)

        def redact(shard: int) -> dict[str, Any]:
            table = source.read_shard(shard, [TEXT])
            texts = table.column(TEXT)
            parts, tallies = [], []
            for start in range(0, table.num_rows, BATCH_ROWS):
                chunk = texts.slice(start, BATCH_ROWS)
                arr = chunk.combine_chunks() if isinstance(chunk, pa.ChunkedArray) else chunk
                new, counts = detector.apply(arr)
                parts.append(new)
                tallies.append(counts)
            counts = np.concatenate(tallies) if tallies else np.zeros((0, len(detector.types)), np.int32)
            new_text = pa.chunked_array(parts, pa.string()) if parts else texts
            kept = table.set_column(table.column_names.index(TEXT), TEXT, new_text)
            kept = kept.append_column(COUNTS, counts_array(detector.types, counts))
            stats = self.write_split(ctx, shard, table, [None] * table.num_rows, kept)
            per_type = counts.sum(axis=0).tolist()
            docs = (counts > 0).sum(axis=0).tolist()
            stats["extra"] = {
                "pii": {t: int(n) for t, n in zip(detector.types, per_type, strict=True) if n},
                "pii_docs": {t: int(n) for t, n in zip(detector.types, docs, strict=True) if n},
                "pii_docs_changed": int((counts.sum(axis=1) > 0).sum()),
            }
            return stats

        total = self.map_shards(ctx, rank, world_size, redact)
        return with_shard_extras(self, ctx, rank, world_size, total)
