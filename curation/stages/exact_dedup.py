"""Exact deduplication: one document per normalised text survives.

    hash   (map)    per shard: 128-bit xxh3 of the normalised text; rows (hash, key, length, id) go
                    to partition hash % P, one Parquet file per (partition, rank); P is sized so
                    one partition fits a reduce rank's memory budget (`curation.corpus`)
    select (reduce) rank r reads its partitions from every map rank, keeps one document per hash
                    (`keep: first` = lowest key, `longest` = longest text, ties by lowest key) and
                    writes the removed keys with the kept document's id, sorted by key
    filter (map)    per shard: reads its key range from every select file and records the decision
                    (reason `exact-duplicate`, evidence `dup_of` = id of the kept copy, `similarity` 1)

Keys are `doc_keys` (shard << 32 | position among the shard's alive documents), so the survivor
never depends on the parallelism.
The removal-list helpers at the bottom are shared with MinHash deduplication.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.corpus import DUP_OF, PARTITION_ROWS, SIMILARITY, partition_count
from curation.dataset import ID, TEXT, Location
from curation.errors import InputDataError, StepError
from curation.stages.base import PartitionWriter, Stage, StageStats, StepContext, doc_keys
from curation.stages.exact_math import exact_hashes
from curation.stages.minhash_math import size_histogram

REASON = "exact-duplicate"
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
    similarity: np.ndarray | None = None,
) -> dict[str, Any]:
    """Record removals of one shard: `reason`, and the evidence `dup_of` (and `similarity`)."""
    n = table.num_rows
    if len(rows) and (rows.max() >= n or len(np.unique(rows)) != len(rows)):
        raise StepError(
            f"{ctx.step.id}: removal list does not match shard {shard} ({n} rows); rerun the stage"
        )
    reasons = np.full(n, None, dtype=object)
    reasons[rows] = reason
    dup_col = np.full(n, None, dtype=object)
    dup_col[rows] = dup_of
    sim = np.full(n, np.nan)
    sim[rows] = 1.0 if similarity is None else similarity
    annotated = table.append_column(DUP_OF, pa.array(dup_col, pa.string()))
    annotated = annotated.append_column(SIMILARITY, pa.array(sim, mask=np.isnan(sim)))
    return stage.write_split(ctx, shard, annotated, reasons.tolist())


def filter_removals(
    stage: Stage, ctx: StepContext, rank: int, world_size: int, files: list[Location], reason: str
) -> dict[str, Any]:
    """The filter step of both dedup stages: record the removals the files list for each shard."""
    source = stage.require_input(ctx)

    def split(shard: int) -> dict[str, Any]:
        rows, dup_of = read_removals(files, shard)
        return write_duplicates_split(stage, ctx, shard, source.read_shard(shard, []), rows, dup_of, reason)

    return stage.map_shards(ctx, rank, world_size, split).to_dict()


# ---- the stage ---------------------------------------------------------------------------------


class ExactDedupStage(Stage):
    type_name = "exact-dedup"
    steps = ("hash", "select", "filter")

    def _partitions(self, ctx: StepContext) -> int:
        if self.params.partitions:
            return int(self.params.partitions)
        return partition_count(ctx.input.corpus.rows if ctx.input else 0, PARTITION_ROWS["exact"],
                               ctx.peer("select").world_size)

    def step_hash(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        source = self.require_input(ctx)
        writer = PartitionWriter(ctx, "hash", rank, self._partitions(ctx), HASH_SCHEMA)
        hashed = 0
        for shard in ctx.shards_for(rank, world_size):
            table = source.read_shard(shard, [ID, TEXT])
            texts = table.column(TEXT).combine_chunks() if table.num_rows else pa.array([], pa.string())
            hi, lo, hashable = exact_hashes(texts, self.params.normalize)
            rows = pa.table(
                {
                    "hash_hi": hi,
                    "hash_lo": lo,
                    "key": doc_keys(shard, table.num_rows),
                    "length": pc.utf8_length(texts).cast(pa.int64()),
                    "id": pc.cast(table.column(ID), pa.string()).combine_chunks()
                    if table.num_rows else pa.array([], pa.string()),
                },
                schema=HASH_SCHEMA,
            ).filter(pa.array(hashable))
            writer.write(rows, (rows.column("hash_lo").to_numpy() % np.uint64(writer.count)).astype(np.int64))
            hashed += table.num_rows
        writer.close()
        # The hash step reports no document counts: only the filter step does.
        stats = StageStats()
        stats.extra = {"hashed": hashed}
        return stats.to_dict()

    def step_select(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        removed_keys, removed_dup_of, sizes = [], [], []
        for p in range(rank, self._partitions(ctx), world_size):
            table = ctx.read_partition("hash", p, HASH_SCHEMA)
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
        select_ranks = ctx.peer("select").world_size
        files = [ctx.scratch.join("select", f"r{r:05d}.parquet") for r in range(select_ranks)]
        return filter_removals(self, ctx, rank, world_size, files, REASON)
