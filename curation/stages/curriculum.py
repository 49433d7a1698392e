"""Curriculum: order the kept documents by a signal and write ordered shards plus a mixture manifest.

Steps:
- `score` (map over input shards): the signal and a seeded tie-break hash of the id per document,
  written to `<scratch>/score/sNNNNN.parquet` with the document's global key (shard, row).
- `order` (global): sort or interleave all documents, cut the order into output shards of
  `rowsPerShard` rows, write one assignment file per output shard (`<scratch>/order/aNNNNN.parquet`:
  source shard, source row, signal, position) and the mixture manifest `<scratch>/curriculum.json`.
- `write` (map over *output* shards: rank r writes shards j with j % world_size == r): each rank
  reads every input shard it needs once, cuts it into pieces per output shard (scratch files, so
  memory stays at one shard), then assembles each output shard in order with the columns
  `curriculum_signal` and `curriculum_position`.

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

from curation.dataset import (
    ID,
    TEXT,
    Location,
    ShardedDataset,
    concat,
    parquet_schema,
    read_table,
    with_stage_reason,
    write_table_atomic,
)
from curation.errors import SpecError
from curation.params.curriculum import BUILTIN_SIGNALS, CurriculumParams
from curation.stages.base import Stage, StageStats, StepContext, doc_keys, split_keys, text_bytes

SIGNAL_COLUMN = "curriculum_signal"
POSITION_COLUMN = "curriculum_position"
MANIFEST = "curriculum.json"
MAX_EXTRA_ITEMS = 8  # per-bucket / per-shard entries copied into the step stats (kept small)


# ---- pure functions ------------------------------------------------------------------------


def compression_ratios(texts: list[str | None]) -> np.ndarray:
    """zlib (level 6) compressed size over UTF-8 size; 0 for empty texts."""
    out = np.zeros(len(texts), dtype=np.float64)
    for i, text in enumerate(texts):
        raw = (text or "").encode("utf-8")
        if raw:
            out[i] = len(zlib.compress(raw, 6)) / len(raw)
    return out


def builtin_signal(texts: pa.Array | pa.ChunkedArray, signal: str) -> np.ndarray:
    if signal == "length":
        values = pc.utf8_length(texts)
    elif signal == "words":
        values = pc.count_substring_regex(texts, r"\S+")
    elif signal == "compression_ratio":
        return compression_ratios(texts.to_pylist())
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
    """Orders documents by a signal: score (map) → order (global) → write (map over output shards)."""

    type_name = "curriculum"
    steps = ("score", "order", "write")

    @property
    def cparams(self) -> CurriculumParams:
        if not isinstance(self.params, CurriculumParams):
            raise TypeError(f"curriculum stage got params of type {type(self.params).__name__}")
        return self.params

    def _where(self, ctx: StepContext) -> str:
        return f"spec.stages[{ctx.step.index - 1}].params.signal"

    def _score_file(self, ctx: StepContext, shard: int) -> Location:
        return ctx.scratch.join("score", f"s{shard:05d}.parquet")

    def _assign_file(self, ctx: StepContext, out_shard: int) -> Location:
        return ctx.scratch.join("order", f"a{out_shard:05d}.parquet")

    def _piece_file(self, ctx: StepContext, out_shard: int, shard: int) -> Location:
        return ctx.scratch.join("pieces", f"o{out_shard:05d}", f"s{shard:05d}.parquet")

    def step_score(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        source = self.require_input(ctx)
        params = self.cparams

        def score_shard(shard: int) -> dict[str, Any]:
            column = signal_source(parquet_schema(source.shard(shard)), params.signal, self._where(ctx))
            table = source.read_shard(shard, [ID, column or TEXT])
            if column is None:
                signal = builtin_signal(table.column(TEXT), params.signal)
            else:
                signal = column_signal(table.column(column))
            scores = pa.table(
                {
                    "key": pa.array(doc_keys(shard, table.num_rows), pa.uint64()),
                    "signal": pa.array(signal, pa.float64()),
                    "tiebreak": pa.array(tiebreak_hashes(table.column(ID).to_pylist(), params.seed), pa.uint64()),
                }
            )
            write_table_atomic(self._score_file(ctx, shard), scores)
            return {"docs_in": table.num_rows, "docs_out": table.num_rows}

        return self.map_shards(ctx, rank, world_size, score_shard).to_dict()

    def step_order(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        params = self.cparams
        scores = concat(read_table(self._score_file(ctx, i)) for i in range(ctx.num_shards))
        n = scores.num_rows

        def column(name: str, dtype: type) -> np.ndarray:
            return np.asarray(scores.column(name).to_numpy(), dtype=dtype) if n else np.zeros(0, dtype)

        keys, signal, tiebreak = (
            column("key", np.uint64),
            column("signal", np.float64),
            column("tiebreak", np.uint64),
        )
        bucket = quantile_buckets(signal, tiebreak, keys, params.buckets)
        perm = curriculum_order(signal, tiebreak, keys, params, bucket)
        rows = params.rows_per_shard
        num_out = max(1, math.ceil(n / rows))
        source_shard, source_row = split_keys(keys[perm])
        ordered_signal = signal[perm]
        for j in range(num_out):
            part = slice(j * rows, (j + 1) * rows)
            write_table_atomic(
                self._assign_file(ctx, j),
                pa.table(
                    {
                        "source_shard": pa.array(source_shard[part], pa.int64()),
                        "source_row": pa.array(source_row[part], pa.int64()),
                        "signal": pa.array(ordered_signal[part], pa.float64()),
                        "position": pa.array(np.arange(n, dtype=np.int64)[part], pa.int64()),
                    }
                ),
            )
        manifest = mixture_manifest(params, signal, bucket, perm, rows, num_out)
        ctx.scratch.join(MANIFEST).write_json_atomic(manifest)
        ctx.scratch.join("order", "plan.json").write_json_atomic({"docs": n, "output_shards": num_out})
        stats = StageStats()
        stats.extra = manifest_extra(manifest)
        return stats.to_dict()

    def step_write(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        source = self.require_input(ctx)
        plan = ctx.scratch.join("order", "plan.json").read_json()
        mine = [j for j in range(int(plan["output_shards"])) if j % world_size == rank]
        total = StageStats()
        todo = []
        for j in mine:
            done = self.shard_done(ctx, j)
            if done is None:
                todo.append(j)
            else:
                total.add(done)
        assignments = {j: read_table(self._assign_file(ctx, j)) for j in todo}
        self._cut_pieces(ctx, source, assignments)
        for j in todo:
            done = self._assemble(ctx, source, j, assignments[j])
            self.mark_shard(ctx, j, done)
            ctx.scratch.join("pieces", f"o{j:05d}").delete_dir()
            total.add(done)
        return total.to_dict()

    def _cut_pieces(self, ctx: StepContext, source: ShardedDataset, assignments: dict[int, pa.Table]) -> None:
        """Read each needed input shard once; write, per output shard, the rows it takes from it."""
        wanted: dict[int, list[tuple[int, np.ndarray]]] = {}
        for j, assign in assignments.items():
            shards = np.asarray(assign.column("source_shard").to_numpy(), dtype=np.int64)
            rows = np.asarray(assign.column("source_row").to_numpy(), dtype=np.int64)
            for shard in np.unique(shards):
                wanted.setdefault(int(shard), []).append((j, rows[shards == shard]))
        for shard in sorted(wanted):
            table = source.read_shard(shard)
            for j, rows in wanted[shard]:
                write_table_atomic(self._piece_file(ctx, j, shard), table.take(pa.array(rows, pa.int64())))

    def _assemble(self, ctx: StepContext, source: ShardedDataset, j: int, assign: pa.Table) -> dict[str, Any]:
        shards = np.asarray(assign.column("source_shard").to_numpy(), dtype=np.int64)
        if assign.num_rows:
            # Pieces hold each source shard's rows in assignment order; concatenated by shard they
            # follow a stable sort of the assignment by shard, which `inverse` undoes.
            by_shard = np.argsort(shards, kind="stable")
            inverse = np.empty_like(by_shard)
            inverse[by_shard] = np.arange(len(by_shard))
            pieces = concat(read_table(self._piece_file(ctx, j, int(s))) for s in np.unique(shards))
            table = pieces.take(pa.array(inverse, pa.int64()))
        else:
            table = self._empty_input(ctx, source)
        table = with_curriculum_columns(
            table,
            np.asarray(assign.column("signal").to_numpy(), dtype=np.float64),
            np.asarray(assign.column("position").to_numpy(), dtype=np.int64),
        )
        ctx.rejected.write_shard(
            j,
            with_stage_reason(
                table.slice(0, 0).drop_columns([SIGNAL_COLUMN, POSITION_COLUMN]), self.name, []
            ),
        )
        ctx.output.write_shard(j, table)
        stats = StageStats()
        stats.docs_in = stats.docs_out = table.num_rows
        stats.bytes_in = stats.bytes_out = text_bytes(table)
        return stats.to_dict()

    def _empty_input(self, ctx: StepContext, source: ShardedDataset) -> pa.Table:
        if ctx.num_shards == 0:
            return pa.table({ID: pa.array([], pa.string()), TEXT: pa.array([], pa.string())})
        return parquet_schema(source.shard(0)).empty_table()
