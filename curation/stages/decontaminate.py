"""decontaminate: remove (or redact) documents that share word n-grams with evaluation sets.

    index  (global)  read every benchmark set from the models location once, hash the n-grams of
                     each record's fields, write `index/hashes.npy` (sorted unique uint64) and
                     `index/sets.npy` (uint64: bit j set when set j has the n-gram) — compact
                     files every rank of the next step memory-maps
    filter (map)     hash each document's n-grams the same way, look them up (binary search),
                     reject documents with at least `minMatches` distinct matching n-grams
                     (`decontaminate:<set>`), or redact the matching spans

Words and normalisation are MinHash's (`minhash_math`): NFKC, lowercase, punctuation and
symbols as separators, characters of scripts written without spaces (CJK, Thai) as words of
their own. An n-gram's hash mixes its words' 64-bit hashes with per-position odd multipliers.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dataset import TEXT, Location
from curation.errors import ModelNotFoundError, SpecError, StepError
from curation.params.decontaminate import BenchmarkSet, DecontaminateParams
from curation.sidefiles import read_npy, write_npy
from curation.stages.base import Stage, StepContext
from curation.stages.minhash_math import (
    fmix64,
    normalize_for_shingles,
    span_hashes,
    unit_starts,
    utf8_buffer,
    word_spans,
)
from curation.stages.tallies import with_shard_extras

U64 = np.uint64
MATCHES = "benchmark_ngrams"
BATCH_BYTES = 8 << 20
_RNG = np.random.default_rng(0xDEC0)
MULTIPLIERS = _RNG.integers(0, 1 << 63, size=32, dtype=np.uint64) * U64(2) + U64(1)
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".jsonl.zstd", ".ndjson.gz")
SUFFIXES = (*JSON_SUFFIXES, ".parquet", ".txt", ".txt.gz")


# ---- n-grams ------------------------------------------------------------------------------------


def unit_hashes(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hash of every word of every text (normalised), and words per text."""
    norm = normalize_for_shingles(texts, lowercase=True)
    values, offsets = utf8_buffer(norm)
    starts, ends, per_doc = word_spans(values, offsets, unit_starts(values, offsets, "auto"))
    return span_hashes(values, starts, ends), per_doc


def window_hashes(word_hash: np.ndarray, per_doc: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hash, document, first word) of every n-gram inside one document (documents with fewer
    than n words have none)."""
    windows = len(word_hash) - n + 1
    if windows <= 0:
        empty = np.zeros(0, np.int64)
        return np.zeros(0, U64), empty, empty
    acc = word_hash[:windows] * MULTIPLIERS[0]
    for k in range(1, n):
        acc += word_hash[k : k + windows] * MULTIPLIERS[k]
    doc_of = np.repeat(np.arange(len(per_doc), dtype=np.int64), per_doc)
    inside = doc_of[:windows] == doc_of[n - 1 :]
    first = np.flatnonzero(inside)
    return fmix64(acc[inside]), doc_of[first], first


def ngram_hashes(texts: pa.Array, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hash, document) of every n-gram of a batch of texts."""
    h, doc, _ = window_hashes(*unit_hashes(texts), n)
    return h, doc


def batches(texts: pa.Array, batch_bytes: int = BATCH_BYTES) -> Iterator[tuple[int, pa.Array]]:
    """(first row, slice) of about `batch_bytes` of text each."""
    sizes = np.asarray(pc.fill_null(pc.binary_length(texts), 0).to_numpy(zero_copy_only=False), np.int64)
    ends = np.cumsum(sizes)
    start = 0
    while start < len(texts):
        base = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + batch_bytes, side="right")))
        yield start, texts.slice(start, stop - start)
        start = stop


# ---- benchmark files ---------------------------------------------------------------------------


def benchmark_files(models: Path, bench: BenchmarkSet, where: str) -> list[Path]:
    rel = PurePosixPath(bench.path)
    if rel.is_absolute() or ".." in rel.parts:
        raise SpecError(f"{where}.path: give a path relative to the models location ({models})")
    path = models / rel
    if not path.exists():
        raise ModelNotFoundError(
            f"{where}: benchmark '{bench.name}' not found at {path}; put its JSONL, Parquet or text files "
            "there (the models location holds benchmarks too)"
        )
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES)
                   and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))
    if not files:
        raise SpecError(f"{where}: {path} holds no {', '.join(SUFFIXES[:3])}, .parquet or .txt files")
    return files


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)


def _json_records(path: Path) -> Iterator[dict[str, Any]]:
    with pa.input_stream(str(path), compression="detect") as stream:
        raw = stream.read().decode("utf-8")
    stripped = raw.lstrip()
    if stripped.startswith("["):
        data = json.loads(raw)
        yield from (r for r in data if isinstance(r, dict))
        return
    for i, line in enumerate(raw.splitlines()):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise SpecError(f"{path}: line {i + 1} is not JSON ({err.msg})") from None
            if isinstance(record, dict):
                yield record


def benchmark_values(path: Path, fields: list[str]) -> tuple[list[str], int]:
    """Every string in `fields` of every record of one file, and the number of records. A file
    whose records have none of the fields is an error naming the fields it has."""
    name = path.name
    if name.endswith((".txt", ".txt.gz")):
        with pa.input_stream(str(path), compression="detect") as stream:
            text = stream.read().decode("utf-8")
        passages = [p.strip() for p in text.split("\n\n") if p.strip()]
        return passages, len(passages)
    if name.endswith(".parquet"):
        schema = pq.read_schema(path)
        present = [f for f in fields if f in schema.names]
        if not present:
            raise SpecError(f"{path}: none of the fields {', '.join(fields)} (columns: {', '.join(schema.names)}); "
                            "set the benchmark's `fields`")
        table = pq.read_table(path, columns=present)
        out = [s for col in present for v in table.column(col).to_pylist() for s in _strings(v)]
        return out, table.num_rows
    values: list[str] = []
    records = 0
    seen: set[str] = set()
    for record in _json_records(path):
        records += 1
        seen.update(record)
        for f in fields:
            values.extend(_strings(record.get(f)))
    if records and not values:
        raise SpecError(f"{path}: no record has a text value in the fields {', '.join(fields)} "
                        f"(fields found: {', '.join(sorted(seen)) or 'none'}); set the benchmark's `fields`")
    return values, records


def build_index(models: Path, params: DecontaminateParams, where: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(sorted unique n-gram hashes, set bit mask per hash, statistics per set)."""
    hashes, bits, info = [], [], {}
    for j, bench in enumerate(params.benchmarks):
        records = short = 0
        set_hashes = []
        for path in benchmark_files(models, bench, f"{where}.benchmarks[{j}]"):
            values, n_records = benchmark_values(path, list(bench.fields))
            records += n_records
            if not values:
                continue
            arr = pa.array(values, pa.string())
            for _, part in batches(arr):
                words, per_doc = unit_hashes(part)
                short += int((per_doc < params.ngram).sum())
                h, _, _ = window_hashes(words, per_doc, params.ngram)
                set_hashes.append(h)
        unique = np.unique(np.concatenate(set_hashes)) if set_hashes else np.zeros(0, U64)
        if not len(unique):
            raise SpecError(f"{where}.benchmarks[{j}]: benchmark '{bench.name}' has no value of {params.ngram} "
                            f"or more words in the fields {', '.join(bench.fields)} ({records} records)")
        hashes.append(unique)
        bits.append(np.full(len(unique), U64(1) << U64(j), U64))
        info[bench.name] = {"records": records, "values_too_short": short, "ngrams": int(len(unique))}
    every = np.concatenate(hashes)
    mask = np.concatenate(bits)
    order = np.argsort(every, kind="stable")
    every, mask = every[order], mask[order]
    keys, first = np.unique(every, return_index=True)
    merged = np.bitwise_or.reduceat(mask, first) if len(first) else mask
    return keys, merged, info


# ---- redaction ----------------------------------------------------------------------------------


def original_tokens(text: str) -> list[tuple[int, int]]:
    """[start, end) of every maximal run of characters that are not separators (whitespace,
    punctuation, symbols), in the original text."""
    spans, start = [], -1
    for i, ch in enumerate(text):
        sep = ch.isspace() or unicodedata.category(ch)[0] in "ZPS"
        if sep and start >= 0:
            spans.append((start, i))
            start = -1
        elif not sep and start < 0:
            start = i
    if start >= 0:
        spans.append((start, len(text)))
    return spans


def redact_matches(text: str, index: np.ndarray, n: int, placeholder: str) -> tuple[str, int]:
    """The text with every span of matching n-grams replaced, and the number of spans."""
    tokens = original_tokens(text)
    if not tokens:
        return text, 0
    words, per_token = unit_hashes(pa.array([text[a:b] for a, b in tokens], pa.string()))
    token_of_word = np.repeat(np.arange(len(tokens)), per_token)
    h, _, first = window_hashes(words, np.array([len(words)]), n)
    pos = np.minimum(np.searchsorted(index, h), max(len(index) - 1, 0))
    hit = first[index[pos] == h] if len(index) else first[:0]
    if not len(hit):
        return text, 0
    covered = np.zeros(len(words) + 1, np.int64)
    np.add.at(covered, hit, 1)
    np.add.at(covered, hit + n, -1)
    in_match = np.cumsum(covered)[: len(words)] > 0
    hit_tokens = np.unique(token_of_word[in_match])
    pieces, last, spans = [], 0, 0
    run_start = prev = None
    for t in [*hit_tokens.tolist(), None]:
        if t is not None and prev is not None and t == prev + 1:
            prev = t
            continue
        if run_start is not None and prev is not None:
            a, b = tokens[run_start][0], tokens[prev][1]
            pieces += [text[last:a], placeholder]
            last, spans = b, spans + 1
        run_start = prev = t
    pieces.append(text[last:])
    return "".join(pieces), spans


# ---- the stage ---------------------------------------------------------------------------------


class DecontaminateStage(Stage):
    """Benchmark n-gram decontamination (steps `index` (global), `filter` (map))."""

    type_name = "decontaminate"
    steps = ("index", "filter")

    @classmethod
    def preflight(cls, config: Any, spec: Any, schema: pa.Schema | None = None) -> None:
        """Every benchmark file exists and yields n-grams from its fields."""
        build_index(Path(spec.models.path), config.params, f"stage {config.stage_name}.params")

    def index_files(self, ctx: StepContext) -> tuple[Location, Location]:
        return ctx.scratch.join("index", "hashes.npy"), ctx.scratch.join("index", "sets.npy")

    def step_index(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        from curation.stages.base import StageStats

        stats = StageStats()
        keys, sets, info = build_index(Path(ctx.models.path), self.params, f"stage {self.name}.params")
        hashes_loc, sets_loc = self.index_files(ctx)
        write_npy(sets_loc, sets)
        write_npy(hashes_loc, keys)  # last: its presence means the index is complete
        stats.extra = {"benchmarks": info, "index_ngrams": int(len(keys)), "index_bytes": int(keys.nbytes + sets.nbytes)}
        return stats.to_dict()

    def step_filter(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        params: DecontaminateParams = self.params
        hashes_loc, sets_loc = self.index_files(ctx)
        if not hashes_loc.exists():
            raise StepError(f"{hashes_loc.path}: missing (did the index step finish?)")
        index, set_bits = read_npy(hashes_loc), read_npy(sets_loc)
        names = [b.name for b in params.benchmarks]
        source = self.require_input(ctx)

        def split(shard: int) -> dict[str, Any]:
            table = source.read_shard(shard, [TEXT])
            texts = table.column(TEXT).combine_chunks() if table.num_rows else pa.array([], pa.string())
            n = table.num_rows
            per_set = np.zeros((n, len(names)), np.int64)
            for start, part in batches(texts):
                h, doc = ngram_hashes(part, params.ngram)
                if not len(h) or not len(index):
                    continue
                pos = np.minimum(np.searchsorted(index, h), len(index) - 1)
                hit = index[pos] == h
                if not hit.any():
                    continue
                pairs = np.unique(np.stack([doc[hit], pos[hit]]), axis=1)  # distinct n-grams per document
                bits = set_bits[pairs[1]]
                for j in range(len(names)):
                    has = ((bits >> U64(j)) & U64(1)).astype(bool)
                    per_set[:, j] += np.bincount(pairs[0][has] + start, minlength=n)[:n]
            distinct = per_set.max(axis=1) if len(names) else np.zeros(n, np.int64)
            dirty = distinct >= params.min_matches
            best = np.argmax(per_set, axis=1) if len(names) else np.zeros(n, np.int64)
            kept = None
            out = table.drop_columns([TEXT]).append_column(MATCHES, pa.array(distinct.astype(np.int32), pa.int32()))
            if params.action == "remove":
                reasons = [f"decontaminate:{names[b]}" if d else None for d, b in zip(dirty.tolist(), best.tolist(),
                                                                                       strict=True)]
                redacted = 0
            else:
                reasons = [None] * n
                new = texts.to_pylist()
                redacted = 0
                for i in np.flatnonzero(dirty).tolist():
                    new[i], spans = redact_matches(new[i], index, params.ngram, params.placeholder)
                    redacted += spans
                kept = table.set_column(table.column_names.index(TEXT), TEXT, pa.array(new, pa.string()))
                kept = kept.append_column(MATCHES, pa.array(distinct.astype(np.int32), pa.int32()))
            stats = self.write_split(ctx, shard, out if kept is None else table, reasons, kept)
            stats["extra"] = {
                "contaminated_docs": {names[j]: int(((per_set[:, j] >= params.min_matches)).sum()) for j in range(len(names))},
                "matched_ngrams": {names[j]: int(per_set[:, j].sum()) for j in range(len(names))},
                **({"redacted_spans": redacted} if params.action == "redact" else {}),
            }
            return stats

        total = self.map_shards(ctx, rank, world_size, split)
        return with_shard_extras(self, ctx, rank, world_size, total)
