"""rephrase (WRAP, Maini et al. 2024; BeyondWeb): add synthetic rephrasings of real documents.

One map step, `generate`. For each shard: choose which documents to rephrase and in which
style (seeded, from `ratio` and `styles`), cut long documents into chunks of about
`chunkTokens`, wrap each chunk in its style's prompt and the model's chat template, generate in
large length-sorted batches, join the chunks back, and check each result against the guards.

Real rows are never rejected here; they get `synthetic = false`. The generations are written as
the stage's synthetic rows of the shard (`_row` numbers after the shard's universe): id
`<source id>#syn-<style>`, `synthetic = true`, `synthetic_source_id`, `synthetic_style`, other
columns null. The decision file judges them with the real rows: kept, or `rephrase:<guard>` for
a degenerate generation (published in `rejected/`).
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from curation.corpus import BYTES, ROW, SYNTHETIC_SOURCE, decision_table, text_lengths
from curation.dataset import ID, TEXT
from curation.params.model_stages import RephraseParams
from curation.stages.base import Stage, StageStats, StepContext, text_bytes

SYNTHETIC, STYLE = "synthetic", "synthetic_style"
SYNTHETIC_COLUMNS = (SYNTHETIC, SYNTHETIC_SOURCE, STYLE)


@dataclass(frozen=True)
class Rephrasing:
    row: int  # row of the source document in its shard
    style: str
    synthetic_id: str


def _unit(seed: int, salt: str, doc_id: str) -> float:
    return xxhash.xxh64_intdigest(f"{seed}:{salt}:{doc_id}".encode()) / 2.0**64


def plan_rephrasings(
    ids: Sequence[str],
    texts: Sequence[str],
    styles: Sequence[str],
    ratio: float,
    seed: int,
    eligible: Sequence[bool] | None = None,
) -> list[Rephrasing]:
    """Which documents get how many rephrasings in which styles (seeded per id, so the choice does
    not depend on sharding). Each document gets floor(ratio) rephrasings plus one more with
    probability frac(ratio); styles rotate from a seeded start."""
    whole, frac = int(math.floor(ratio)), ratio - math.floor(ratio)
    plan = []
    for row, (doc_id, text) in enumerate(zip(ids, texts, strict=True)):
        if not text.strip() or (eligible is not None and not eligible[row]):
            continue
        count = whole + (1 if _unit(seed, "ratio", doc_id) < frac else 0)
        start = int(_unit(seed, "style", doc_id) * len(styles))
        for j in range(count):
            style = styles[(start + j) % len(styles)]
            repeat = j // len(styles)
            suffix = f"-{repeat}" if repeat else ""
            plan.append(Rephrasing(row, style, f"{doc_id}#syn-{style}{suffix}"))
    return plan


def chunk_text(text: str, tokenizer: Any, chunk_tokens: int) -> list[str]:
    """Cut a text into pieces of about `chunk_tokens` tokens, preferring whitespace boundaries."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if len(offsets) <= chunk_tokens:
        return [text]
    chunks, start = [], 0
    for first in range(chunk_tokens, len(offsets), chunk_tokens):
        end = offsets[first][0]
        space = text.rfind(" ", start + (end - start) * 4 // 5, end)
        cut = space + 1 if space > start else end
        chunks.append(text[start:cut].strip())
        start = cut
    chunks.append(text[start:].strip())
    return [c for c in chunks if c]


def repetition_fraction(words: Sequence[str], n: int = 3) -> float:
    """Share of word n-grams that repeat an earlier one (0 for short texts)."""
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if len(grams) < 4:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def _normal(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def degenerate_reason(output: str, source: str, p: RephraseParams) -> str | None:
    """The guard a generation fails (`empty`, `copy`, `too-short`, `too-long`, `repeated`), or None."""
    words, source_words = output.split(), source.split()
    if not words:
        return "empty"
    if _normal(output) == _normal(source):
        return "copy"
    if len(words) < p.min_words or len(words) < p.min_length_ratio * len(source_words):
        return "too-short"
    if len(words) > max(p.max_length_ratio * len(source_words), p.min_words):
        return "too-long"
    if repetition_fraction([w.lower() for w in words]) > p.max_repetition:
        return "repeated"
    return None


def synthetic_table(
    schema: pa.Schema, first_row: int, ids: list[str], texts: list[str], sources: list[str], styles: list[str]
) -> pa.Table:
    """The stage's synthetic rows: `_row` from `first_row` on, `_bytes`, and the id and text in the
    canonical types of `schema`."""
    n = len(ids)
    text = pa.array(texts, schema.field(TEXT).type if TEXT in schema.names else pa.string())
    return pa.table(
        {
            ROW: pa.array(np.arange(first_row, first_row + n, dtype=np.int64)),
            BYTES: pa.array(text_lengths(text), pa.int64()),
            ID: pa.array(ids, schema.field(ID).type if ID in schema.names else pa.string()),
            TEXT: text,
            SYNTHETIC: pa.array([True] * n, pa.bool_()),
            SYNTHETIC_SOURCE: pa.array(sources, pa.string()),
            STYLE: pa.array(styles, pa.string()),
        }
    )


class RephraseStage(Stage):
    type_name = "rephrase"
    steps = ("generate",)

    def step_generate(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        self.require_input(ctx)
        total = StageStats()
        rejected_synthetic: Counter[str] = Counter()
        new_tokens = 0
        for shard in ctx.shards_for(rank, world_size):
            done = self.shard_done(ctx, shard)
            if done is None:
                done = self._rephrase_shard(ctx, shard)
                self.mark_shard(ctx, shard, done)
            total.add(done)
            extra = done.get("extra", {})
            rejected_synthetic.update(extra.get("rejected_synthetic", {}))
            new_tokens += int(extra.get("new_tokens", 0))
        total.extra = {
            "rejected_synthetic": dict(sorted(rejected_synthetic.items())),
            "new_tokens": new_tokens,
        }
        return total.to_dict()

    def _backend(self, ctx: StepContext) -> Any:
        """The generation backend (opened once per process, and only when a shard needs it)."""
        from curation.models.generation import open_backend

        return open_backend(ctx.models, self.params.model, self.params.backend, seed=self.params.seed)

    def _rephrase_shard(self, ctx: StepContext, shard: int) -> dict[str, Any]:
        from curation.models.generation import SamplingConfig, chat_prompt

        p = self.params
        started = time.monotonic()
        source = self.require_input(ctx)
        earlier = SYNTHETIC in source.schema(shard).names  # an earlier rephrase stage's rows
        table = source.read_shard(shard, [ID, TEXT, *([SYNTHETIC] if earlier else [])])
        ids, texts = table.column(ID).to_pylist(), table.column(TEXT).to_pylist()
        flags = table.column(SYNTHETIC).to_pylist() if earlier else [None] * table.num_rows
        real = [flag is not True for flag in flags]
        plan = plan_rephrasings(ids, texts, p.styles, p.ratio, p.seed, eligible=real)
        backend = self._backend(ctx) if plan else None
        chunks = {
            row: chunk_text(texts[row], backend.tokenizer, p.chunk_tokens) for row in {r.row for r in plan}
        }
        prompts, owners = [], []
        for index, item in enumerate(plan):
            template = p.template(item.style)
            for chunk in chunks[item.row]:
                prompts.append(chat_prompt(backend.tokenizer, template.replace("{text}", chunk)))
                owners.append(index)
        config = SamplingConfig(
            p.max_new_tokens, p.temperature, p.top_p, p.repetition_penalty, p.seed, p.batch_size
        )
        generations = backend.generate(prompts, config) if backend is not None and prompts else []
        pieces: list[list[str]] = [[] for _ in plan]
        for owner, generation in zip(owners, generations, strict=True):
            pieces[owner].append(generation.text)
        outputs = ["\n\n".join(part for part in parts if part) for parts in pieces]
        guards = [degenerate_reason(out, texts[item.row], p) for item, out in zip(plan, outputs, strict=True)]
        # Synthetic rows continue after every row the shard has so far (canonical and synthetic).
        first = source.universe(shard, []).table.num_rows
        synthetic = synthetic_table(
            source.corpus.schema(),
            first,
            [r.synthetic_id for r in plan],
            outputs,
            [ids[r.row] for r in plan],
            [r.style for r in plan],
        )
        synthetic_reasons = [None if g is None else f"rephrase:{g}" for g in guards]
        # One decision file for both: every real row kept (marked `synthetic = false`, or what an
        # earlier rephrase set), each generation kept or rejected by its guard.
        rows = np.concatenate(
            [table.column(ROW).to_numpy().astype(np.int64), synthetic.column(ROW).to_numpy()]
        )
        marks = pa.array([flag is True for flag in flags] + [True] * synthetic.num_rows, pa.bool_())
        decisions = decision_table(rows, [None] * table.num_rows + synthetic_reasons, {SYNTHETIC: marks})
        self.write_decisions(ctx, shard, decisions, synthetic=synthetic)
        kept = pa.array([r is None for r in synthetic_reasons], pa.bool_())
        stats = StageStats()
        stats.docs_in = stats.docs_out = table.num_rows
        stats.generated = int(pc.sum(kept).as_py() or 0) if synthetic.num_rows else 0
        stats.bytes_in = text_bytes(table)
        stats.bytes_out = stats.bytes_in + (text_bytes(synthetic.filter(kept)) if synthetic.num_rows else 0)
        stats.extra = {
            "rejected_synthetic": dict(Counter(r for r in synthetic_reasons if r is not None)),
            "new_tokens": int(sum(g.new_tokens for g in generations)),
            "generate_seconds": round(time.monotonic() - started, 3),
        }
        return stats.to_dict()
