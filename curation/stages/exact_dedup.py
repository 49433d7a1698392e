"""Exact deduplication: one document per normalised text survives.

    hash   (map)    per shard: 128-bit xxh3 of the normalised text; rows (hash, key, length, id) go
                    to partition hash % P, one Parquet file per (partition, rank); P is sized so
                    one partition fits a reduce rank's memory budget (`curation.corpus`)
    select (reduce) rank r reads its partitions from every map rank, keeps one document per hash
                    (`keep: first` = lowest key, `longest` = longest text, ties by lowest key) and
                    writes the removed keys with the kept document's id, sorted by key
    filter (map)    per shard: reads its key range from every select file and records the decision
                    (reason `exact-duplicate`, evidence `dup_of` = `dup_group` = id of the kept copy,
                    `similarity` 1)

Keys are `doc_keys` (shard << 32 | position among the shard's alive documents), so the survivor
never depends on the parallelism.
Removal lists are `curation.stages.removals` (shared by the four dedup stages).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.corpus import DUP_GROUP, DUP_OF, PARTITION_ROWS, SIMILARITY, CorpusView, partition_count
from curation.dataset import ID, TEXT
from curation.errors import StepError
from curation.params.dedup import ExactDedupParams
from curation.stages.base import PartitionWriter, Stage, StageStats, StepContext, doc_keys
from curation.stages.exact_math import exact_hashes
from curation.stages.minhash_math import size_histogram
from curation.stages.removals import read_removals, removal_rows, write_evidence_split, write_removals

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


def alive_rows(source: CorpusView, shard: int, columns: list[str]) -> pa.Table:
    """`columns` of a shard's alive rows, in order: `CorpusView.read_shard` without its copy of
    every column (text included) when no earlier stage removed anything from the shard."""
    universe = source.universe(shard, columns)
    missing = [c for c in columns if c not in universe.table.column_names]
    if missing:
        raise StepError(f"shard {shard}: no column(s) {', '.join(missing)} in the documents")
    table = universe.table.select(columns)
    return table if universe.alive.all() else table.filter(pa.array(universe.alive))


def exact_evidence(dup_of: pa.Array) -> dict[str, Any]:
    """Evidence of exact duplicates: the kept copy (also the group's name) and similarity 1."""
    return {DUP_OF: dup_of, SIMILARITY: pa.array(np.ones(len(dup_of))), DUP_GROUP: dup_of}


# ---- the stage ---------------------------------------------------------------------------------


class ExactDedupStage(Stage):
    type_name = "exact-dedup"
    steps = ("hash", "select", "filter")
    params: ExactDedupParams

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
            table = alive_rows(source, shard, [ID, TEXT])
            texts = table.column(TEXT)  # chunked, as read: exact_hashes takes it batch by batch
            hi, lo, hashable = exact_hashes(texts, self.params.normalize)
            rows = pa.table(
                {
                    "hash_hi": hi,
                    "hash_lo": lo,
                    "key": doc_keys(shard, table.num_rows),
                    "length": pc.utf8_length(texts).cast(pa.int64()),
                    "id": pc.cast(table.column(ID), pa.string()),
                },
                schema=HASH_SCHEMA,
            )
            if not hashable.all():
                rows = rows.filter(pa.array(hashable))
            writer.write(rows, (rows.column("hash_lo").to_numpy() % np.uint64(writer.count)).astype(np.int64))
            hashed += table.num_rows
            del table, texts, rows  # before the next shard is read: one shard in memory at a time
        writer.close()
        # The hash step reports no document counts: only the filter step does.
        stats = StageStats()
        stats.extra = {"hashed": hashed}
        return stats.to_dict()

    def step_select(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        removed_keys, removed_dup_of = [], []
        histogram: Counter[str] = Counter()  # group sizes, merged partition by partition (not kept per group)
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
            histogram.update(size_histogram(group_sizes))
            del table, cols, removed, keeper, group_sizes  # before the next partition is read: one in memory at a time
        keys = np.concatenate(removed_keys) if removed_keys else np.zeros(0, np.uint64)
        dup_of = pa.concat_arrays(removed_dup_of) if removed_dup_of else pa.array([], pa.string())
        table = pa.table({"key": pa.array(keys, pa.uint64()), DUP_OF: dup_of}, schema=REMOVALS_SCHEMA)
        write_removals(ctx.scratch.join("select", f"r{rank:05d}.parquet"), table)
        stats = StageStats()
        if histogram:
            stats.extra = {"cluster_sizes": dict(sorted(histogram.items(), key=lambda kv: int(kv[0])))}
        return stats.to_dict()

    def step_filter(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        select_ranks = ctx.peer("select").world_size
        files = [ctx.scratch.join("select", f"r{r:05d}.parquet") for r in range(select_ranks)]
        source = self.require_input(ctx)

        def split(shard: int) -> dict[str, Any]:
            removed = read_removals(files, shard, REMOVALS_SCHEMA)
            dup_of = removed.column(DUP_OF).combine_chunks() if removed.num_rows else pa.array([], pa.string())
            return write_evidence_split(self, ctx, shard, source.read_shard(shard, []), removal_rows(removed),
                                        REASON, exact_evidence(dup_of))

        return self.map_shards(ctx, rank, world_size, split).to_dict()
