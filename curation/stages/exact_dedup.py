"""Exact deduplication: one document per normalised text survives.

    hash   (map)    per shard: 128-bit xxh3 of the normalised text; rows (hash, key, length, id) go
                    to partition hash % P, one small Parquet file per (partition, shard)
    select (reduce) rank r reads its partitions from every shard, keeps one document per hash
                    (`keep: first` = lowest key, `longest` = longest text, ties by lowest key) and
                    writes the removed keys with the kept document's id, sorted by key
    filter (map)    per shard: reads its key range from every select file and writes kept rows and
                    rejected rows (reason `exact-duplicate`, column `dup_of` = id of the kept copy)

Keys are `doc_keys` (shard << 32 | row), so the survivor never depends on the parallelism.
The removal-list helpers at the bottom are shared with MinHash deduplication.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from curation.dataset import ID, TEXT, Location, read_table, write_table_atomic
from curation.errors import InputDataError, StepError
from curation.plan import find_step
from curation.stages.base import Stage, StageStats, StepContext, doc_keys
from curation.stages.minhash_math import WHITESPACE_RE, size_histogram, utf8_buffer

REASON = "exact-duplicate"
DUP_OF = "dup_of"
HASH_SCHEMA = pa.schema(
    [
        ("hash_hi", pa.uint64()),
        ("hash_lo", pa.uint64()),
        ("key", pa.uint64()),
        ("length", pa.int64()),
        ("id", pa.string()),
    ]
)
REMOVALS_SCHEMA = pa.schema([("key", pa.uint64()), (DUP_OF, pa.string())])
REMOVALS_ROW_GROUP = 1 << 16  # small row groups: a filter rank reads only its shard's key range

# ---- pure functions ----------------------------------------------------------------------------


def normalize_for_hash(texts: pa.Array, mode: str) -> pa.Array:
    """`none`: as is; `whitespace`: runs of whitespace become one space, trimmed; `full`: also
    Unicode NFKC, lowercase and punctuation/symbols removed."""
    if mode == "none":
        return texts
    if mode == "full":
        texts = pc.utf8_normalize(texts, "NFKC")
        texts = pc.utf8_lower(texts)
        texts = pc.replace_substring_regex(texts, r"[\p{P}\p{S}]+", "")
    texts = pc.replace_substring_regex(texts, WHITESPACE_RE, " ")
    return pc.utf8_trim(texts, " ")


def text_hashes(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) 64-bit halves of the xxh3-128 hash of each text's UTF-8 bytes."""
    values, offsets = utf8_buffer(texts)
    view = memoryview(values)
    bounds = offsets.tolist()
    digest = xxhash.xxh3_128_digest
    raw = b"".join([digest(view[bounds[i] : bounds[i + 1]]) for i in range(len(bounds) - 1)])
    halves = np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(-1, 2)
    return halves[:, 0].copy(), halves[:, 1].copy()


def choose_keepers(
    hash_hi: np.ndarray, hash_lo: np.ndarray, keys: np.ndarray, lengths: np.ndarray, keep: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group equal hashes; return (removed row indices, their keeper's row index, group sizes)."""
    if keep == "longest":
        order = np.lexsort((keys, -lengths, hash_lo, hash_hi))
    else:
        order = np.lexsort((keys, hash_lo, hash_hi))
    hi, lo = hash_hi[order], hash_lo[order]
    start = np.ones(len(order), dtype=bool)
    start[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    group_first = np.maximum.accumulate(np.where(start, np.arange(len(order)), 0))
    removed = ~start
    sizes = np.diff(np.append(np.flatnonzero(start), len(order)))
    return order[removed], order[group_first[removed]], sizes


# ---- removal lists (shared with minhash-dedup) --------------------------------------------------


def write_removals(loc: Location, keys: np.ndarray, dup_of: list[str] | pa.Array) -> int:
    """Write (key, dup_of) sorted by key, in small row groups, atomically; returns rows."""
    order = np.argsort(keys, kind="stable")
    ids = dup_of if isinstance(dup_of, pa.Array) else pa.array(dup_of, pa.string())
    table = pa.table(
        {"key": pa.array(keys[order], pa.uint64()), DUP_OF: ids.take(pa.array(order, pa.int64()))},
        schema=REMOVALS_SCHEMA,
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=REMOVALS_ROW_GROUP)
    loc.write_bytes_atomic(sink.getvalue().to_pybytes())
    return table.num_rows


def read_removals(locs: list[Location], shard: int) -> tuple[np.ndarray, list[str]]:
    """Rows of `shard` listed in removal files, and the id each duplicates (row groups pruned by key)."""
    lo, hi = shard << 32, (shard + 1) << 32
    expr = (pc.field("key") >= pa.scalar(lo, pa.uint64())) & (pc.field("key") < pa.scalar(hi, pa.uint64()))
    rows, dups = [], []
    for loc in locs:
        if not loc.exists():
            raise StepError(f"{loc.path}: missing (did the previous step finish?)")
        try:
            table = pq.read_table(loc.path, filesystem=loc.fs, filters=expr)
        except (pa.ArrowInvalid, OSError) as err:
            raise InputDataError(
                f"{loc.path}: not a readable Parquet file ({err}); rerun the previous step"
            ) from None
        rows.append(table.column("key").to_numpy() & np.uint64(0xFFFFFFFF))
        dups.extend(table.column(DUP_OF).to_pylist())
    return (np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)), dups


def write_duplicates_split(
    stage: Stage,
    ctx: StepContext,
    shard: int,
    table: pa.Table,
    rows: np.ndarray,
    dup_of: list[str],
    reason: str,
) -> dict[str, Any]:
    """Kept rows unchanged; removed rows to `rejected/` with `reason` and a `dup_of` column."""
    n = table.num_rows
    if len(rows) and (rows.max() >= n or len(np.unique(rows)) != len(rows)):
        raise StepError(
            f"{ctx.step.id}: removal list does not match shard {shard} ({n} rows); rerun the stage"
        )
    reasons = np.full(n, None, dtype=object)
    reasons[rows] = reason
    dup_col = np.full(n, None, dtype=object)
    dup_col[rows] = dup_of
    mask = np.ones(n, dtype=bool)
    mask[rows] = False
    annotated = table.drop_columns([DUP_OF]) if DUP_OF in table.column_names else table
    annotated = annotated.append_column(DUP_OF, pa.array(dup_col, pa.string()))
    return stage.write_split(ctx, shard, annotated, reasons.tolist(), table.filter(pa.array(mask)))


def filter_removals(
    stage: Stage, ctx: StepContext, rank: int, world_size: int, files: list[Location], reason: str
) -> dict[str, Any]:
    """The filter step of both dedup stages: drop the rows the removal files list for each shard."""
    source = stage.require_input(ctx)

    def split(shard: int) -> dict[str, Any]:
        rows, dup_of = read_removals(files, shard)
        return write_duplicates_split(stage, ctx, shard, source.read_shard(shard), rows, dup_of, reason)

    return stage.map_shards(ctx, rank, world_size, split).to_dict()


def write_partitions(
    ctx: StepContext, step: str, shard: int, rows: pa.Table, partition: np.ndarray, count: int
) -> None:
    """Write `rows` of one shard as `count` partition files (every file, even empty ones)."""
    order = np.argsort(partition, kind="stable")
    bounds = np.searchsorted(partition[order], np.arange(count + 1))
    for p in range(count):
        part = rows.take(pa.array(order[bounds[p] : bounds[p + 1]], pa.int64()))
        write_table_atomic(ctx.partition_file(step, p, shard), part)


# ---- the stage ---------------------------------------------------------------------------------


class ExactDedupStage(Stage):
    type_name = "exact-dedup"
    steps = ("hash", "select", "filter")

    def _partitions(self, world_size: int) -> int:
        return int(self.params.partitions or world_size)

    def step_hash(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        source = self.require_input(ctx)
        partitions = self._partitions(world_size)

        def hash_shard(shard: int) -> dict[str, Any]:
            table = source.read_shard(shard, columns=[ID, TEXT])
            texts = table.column(TEXT).combine_chunks() if table.num_rows else pa.array([], pa.string())
            hi, lo = text_hashes(normalize_for_hash(texts, self.params.normalize))
            rows = pa.table(
                {
                    "hash_hi": hi,
                    "hash_lo": lo,
                    "key": doc_keys(shard, table.num_rows),
                    "length": pc.utf8_length(texts).cast(pa.int64()),
                    "id": table.column(ID).combine_chunks() if table.num_rows else pa.array([], pa.string()),
                },
                schema=HASH_SCHEMA,
            )
            write_partitions(ctx, "hash", shard, rows, lo % np.uint64(partitions), partitions)
            return {"hashed": table.num_rows}

        # The hash step reports no document counts: only the filter step does.
        return self.map_shards(ctx, rank, world_size, hash_shard).to_dict()

    def step_select(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        partitions = self._partitions(world_size)
        removed_keys, removed_dup_of, sizes = [], [], []
        for p in range(rank, partitions, world_size):
            files = [ctx.partition_file("hash", p, s) for s in range(ctx.num_shards)]
            table = pa.concat_tables([read_table(f) for f in files]) if files else HASH_SCHEMA.empty_table()
            if table.num_rows == 0:
                continue
            cols = {c: table.column(c).to_numpy() for c in ("hash_hi", "hash_lo", "key", "length")}
            removed, keeper, group_sizes = choose_keepers(
                cols["hash_hi"], cols["hash_lo"], cols["key"], cols["length"], self.params.keep
            )
            removed_keys.append(cols["key"][removed])
            removed_dup_of.append(table.column("id").take(pa.array(keeper, pa.int64())).combine_chunks())
            sizes.append(group_sizes)
        keys = np.concatenate(removed_keys) if removed_keys else np.zeros(0, np.uint64)
        dup_of = pa.concat_arrays(removed_dup_of) if removed_dup_of else pa.array([], pa.string())
        write_removals(ctx.scratch.join("select", f"r{rank:05d}.parquet"), keys, dup_of)
        stats = StageStats()
        histogram = size_histogram(np.concatenate(sizes)) if sizes else {}
        if histogram:
            stats.extra = {"cluster_sizes": histogram}
        return stats.to_dict()

    def step_filter(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        select_ranks = find_step(ctx.spec, f"{self.name}.select").world_size
        files = [ctx.scratch.join("select", f"r{r:05d}.parquet") for r in range(select_ranks)]
        return filter_removals(self, ctx, rank, world_size, files, REASON)
