"""PartitionWriter: one file per (partition, rank), every row exactly once, bounded row groups."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.dataset import Location, iter_row_groups, read_table
from curation.stages.base import PartitionWriter, StepContext

SCHEMA = pa.schema([("key", pa.uint64()), ("value", pa.float64()), ("name", pa.string())])


class _Scratch:
    """The one thing PartitionWriter asks of its StepContext: where a partition's file goes."""

    def __init__(self, root: Path) -> None:
        self.root = Location.of(str(root))

    def partition_file(self, step: str, partition: int, rank: int) -> Location:
        return self.root.join(step, f"p{partition:05d}", f"r{rank:05d}.parquet")


def _batch(start: int, rows: int) -> pa.Table:
    keys = np.arange(start, start + rows, dtype=np.uint64)
    return pa.table({"key": keys, "value": keys.astype(np.float64) / 7,
                     "name": pa.array([f"doc-{k}" for k in keys.tolist()])}, schema=SCHEMA)


def test_rows_land_once_in_their_partition_in_write_order(tmp_path: Path) -> None:
    ctx = _Scratch(tmp_path)
    writer = PartitionWriter(cast(StepContext, ctx), "hash", 1, 5, SCHEMA, budget=50_000)
    for start in range(0, 20_000, 3_000):
        batch = _batch(start, 3_000)
        writer.write(batch, (batch.column("key").to_numpy() % np.uint64(7)).astype(np.int64) % 5)
    assert writer.close() == 5
    seen = []
    for p in range(5):
        table = read_table(ctx.partition_file("hash", p, 1))
        keys = table.column("key").to_numpy()
        assert ((keys % 7) % 5 == p).all()
        assert (np.diff(keys.astype(np.int64)) > 0).all()  # the order rows were written in
        assert table.column("name").to_pylist() == [f"doc-{k}" for k in keys.tolist()]
        seen.append(keys)
    everything = np.sort(np.concatenate(seen))
    assert np.array_equal(everything, np.arange(21_000, dtype=np.uint64))


def test_a_partition_without_rows_gets_no_file(tmp_path: Path) -> None:
    ctx = _Scratch(tmp_path)
    writer = PartitionWriter(cast(StepContext, ctx), "ids", 0, 4, SCHEMA)
    batch = _batch(0, 100)
    writer.write(batch, np.where(batch.column("key").to_numpy() % 2 == 0, 0, 3).astype(np.int64))
    assert writer.close() == 2
    assert [ctx.partition_file("ids", p, 0).exists() for p in range(4)] == [True, False, False, True]


def test_row_groups_are_bounded_whatever_the_budget(tmp_path: Path) -> None:
    """A single-partition file written from a large budget still streams in small row groups."""
    ctx = _Scratch(tmp_path)
    writer = PartitionWriter(cast(StepContext, ctx), "score", 0, 1, SCHEMA, budget=64 << 20)
    writer.ROW_GROUP_BYTES = 200_000  # type: ignore[misc]
    for start in range(0, 60_000, 20_000):
        batch = _batch(start, 20_000)
        writer.write(batch, np.zeros(batch.num_rows, dtype=np.int64))
    writer.close()
    loc = ctx.partition_file("score", 0, 0)
    meta = pq.ParquetFile(loc.path).metadata
    assert meta.num_rows == 60_000 and meta.num_row_groups > 5
    groups = list(iter_row_groups(loc))
    assert max(g.num_rows for g in groups) <= 200_000 // 20  # two 8-byte numbers and a name: > 20 bytes a row
    assert np.array_equal(pa.concat_tables(groups).column("key").to_numpy(), np.arange(60_000, dtype=np.uint64))


def test_memory_held_per_open_partition_file_is_small(tmp_path: Path) -> None:
    """A rank keeps every partition's file open until it closes, and the partition count grows with
    the corpus: what one open file holds between flushes must stay small (Arrow's own count of the
    bytes it has allocated, so the figure does not depend on the allocator or the machine)."""
    partitions, rows = 40, 120_000
    ctx = _Scratch(tmp_path)
    writer = PartitionWriter(cast(StepContext, ctx), "hash", 0, partitions, SCHEMA, budget=1)  # flush every write
    keys = np.arange(rows, dtype=np.uint64)
    batch = pa.table({"key": keys, "value": keys.astype(np.float64), "name": pa.nulls(rows, pa.string())},
                     schema=SCHEMA)
    before = pa.total_allocated_bytes()
    for p in range(partitions):
        writer.write(batch, np.full(rows, p, dtype=np.int64))  # a 120k-row row group per file
    held = pa.total_allocated_bytes() - before
    assert writer.close() == partitions
    # one 120k-row chunk handed to each file kept 1.27 MB per open file; 16k-row chunks keep 0.23 MB
    assert held < partitions * (512 << 10), f"{held / partitions / 1024:.0f} KiB held per open file"
    assert sum(pq.ParquetFile(ctx.partition_file("hash", p, 0).path).metadata.num_rows
               for p in range(partitions)) == partitions * rows
