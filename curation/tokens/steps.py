"""The finalize steps of `output.tokenize`, after the output is published, ordered and checked.

    tokenize (map over output shards, then rejected shards)
        each output shard, in batches: its documents' tokens (EOS after each) to one piece
        `tokens/sNNNNN.tok` and their lengths to `tokens/sNNNNN.len`; per-source token counts.
        Rejected shards are tokenised too (nothing written but counts per stage, reason, source).
        A shard's record `sNNNNN.json` is written last: a restarted rank skips finished shards.
    layout (global)
        the ranks' per-shard counts (small: two numbers per shard) laid out as merged files of
        about `fileBytes` each: consecutive output shards, so the files' concatenation is the
        output order. Prefix sums give each file its first document and token.
    merge (reduce over merged files)
        each file streamed from its shards' pieces into `tokens/megatron/part-NNNNN.{bin,idx}` and
        `tokens/numpy/{tokens,offsets}-NNNNN.npy`; the lengths are read twice (the .idx holds all
        lengths before all pointers), never held whole.

Memory per rank is one batch of documents plus fixed buffers, whatever the corpus size. Every
file goes through the output's filesystem (local or s3://): staged and renamed on disk, uploaded
under its final name on an object store, with the record written after the files it describes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dataset import READ_BUFFER, Location, commit_staged, shard_name, staging_path
from curation.errors import StepError
from curation.tokens.formats import MergedFileWriter, file_names, megatron_dtype, sink_names, token_dtype
from curation.tokens.tokenizer import LoadedTokenizer, limit_threads, load_tokenizer

PIECES = "tokens"  # below the finalize stage's scratch folder
COPY_BYTES = 8 << 20
NO_SOURCE = "(none)"
SUMMARY_SOURCES = 500  # sources listed one by one in summary.json (by tokens); the rest in one row
TRACKED_SOURCES = 20_000  # distinct sources counted one by one per rank and in the layout
OTHER_SOURCES = "(other sources)"
SYNTHETIC_SOURCE = "synthetic_source_id"


# ---- tokenize (map) ------------------------------------------------------------------------------


def units(data_shards: int, rejected_shards: int) -> list[tuple[str, int]]:
    """The work of the map step: output shards first (the pieces), then rejected shards."""
    return [("s", j) for j in range(data_shards)] + [("r", s) for s in range(rejected_shards)]


def _batches(loc: Location, columns: list[str], size: int) -> Iterator[pa.RecordBatch]:
    with loc.fs.open_input_file(loc.path) as f:
        pf = pq.ParquetFile(f, buffer_size=READ_BUFFER)
        have = set(pf.schema_arrow.names)
        yield from pf.iter_batches(batch_size=size, columns=[c for c in columns if c in have])


def _texts(batch: pa.RecordBatch, text: str) -> list[str]:
    return pc.fill_null(batch.column(text), "").to_pylist()


def _labels(batch: pa.RecordBatch, column: str | None) -> np.ndarray | None:
    if column is None or column not in batch.schema.names:
        return None
    values = pc.fill_null(pc.cast(batch.column(column), pa.string()), NO_SOURCE)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=object)


def _add(target: dict[str, dict[str, int]], labels: np.ndarray, lengths: np.ndarray, prefix: str = "") -> None:
    """Per label: documents and tokens."""
    names, inverse = np.unique(labels.astype(str), return_inverse=True)
    docs = np.bincount(inverse, minlength=len(names))
    tokens = np.bincount(inverse, weights=lengths.astype(np.float64), minlength=len(names))
    for name, d, t in zip(names.tolist(), docs.tolist(), tokens.tolist(), strict=True):
        row = target.setdefault(name, {})
        row[f"{prefix}docs"] = row.get(f"{prefix}docs", 0) + int(d)
        row[f"{prefix}tokens"] = row.get(f"{prefix}tokens", 0) + int(round(t))


def tokenize_output_shard(tok: LoadedTokenizer, shard: Location, pieces: Location, j: int, text: str,
                          source: str | None, batch: int) -> dict[str, Any]:
    """One output shard's documents, in order, into its token and length pieces."""
    out = {"shard": j, "docs": 0, "tokens": 0, "synthetic_docs": 0, "synthetic_tokens": 0, "sources": {},
           "encode_seconds": 0.0, "encode_cpu_seconds": 0.0, "max_doc_tokens": 0}
    targets = {kind: pieces.join(f"s{j:05d}.{kind}") for kind in ("tok", "len")}
    staged = {kind: staging_path(loc) for kind, loc in targets.items()}
    sinks = {kind: loc.fs.open_output_stream(staged[kind]) for kind, loc in targets.items()}
    try:
        for b in _batches(shard, [text, *([source] if source else []), SYNTHETIC_SOURCE], batch):
            started, cpu = time.monotonic(), time.process_time()
            tokens, lengths = tok.encode(_texts(b, text))
            out["encode_seconds"] += time.monotonic() - started
            out["encode_cpu_seconds"] += time.process_time() - cpu
            sinks["tok"].write(tokens.tobytes())
            sinks["len"].write(lengths.astype("<i4").tobytes())
            out["docs"] += len(lengths)
            out["tokens"] += int(lengths.sum(dtype=np.int64))
            out["max_doc_tokens"] = max(out["max_doc_tokens"], int(lengths.max(initial=0)))
            labels = _labels(b, source)
            if labels is not None:
                _add(out["sources"], labels, lengths)
            synthetic = _labels(b, SYNTHETIC_SOURCE)
            if synthetic is not None:
                mask = synthetic != NO_SOURCE
                out["synthetic_docs"] += int(mask.sum())
                out["synthetic_tokens"] += int(lengths[mask].sum(dtype=np.int64))
    finally:
        for s in sinks.values():
            s.close()  # on an object store: completes the upload
    for kind, loc in targets.items():
        commit_staged(loc, staged[kind])
    out["encode_seconds"] = round(out["encode_seconds"], 4)
    out["encode_cpu_seconds"] = round(out["encode_cpu_seconds"], 4)
    return out


def count_rejected_shard(tok: LoadedTokenizer, shard: Location, s: int, text: str, source: str | None,
                         batch: int) -> dict[str, Any]:
    """Tokens of one rejected shard's documents, per stage and reason, and per source."""
    out: dict[str, Any] = {"shard": s, "stages": {}, "sources": {}, "synthetic_docs": 0, "synthetic_tokens": 0,
                           "encode_seconds": 0.0, "encode_cpu_seconds": 0.0}
    if not shard.exists():
        return out
    for b in _batches(shard, [text, "stage", "reason", *([source] if source else []), SYNTHETIC_SOURCE], batch):
        started, cpu = time.monotonic(), time.process_time()
        _, lengths = tok.encode(_texts(b, text))
        out["encode_seconds"] += time.monotonic() - started
        out["encode_cpu_seconds"] += time.process_time() - cpu
        synthetic = _labels(b, SYNTHETIC_SOURCE)
        real = np.ones(len(lengths), dtype=bool) if synthetic is None else synthetic == NO_SOURCE
        if not real.all():  # rejected rephrasings: counted apart, not as input removed
            out["synthetic_docs"] += int((~real).sum())
            out["synthetic_tokens"] += int(lengths[~real].sum(dtype=np.int64))
        stage, reason = _labels(b, "stage"), _labels(b, "reason")
        if stage is None or reason is None:
            raise StepError(f"{shard.path}: rejected shard without `stage` and `reason` columns")
        keys = np.char.add(np.char.add(stage[real].astype(str), "\x1f"), reason[real].astype(str))
        pairs: dict[str, dict[str, int]] = {}
        _add(pairs, keys, lengths[real])
        for key, row in pairs.items():
            name, why = key.split("\x1f", 1)
            entry = out["stages"].setdefault(name, {})
            cell = entry.setdefault(why, {"docs": 0, "tokens": 0})
            cell["docs"] += row["docs"]
            cell["tokens"] += row["tokens"]
        labels = _labels(b, source)
        if labels is not None:
            _add(out["sources"], labels[real], lengths[real], prefix="removed_")
    out["encode_seconds"] = round(out["encode_seconds"], 4)
    out["encode_cpu_seconds"] = round(out["encode_cpu_seconds"], 4)
    return out


def merge_sources(target: dict[str, dict[str, int]], extra: dict[str, dict[str, int]]) -> None:
    """Per-source counts added up; past TRACKED_SOURCES distinct sources the new ones are counted
    together as OTHER_SOURCES, so a source column with a value per document cannot grow a rank's
    memory with the corpus."""
    for name, row in extra.items():
        key = name if name in target or len(target) < TRACKED_SOURCES else OTHER_SOURCES
        merge_counts(target.setdefault(key, {}), row)


def merge_counts(target: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict):
            merge_counts(target.setdefault(key, {}), value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            target[key] = target.get(key, 0) + value


def run_tokenize(spec: Any, scratch: Location, models: Location, data: Location, rejected: Location, data_shards: int,
                 rejected_shards: int, rank: int, world_size: int) -> dict[str, Any]:
    params = spec.output.tokenize
    limit_threads()
    tok = load_tokenizer(models, params)
    pieces = scratch.join(PIECES)
    text, source = spec.input.text_field, spec.input.source_column
    mine = units(data_shards, rejected_shards if params.count_rejected else 0)[rank::world_size]
    shards: list[dict[str, Any]] = []
    removed: dict[str, Any] = {}
    sources: dict[str, dict[str, int]] = {}
    for kind, j in mine:
        record = pieces.join(f"{kind}{j:05d}.json")
        if record.exists():
            stats: dict[str, Any] = record.read_json()
        elif kind == "s":
            stats = tokenize_output_shard(tok, data.join(shard_name(j)), pieces, j, text, source,
                                          params.batch_documents)
            record.write_json_atomic(stats)
        else:
            stats = count_rejected_shard(tok, rejected.join(shard_name(j)), j, text, source,
                                         params.batch_documents)
            record.write_json_atomic(stats)
        if kind == "s":
            merge_sources(sources, stats["sources"])
            shards.append({k: v for k, v in stats.items() if k != "sources"})
        else:
            merge_sources(sources, stats["sources"])
            merge_counts(removed, {k: v for k, v in stats.items() if k not in ("shard", "sources")})
    info = {"vocab_size": tok.vocab_size, "eos_id": tok.eos_id, "dtype": str(tok.dtype)}
    pieces.join(f"rank-{rank:05d}-of-{world_size:05d}.json").write_json_atomic(
        {**info, "shards": shards, "rejected": removed, "sources": sources})
    docs = sum(int(s["docs"]) for s in shards)
    tokens = sum(int(s["tokens"]) for s in shards)
    seconds = sum(float(s.get("encode_seconds", 0.0)) for s in shards) + float(removed.get("encode_seconds", 0.0))
    counted = tokens + sum(int(c["tokens"]) for st in removed.get("stages", {}).values() for c in st.values())
    return {"docs_in": docs, "docs_out": docs, "generated": 0, "removed": {}, "bytes_in": 0, "bytes_out": 0,
            "extra": {"tokens": tokens, "tokens_counted": counted, "encode_seconds": round(seconds, 4)}}


# ---- layout (global) -------------------------------------------------------------------------


def plan_files(sizes: list[tuple[int, int]], itemsize: int, file_bytes: int) -> list[dict[str, Any]]:
    """Consecutive shards (documents, tokens) grouped into files of about `file_bytes` of tokens
    (a shard is never split; a file holds at least one shard; at least one file, maybe empty)."""
    files: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    first_doc = first_token = 0
    for j, (docs, tokens) in enumerate(sizes):
        if current is None or (current["shards"][1] > current["shards"][0]
                               and (current["tokens"] + tokens) * itemsize > file_bytes):
            current = {"index": len(files), "shards": [j, j], "documents": 0, "tokens": 0,
                       "first_document": first_doc, "first_token": first_token}
            files.append(current)
        current["shards"][1] = j + 1
        current["documents"] += docs
        current["tokens"] += tokens
        first_doc += docs
        first_token += tokens
    if not files:
        files.append({"index": 0, "shards": [0, 0], "documents": 0, "tokens": 0, "first_document": 0,
                      "first_token": 0})
    return files


def run_layout(spec: Any, scratch: Location, data_shards: int, tokenize_ranks: int) -> dict[str, Any]:
    pieces = scratch.join(PIECES)
    by_shard: dict[int, dict[str, Any]] = {}
    removed: dict[str, Any] = {}
    sources: dict[str, dict[str, int]] = {}
    info: dict[str, Any] = {}
    for r in range(tokenize_ranks):
        part = pieces.join(f"rank-{r:05d}-of-{tokenize_ranks:05d}.json").read_json()
        info = {k: part[k] for k in ("vocab_size", "eos_id", "dtype")}
        for s in part["shards"]:
            by_shard[int(s["shard"])] = s
        merge_counts(removed, part["rejected"])
        merge_sources(sources, part["sources"])
    missing = sorted(set(range(data_shards)) - set(by_shard))
    if missing:
        raise StepError(f"finalize.layout: output shards {missing[:5]} were not tokenised (rerun finalize.tokenize)")
    sizes = [(int(by_shard[j]["docs"]), int(by_shard[j]["tokens"])) for j in range(data_shards)]
    itemsize = token_dtype(int(info.get("vocab_size", 1))).itemsize
    files = plan_files(sizes, itemsize, spec.output.tokenize.file_bytes)
    kept: dict[str, Any] = {}
    for s in by_shard.values():
        merge_counts(kept, {k: s[k] for k in ("docs", "tokens", "synthetic_docs", "synthetic_tokens",
                                              "encode_seconds", "encode_cpu_seconds")})
        kept["max_doc_tokens"] = max(int(kept.get("max_doc_tokens", 0)), int(s.get("max_doc_tokens", 0)))
    plan = {**info, "files": files, "kept": kept, "rejected": removed, "sources": sources}
    pieces.join("layout.json").write_json_atomic(plan)
    return {"docs_in": kept.get("docs", 0), "docs_out": kept.get("docs", 0), "generated": 0, "removed": {},
            "extra": {"files": len(files)}}


# ---- merge (reduce over files) ---------------------------------------------------------------


def read_chunks(loc: Location, itemsize: int) -> Iterator[bytes]:
    """A file's bytes in chunks of whole items (a short read never splits an item)."""
    carry = b""
    with loc.fs.open_input_stream(loc.path) as f:
        while True:
            chunk = f.read(COPY_BYTES)
            if not chunk:
                break
            data = carry + bytes(chunk)
            cut = len(data) - len(data) % itemsize
            carry = data[cut:]
            if cut:
                yield data[:cut]
    if carry:
        raise StepError(f"{loc.path}: truncated ({len(carry)} stray bytes); rerun finalize.tokenize")


def _lengths(pieces: Location, shards: list[int]) -> Iterator[np.ndarray]:
    for j in range(*shards):
        for chunk in read_chunks(pieces.join(f"s{j:05d}.len"), 4):
            yield np.frombuffer(chunk, dtype="<i4")


def merge_file(plan: dict[str, Any], entry: dict[str, Any], pieces: Location, out: Location,
               formats: list[str]) -> dict[str, Any]:
    """One merged file, in every requested format, from its output shards' pieces."""
    names = file_names(int(entry["index"]))
    targets = {name: out.join(names[name]) for name in sink_names(formats)}
    staged = {name: staging_path(loc) for name, loc in targets.items()}
    sinks = {name: loc.fs.open_output_stream(staged[name]) for name, loc in targets.items()}
    itemsize = np.dtype(plan["dtype"]).itemsize
    try:
        writer = MergedFileWriter(sinks, int(plan["vocab_size"]), int(entry["documents"]), int(entry["tokens"]))
        for j in range(*entry["shards"]):
            for chunk in read_chunks(pieces.join(f"s{j:05d}.tok"), itemsize):
                writer.add_tokens(chunk)
        for lengths in _lengths(pieces, entry["shards"]):
            writer.add_lengths(lengths)
        writer.finish(_lengths(pieces, entry["shards"]))
    finally:
        for s in sinks.values():
            s.close()
    for name, loc in targets.items():
        commit_staged(loc, staged[name])
    files = {name: {"path": names[name], "bytes": int(loc.fs.get_file_info(loc.path).size or 0)}
             for name, loc in targets.items()}
    return {**entry, "files": files}


def run_merge(spec: Any, scratch: Location, out: Location, rank: int, world_size: int) -> dict[str, Any]:
    pieces = scratch.join(PIECES)
    plan = pieces.join("layout.json").read_json()
    formats = list(spec.output.tokenize.formats)
    docs = 0
    for entry in plan["files"][rank::world_size]:
        record = pieces.join("merged", f"f{int(entry['index']):05d}.json")
        if not record.exists():
            record.write_json_atomic(merge_file(plan, entry, pieces, out, formats))
        docs += int(entry["documents"])
    return {"docs_in": docs, "docs_out": docs, "generated": 0, "removed": {}}


# ---- summary -----------------------------------------------------------------------------------


def token_summary(spec: Any, scratch: Location, out: Location, stage_names: list[str],
                  ordered: bool) -> dict[str, Any]:
    """`tokens/_manifest.json` (for loaders) and the `tokens` section of summary.json."""
    params = spec.output.tokenize
    pieces = scratch.join(PIECES)
    plan = pieces.join("layout.json").read_json()
    files = [pieces.join("merged", f"f{int(e['index']):05d}.json").read_json() for e in plan["files"]]
    kept, rejected = plan["kept"], plan["rejected"]
    vocab = int(plan["vocab_size"])
    manifest = {
        "tokenizer": params.tokenizer, "vocab_size": vocab, "eos_id": plan["eos_id"], "append_eos": params.append_eos,
        "formats": list(params.formats),
        "dtype": {"megatron": str(megatron_dtype(vocab)), "numpy": str(token_dtype(vocab))},
        "order": "curriculum" if ordered else "published",
        "documents": int(kept.get("docs", 0)), "tokens": int(kept.get("tokens", 0)),
        "files": [{"index": f["index"], "documents": f["documents"], "tokens": f["tokens"],
                   "first_document": f["first_document"], "first_token": f["first_token"],
                   "output_shards": f["shards"], **{k: v["path"] for k, v in f["files"].items()},
                   "bytes": sum(int(v["bytes"]) for v in f["files"].values())} for f in files],
    }
    out.join("_manifest.json").write_json_atomic(manifest)
    return {**{k: v for k, v in manifest.items() if k != "files"}, "path": f"{spec.output.path.rstrip('/')}/tokens",
            "files": len(files), "bytes": sum(f["bytes"] for f in manifest["files"]),
            "eos_tokens": int(kept.get("docs", 0)) if plan["eos_id"] is not None else 0,
            "synthetic_docs": int(kept.get("synthetic_docs", 0)),
            "synthetic_tokens": int(kept.get("synthetic_tokens", 0)),
            "max_doc_tokens": int(kept.get("max_doc_tokens", 0)),
            "per_source": _per_source(plan.get("sources", {})),
            "per_stage": _per_stage(kept, rejected, stage_names) if params.count_rejected else None,
            "rejected_synthetic_tokens": int(rejected.get("synthetic_tokens", 0)),
            "throughput": _throughput(kept, rejected)}


def _per_source(sources: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Per source: documents and tokens kept (in the token files) and removed."""
    keys = ("docs", "tokens", "removed_docs", "removed_tokens")
    rows = {name: {k: int(row.get(k, 0)) for k in keys} for name, row in sources.items()}
    if len(rows) > SUMMARY_SOURCES:  # a fine-grained source column: the largest, then one row for the rest
        ranked = sorted(rows, key=lambda n: -(rows[n]["tokens"] + rows[n]["removed_tokens"]))
        rest = ranked[SUMMARY_SOURCES:]
        other = {k: sum(rows[n][k] for n in rest) for k in keys}
        rows = {n: rows[n] for n in ranked[:SUMMARY_SOURCES]}
        rows[f"(other: {len(rest):,} sources)"] = other
    return dict(sorted(rows.items()))


def _per_stage(kept: dict[str, Any], rejected: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    """Per stage, in pipeline order: tokens of the documents it removed (per reason), and the tokens
    alive after it. Real documents only; counted on the published text (EOS included, as in the
    token files), so tokens after the last stage equal the real documents' tokens in the files."""
    stages = rejected.get("stages", {})
    order = [*names, *sorted(set(stages) - set(names))]
    real_kept = int(kept.get("tokens", 0)) - int(kept.get("synthetic_tokens", 0))
    removed = [sum(int(c["tokens"]) for c in stages.get(n, {}).values()) for n in order]
    out = []
    after = real_kept + sum(removed)
    for name, tokens in zip(order, removed, strict=True):
        before = after
        after = before - tokens
        reasons = stages.get(name, {})
        if name == names[0] and not reasons:
            continue  # ingest rejected nothing (it only rejects invalid text, with input.skipInvalid)
        out.append({"stage": name, "tokens_in": before, "tokens_removed": tokens, "tokens_out": after,
                    "docs_removed": sum(int(c["docs"]) for c in reasons.values()),
                    "removed_fraction": round(tokens / before, 6) if before else 0.0,
                    "reasons": {r: {"docs": int(c["docs"]), "tokens": int(c["tokens"])}
                                for r, c in sorted(reasons.items())}})
    return out


def _throughput(kept: dict[str, Any], rejected: dict[str, Any]) -> dict[str, Any]:
    """Encoding speed from the shard records: tokens per CPU-second (all threads of the ranks, so a
    per-core figure that a busy machine changes little) and per wall-second of one rank."""
    seconds = float(kept.get("encode_seconds", 0.0)) + float(rejected.get("encode_seconds", 0.0))
    cpu = float(kept.get("encode_cpu_seconds", 0.0)) + float(rejected.get("encode_cpu_seconds", 0.0))
    tokens = int(kept.get("tokens", 0)) + sum(int(c["tokens"]) for st in rejected.get("stages", {}).values()
                                              for c in st.values()) + int(rejected.get("synthetic_tokens", 0))
    return {"tokens_encoded": tokens, "encode_seconds": round(seconds, 3), "encode_cpu_seconds": round(cpu, 3),
            "tokens_per_second_per_rank": round(tokens / seconds) if seconds else None,
            "tokens_per_cpu_second": round(tokens / cpu) if cpu else None}
