"""Curriculum: order the kept documents by a signal and write ordered shards plus a mixture manifest.

Steps (no step holds per-document data for the whole corpus):
- `score` (map): the signal and a seeded tie-break hash of the id per alive document, one file per
  rank, plus a deterministic bounded sample (`curriculum_order.SAMPLE_DOCS`).
- `order` (global): from the sample only, the bucket boundaries (equal counts by rank) and the
  range boundaries of the sort; the number of ordered output shards (`rowsPerShard`).
- `partition` (map): each rank sends its score rows to their range (one file per range and rank).
- `rank` (reduce per range): sorts one range; position = documents in earlier ranges + rank inside.
  Interleaved: ranges are (bucket, slice of the tie-break hash), and the position follows from the
  round inside the bucket and the bucket sizes.
- `write` (map over groups of shards): the decisions, with the annotations `curriculum_signal` and
  `curriculum_position`; rank 0 writes the mixture manifest's bucket statistics.
Publishing (finalize) then writes `data/` in position order, `rowsPerShard` rows per shard.

Nothing is rejected; the order depends only on the ids and signals, never on the parallelism.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from curation.corpus import PARTITION_ROWS, partition_count
from curation.dataset import ID, TEXT, RankMarker, iter_row_groups
from curation.errors import SpecError, StepError
from curation.params.curriculum import BUILTIN_SIGNALS, CurriculumParams
from curation.sidefiles import read_npy, write_npy
from curation.stages.base import PartitionWriter, Stage, StageStats, StepContext, doc_keys
from curation.stages.curriculum_order import (
    count_at_or_below,
    in_sample,
    interleaved_positions,
    lex_order,
    quantile_boundaries,
    sample_rate,
    sort_words,
)

SIGNAL_COLUMN = "curriculum_signal"
POSITION_COLUMN = "curriculum_position"
MANIFEST = "curriculum.json"
MAX_EXTRA_ITEMS = 8  # per-bucket / per-shard entries copied into the step stats (kept small)


# ---- pure functions ------------------------------------------------------------------------


def compression_ratios(texts: list[str | None] | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """zlib (level 6) compressed size over UTF-8 size; 0 for empty texts.

    Compresses each document's bytes straight from the Arrow buffer (no Python string made)."""
    arr = texts if isinstance(texts, pa.Array | pa.ChunkedArray) else pa.array(texts, pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.string())
    if not pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.large_string())  # one offset width below, whatever the input's
    out = np.zeros(len(arr), dtype=np.float64)
    buffers = arr.buffers()
    if len(arr) == 0 or buffers[2] is None:
        return out
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1].tolist()
    data = memoryview(buffers[2])
    compress = zlib.compress
    for i in range(len(arr)):
        a, b = offsets[i], offsets[i + 1]
        if b > a:  # a null's offsets are equal too: 0, as an empty text
            out[i] = len(compress(data[a:b], 6)) / (b - a)
    return out


def builtin_signal(texts: pa.Array | pa.ChunkedArray, signal: str) -> np.ndarray:
    if signal == "length":
        values = pc.utf8_length(texts)
    elif signal == "words":
        values = pc.count_substring_regex(texts, r"\S+")
    elif signal == "compression_ratio":
        return compression_ratios(texts)
    else:
        raise ValueError(signal)
    return np.asarray(pc.fill_null(values, 0).to_numpy(zero_copy_only=False), dtype=np.float64)


def column_signal(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A numeric column as float64, nulls as NaN."""
    values = pc.cast(column, pa.float64())
    return np.asarray(pc.fill_null(values, float("nan")).to_numpy(zero_copy_only=False), dtype=np.float64)


def is_numeric(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_decimal(dtype)
        or pa.types.is_boolean(dtype)
    )


def signal_source(schema: pa.Schema, signal: str, where: str) -> str | None:
    """The column to read for `signal`, or None for a built-in computed from the text.

    Raises SpecError naming the available columns when the signal is neither."""
    if signal in schema.names:
        dtype = schema.field(signal).type
        if not is_numeric(dtype):
            raise SpecError(
                f"{where}: column '{signal}' has type {dtype}; the curriculum signal must be numeric"
            )
        return signal
    if signal in BUILTIN_SIGNALS:
        return None
    numeric = [f.name for f in schema if is_numeric(f.type)]
    raise SpecError(
        f"{where}: no column '{signal}' in the documents; numeric columns: {', '.join(numeric) or 'none'}; "
        f"built-in signals: {', '.join(BUILTIN_SIGNALS)}"
    )


def tiebreak_hashes(ids: list[str], seed: int) -> np.ndarray:
    """Seeded 64-bit hash of each id: the order among equal signals, the same at any parallelism."""
    seed &= 0xFFFFFFFFFFFFFFFF
    return np.fromiter(
        (xxhash.xxh64_intdigest(i.encode("utf-8"), seed=seed) for i in ids), dtype=np.uint64, count=len(ids)
    )


def ascending_order(signal: np.ndarray, tiebreak: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Indices by (missing last, signal, tie-break hash, key)."""
    missing = np.isnan(signal)
    return np.lexsort((keys, tiebreak, np.where(missing, 0.0, signal), missing))


def quantile_buckets(signal: np.ndarray, tiebreak: np.ndarray, keys: np.ndarray, buckets: int) -> np.ndarray:
    """Bucket per document: equal-count buckets by rank of the signal (0 = easiest)."""
    n = len(signal)
    bucket = np.empty(n, dtype=np.int64)
    bucket[ascending_order(signal, tiebreak, keys)] = (np.arange(n, dtype=np.int64) * buckets) // max(n, 1)
    return bucket


def curriculum_order(
    signal: np.ndarray, tiebreak: np.ndarray, keys: np.ndarray, params: CurriculumParams, bucket: np.ndarray
) -> np.ndarray:
    """Document indices in output order."""
    if params.order == "ascending":
        return ascending_order(signal, tiebreak, keys)
    if params.order == "descending":
        missing = np.isnan(signal)
        return np.lexsort((keys, tiebreak, -np.where(missing, 0.0, signal), missing))
    # interleaved: inside each bucket a seeded shuffle; then deal one from each bucket per round
    grouped = np.lexsort((keys, tiebreak, bucket))
    sizes = np.bincount(bucket, minlength=params.buckets)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rounds = np.empty(len(signal), dtype=np.int64)
    rounds[grouped] = np.arange(len(signal)) - starts[bucket[grouped]]
    return np.lexsort((bucket, rounds))


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(f"{x:.6g}")


def signal_summary(values: np.ndarray) -> dict[str, float | None]:
    present = values[~np.isnan(values)]
    if len(present) == 0:
        return {"min": None, "mean": None, "max": None}
    return {"min": _num(present.min()), "mean": _num(present.mean()), "max": _num(present.max())}


def mixture_manifest(
    params: CurriculumParams,
    signal: np.ndarray,
    bucket: np.ndarray,
    perm: np.ndarray,
    rows_per_shard: int,
    num_out: int,
) -> dict[str, Any]:
    buckets = []
    for b in range(params.buckets):
        members = signal[bucket == b]
        buckets.append({"bucket": b, "docs": int(len(members)), **signal_summary(members)})
    shards = []
    for j in range(num_out):
        part = perm[j * rows_per_shard : (j + 1) * rows_per_shard]
        shards.append(
            {
                "shard": j,
                "rows": int(len(part)),
                "signal": signal_summary(signal[part]),
                "bucket_docs": np.bincount(bucket[part], minlength=params.buckets).tolist(),
            }
        )
    return {
        "signal": params.signal,
        "order": params.order,
        "seed": params.seed,
        "docs": int(len(signal)),
        "missing_signal": int(np.isnan(signal).sum()),
        "rows_per_shard": rows_per_shard,
        "buckets": buckets,
        "shards": shards,
    }


def manifest_extra(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's key numbers, small enough for the step statistics."""

    def cut(items: list[Any]) -> list[Any]:
        return items[:MAX_EXTRA_ITEMS]

    return {
        "curriculum": {
            "docs": manifest["docs"],
            "output_shards": len(manifest["shards"]),
            "bucket_docs": cut([b["docs"] for b in manifest["buckets"]]),
            "bucket_bounds": cut([[b["min"], b["max"]] for b in manifest["buckets"]]),
            "shard_signal": cut(
                [[s["signal"]["min"], s["signal"]["mean"], s["signal"]["max"]] for s in manifest["shards"]]
            ),
        }
    }


def with_curriculum_columns(table: pa.Table, signal: np.ndarray, position: np.ndarray) -> pa.Table:
    for column in (SIGNAL_COLUMN, POSITION_COLUMN):
        if column in table.column_names:
            table = table.drop_columns([column])
    table = table.append_column(SIGNAL_COLUMN, pa.array(signal, pa.float64()))
    return table.append_column(POSITION_COLUMN, pa.array(position, pa.int64()))


# ---- the stage -----------------------------------------------------------------------------


class CurriculumStage(Stage):
    """Orders documents by a signal; the published output is written in that order.

    score (map) -> order (global: boundaries from a bounded sample) -> partition (map: rows to
    ranges) -> rank (reduce per range: exact positions) -> write (map over shard groups: the
    annotations `curriculum_signal` and `curriculum_position`). Nothing is rejected."""

    type_name = "curriculum"
    steps = ("score", "order", "partition", "rank", "write")

    @property
    def cparams(self) -> CurriculumParams:
        if not isinstance(self.params, CurriculumParams):
            raise TypeError(f"curriculum stage got params of type {type(self.params).__name__}")
        return self.params

    def _where(self, ctx: StepContext) -> str:
        return f"spec.stages[{ctx.step.index - 1}].params.signal"

    def _plan(self, ctx: StepContext) -> dict[str, Any]:
        data: dict[str, Any] = ctx.scratch.join("order", "plan.json").read_json()
        return data

    def _words(self, table: pa.Table, descending: bool = False) -> np.ndarray:
        return sort_words(table.column("signal").to_numpy(), table.column("tiebreak").to_numpy(),
                          table.column("key").to_numpy(), descending)

    def step_score(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        source = self.require_input(ctx)
        params = self.cparams
        column = signal_source(source.schema(0), params.signal, self._where(ctx)) if ctx.num_shards else None
        rate = sample_rate(source.corpus.rows)
        scores = PartitionWriter(ctx, "score", rank, 1, SCORE_SCHEMA)
        sample = PartitionWriter(ctx, "sample", rank, 1, SCORE_SCHEMA)
        docs = 0
        for shard in ctx.shards_for(rank, world_size):
            table = source.read_shard(shard, [ID, column or TEXT])
            signal = builtin_signal(table.column(TEXT), params.signal) if column is None else column_signal(
                table.column(column))
            ids = pc.cast(table.column(ID), pa.string()).to_pylist()
            rows = pa.table({"key": pa.array(doc_keys(shard, table.num_rows), pa.uint64()),
                             "signal": pa.array(signal, pa.float64()),
                             "tiebreak": pa.array(tiebreak_hashes(ids, params.seed), pa.uint64())},
                            schema=SCORE_SCHEMA)
            zero = np.zeros(rows.num_rows, dtype=np.int64)
            scores.write(rows, zero)
            picked = in_sample(rows.column("tiebreak").to_numpy(), rate)
            sample.write(rows.filter(pa.array(picked)), zero[picked])
            docs += rows.num_rows
            del table, signal, ids, rows  # before the next shard is read: one shard in memory at a time
        scores.close()
        sample.close()
        stats = StageStats()
        stats.extra = {"scored": docs}
        return stats.to_dict()

    def step_order(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        params = self.cparams
        score = ctx.peer("score")
        marker = RankMarker(ctx.work, score.id)
        n = sum(int(marker.read(r, score.world_size).get("extra", {}).get("scored", 0))
                for r in range(score.world_size))
        sample = ctx.read_partition("sample", 0, SCORE_SCHEMA, writer="score")
        ascending = self._words(sample)
        ascending = ascending[lex_order(ascending)]
        buckets = quantile_boundaries(ascending, params.buckets)
        ranks = ctx.peer("rank").world_size
        ranges = partition_count(n, PARTITION_ROWS["curriculum"], ranks)
        if params.order == "interleaved":
            subranges = max(1, math.ceil(ranges / params.buckets))
            bounds = np.zeros((0, 4), np.uint64)
            ranges = params.buckets * subranges
        else:
            subranges = 1
            words = self._words(sample, params.order == "descending")
            bounds = quantile_boundaries(words[lex_order(words)], ranges)
        write_npy(ctx.scratch.join("order", "buckets.npy"), buckets)
        write_npy(ctx.scratch.join("order", "ranges.npy"), bounds)
        rows = params.rows_per_shard
        output_shards = max(1, math.ceil(n / rows))
        groups = partition_count(n, PARTITION_ROWS["curriculum"], ctx.peer("write").world_size)
        ctx.scratch.join("order", "plan.json").write_json_atomic(
            {"docs": n, "ranges": ranges, "subranges": subranges, "groups": groups})
        ctx.scratch.join(ORDER_FILE).write_json_atomic(
            {"docs": n, "rows_per_shard": rows, "output_shards": output_shards})
        stats = StageStats()
        stats.extra = {"curriculum": {"docs": n, "output_shards": output_shards, "sample": sample.num_rows}}
        return stats.to_dict()

    def step_partition(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        params, plan = self.cparams, self._plan(ctx)
        scores = ctx.partition_file("score", 0, rank)
        edges = read_npy(ctx.scratch.join("order", "buckets.npy"))
        bounds = None if params.order == "interleaved" else read_npy(ctx.scratch.join("order", "ranges.npy"))
        writer = PartitionWriter(ctx, "ranges", rank, plan["ranges"], RANGE_SCHEMA)
        counts = np.zeros(plan["ranges"], dtype=np.int64)
        for rows in iter_row_groups(scores) if scores.exists() else iter([]):  # the rank's scores, streamed
            bucket = count_at_or_below(self._words(rows), edges)
            if bounds is None:
                sub = ((rows.column("tiebreak").to_numpy() >> np.uint64(32)) * np.uint64(plan["subranges"])) >> np.uint64(32)
                where = bucket * plan["subranges"] + sub.astype(np.int64)
            else:
                where = count_at_or_below(self._words(rows, params.order == "descending"), bounds)
            writer.write(rows.append_column("bucket", pa.array(bucket, pa.int64())), where)
            counts += np.bincount(where, minlength=plan["ranges"])
        writer.close()
        stats = StageStats()
        stats.extra = {"range_counts": counts.tolist()}
        return stats.to_dict()

    def step_rank(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        params, plan = self.cparams, self._plan(ctx)
        part = ctx.peer("partition")
        marker = RankMarker(ctx.work, part.id)
        counts = np.zeros(plan["ranges"], dtype=np.int64)
        for r in range(part.world_size):
            counts += np.asarray(marker.read(r, part.world_size)["extra"]["range_counts"], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        sub = plan["subranges"]
        sizes = counts.reshape(-1, sub).sum(axis=1) if params.order == "interleaved" else None
        writer = PartitionWriter(ctx, "positions", rank, plan["groups"], POSITION_SCHEMA)
        group_of = _shard_groups(ctx.num_shards, plan["groups"])
        buckets: dict[int, list[float]] = {}
        for q in range(rank, plan["ranges"], world_size):
            rows = ctx.read_partition("ranges", q, RANGE_SCHEMA, writer="partition")
            if params.order == "interleaved":
                tb, keys = rows.column("tiebreak").to_numpy(), rows.column("key").to_numpy()
                order = np.lexsort((keys, tb))
                b = q // sub
                within = offsets[q] - offsets[b * sub] + np.arange(len(order))
                position = interleaved_positions(np.full(len(order), b), within, sizes)  # type: ignore[arg-type]
            else:
                order = lex_order(self._words(rows, params.order == "descending"))
                position = offsets[q] + np.arange(len(order))
            rows = rows.take(pa.array(order, pa.int64()))
            signal = rows.column("signal").to_numpy()
            bucket = rows.column("bucket").to_numpy()
            for b in np.unique(bucket).tolist():
                values = signal[bucket == b]
                entry = buckets.setdefault(int(b), [0, 0.0, math.inf, -math.inf, 0])
                present = values[~np.isnan(values)]
                entry[0] += len(values)
                entry[4] += len(values) - len(present)
                if len(present):
                    entry[1] += float(present.sum())
                    entry[2] = min(entry[2], float(present.min()))
                    entry[3] = max(entry[3], float(present.max()))
            out = pa.table({"key": rows.column("key"), "position": pa.array(position, pa.int64()),
                            "signal": rows.column("signal"), "bucket": rows.column("bucket")},
                           schema=POSITION_SCHEMA)
            shard = (out.column("key").to_numpy() >> np.uint64(32)).astype(np.int64)
            writer.write(out, group_of[shard] if len(shard) else shard)
            del rows, out, order, position, signal, bucket, shard  # one range in memory at a time
        writer.close()
        stats = StageStats()
        stats.extra = {"bucket_stats": {str(b): v for b, v in buckets.items()}}
        return stats.to_dict()

    def step_write(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        source = self.require_input(ctx)
        plan = self._plan(ctx)
        group_of = _shard_groups(ctx.num_shards, plan["groups"])
        total = StageStats()
        for g in range(rank, plan["groups"], world_size):
            rows = ctx.read_partition("positions", g, POSITION_SCHEMA, writer="rank")
            keys = rows.column("key").to_numpy()
            shard_of = (keys >> np.uint64(32)).astype(np.int64)
            for shard in np.flatnonzero(group_of == g).tolist():
                mine = rows.filter(pa.array(shard_of == shard))
                table = source.read_shard(shard, [])
                pos = (mine.column("key").to_numpy() & np.uint64(0xFFFFFFFF)).astype(np.int64)
                if len(pos) != table.num_rows or (len(pos) and len(np.unique(pos)) != table.num_rows):
                    raise StepError(f"{ctx.step.id}: positions do not cover shard {shard}; rerun the stage")
                at = np.empty(len(pos), dtype=np.int64)
                at[pos] = np.arange(len(pos))
                idx = pa.array(at, pa.int64())
                annotated = table.append_column(SIGNAL_COLUMN, mine.column("signal").take(idx))
                annotated = annotated.append_column(POSITION_COLUMN, mine.column("position").take(idx))
                total.add(self.write_split(ctx, shard, annotated, [None] * table.num_rows))
                del mine, table, annotated
            del rows, keys, shard_of  # before the next group is read: one group in memory at a time
        if rank == 0:
            total.extra = {"curriculum": {"bucket_docs": self._write_manifest(ctx)}}
        return total.to_dict()

    def _write_manifest(self, ctx: StepContext) -> list[int]:
        """The mixture manifest's bucket part (finalize adds the output shards)."""
        params = self.cparams
        step = ctx.peer("rank")
        marker = RankMarker(ctx.work, step.id)
        merged: dict[int, list[float]] = {}
        for r in range(step.world_size):
            for b, v in marker.read(r, step.world_size).get("extra", {}).get("bucket_stats", {}).items():
                e = merged.setdefault(int(b), [0, 0.0, math.inf, -math.inf, 0])
                e[0] += v[0]
                e[1] += v[1]
                e[2] = min(e[2], v[2])
                e[3] = max(e[3], v[3])
                e[4] += v[4]
        buckets = []
        for b in range(params.buckets):
            count, total, lo, hi, missing = merged.get(b, [0, 0.0, math.inf, -math.inf, 0])
            present = count - missing
            buckets.append({"bucket": b, "docs": int(count),
                            "min": _num(lo) if present else None,
                            "mean": _num(total / present) if present else None,
                            "max": _num(hi) if present else None})
        order = ctx.scratch.join(ORDER_FILE).read_json()
        ctx.scratch.join(MANIFEST).write_json_atomic({
            "signal": params.signal, "order": params.order, "seed": params.seed, "docs": order["docs"],
            "missing_signal": int(sum(v[4] for v in merged.values())),
            "rows_per_shard": params.rows_per_shard, "buckets": buckets,
        })
        return [int(b["docs"]) for b in buckets][:MAX_EXTRA_ITEMS]


SCORE_SCHEMA = pa.schema([("key", pa.uint64()), ("signal", pa.float64()), ("tiebreak", pa.uint64())])
RANGE_SCHEMA = SCORE_SCHEMA.append(pa.field("bucket", pa.int64()))
POSITION_SCHEMA = pa.schema([("key", pa.uint64()), ("position", pa.int64()), ("signal", pa.float64()),
                             ("bucket", pa.int64())])
ORDER_FILE = "order.json"


def _shard_groups(num_shards: int, groups: int) -> np.ndarray:
    """Group of each shard: contiguous runs, so a write rank handles whole shards."""
    per = max(1, math.ceil(num_shards / max(1, groups)))
    return (np.arange(num_shards, dtype=np.int64) // per).astype(np.int64)
