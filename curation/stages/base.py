"""The stage base class: one stage = one class with typed params and one method per step.

The base owns what every stage repeats: which shards a rank takes, per-shard resume,
reading the previous stage's output, writing kept and rejected rows atomically, and the
statistics each rank reports. Stage classes hold the orchestration; the math lives in
module-level pure functions next to them.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.corpus import (
    BYTES,
    EVIDENCE,
    ROW,
    CorpusView,
    StageFiles,
    decision_table,
    scatter,
    write_parquet,
)
from curation.dataset import TEXT, Location, commit_staged, read_table, staging_path
from curation.errors import StepError
from curation.memory import release_freed_memory
from curation.plan import Step
from curation.spec import PipelineSpec


@dataclass(frozen=True)
class StepContext:
    """Where one step of one stage reads and writes."""

    spec: PipelineSpec
    step: Step
    plan: tuple[Step, ...]  # every step of the pipeline, computed once per rank
    work: Location  # <output>/_work
    input: CorpusView | None  # the documents alive at this stage's entry (None for ingest)
    files: StageFiles  # this stage's decision (and synthetic) files
    scratch: Location  # this stage's intermediate files
    models: Location  # the models location
    num_shards: int  # map steps: number of units (canonical shards; input files for ingest.read)

    def shards_for(self, rank: int, world_size: int) -> list[int]:
        """Map steps: rank r takes shards i with i % world_size == r."""
        return [i for i in range(self.num_shards) if i % world_size == rank]

    def peer(self, step: str) -> Step:
        """Another step of the same stage (e.g. the map step whose files a reduce reads)."""
        for s in self.plan:
            if s.stage == self.step.stage and s.step == step:
                return s
        raise StepError(f"stage {self.step.stage} has no step '{step}'")

    def partition_file(self, step: str, partition: int, rank: int) -> Location:
        """File a rank of a map step wrote for one reduce partition: <scratch>/<step>/p<partition>/r<rank>."""
        return self.scratch.join(step, f"p{partition:05d}", f"r{rank:05d}.parquet")

    def read_partition(self, step: str, partition: int, schema: pa.Schema, writer: str | None = None) -> pa.Table:
        """Every rank's rows for one partition of folder `step`, written by the map step `writer`
        (default: the step of that name); a rank that had no rows for it wrote no file."""
        release_freed_memory()  # what the previous partition left on the heap
        ranks = self.peer(writer or step).world_size
        tables = [read_table(f) for f in (self.partition_file(step, partition, r) for r in range(ranks))
                  if f.exists()]
        return pa.concat_tables(tables) if tables else schema.empty_table()


class PartitionWriter:
    """One rank's rows split by partition: at most one file per partition, committed on close.

    Rows are buffered up to `budget` bytes and flushed as row groups, so memory is bounded and
    the number of files is (ranks x partitions), never (shards x partitions). A flush writes and
    frees one partition at a time, and a row group holds at most ROW_GROUP_BYTES, so a reader that
    streams the file (`iter_row_groups`) holds a bounded batch whatever the file's size."""

    BUDGET = 24 << 20
    ROW_GROUP_BYTES = 8 << 20
    # What an open Parquet writer keeps between row groups: its page buffers (data_page_size)
    # and the scratch buffers of the largest array it was handed (a row group's column, when the
    # table is one chunk: 2.75 MB per file at 8 MB row groups). Writing in 16k-row chunks with
    # 64 KB pages keeps ~0.23 MB per open file: a rank writing to P partitions holds P of them,
    # and P grows with the corpus (`partition_count`).
    WRITE_CHUNK_ROWS = 16_384
    DATA_PAGE_BYTES = 64 << 10

    def __init__(self, ctx: StepContext, step: str, rank: int, count: int, schema: pa.Schema,
                 budget: int | None = None, compression_level: int | None = None) -> None:
        self.ctx, self.step, self.rank, self.count, self.schema = ctx, step, rank, count, schema
        self.budget = self.BUDGET if budget is None else budget
        self.compression_level = compression_level  # zstd's level (None: its default, 1)
        self.buffers: dict[int, list[pa.Table]] = {}
        self.buffered = 0
        self.writers: dict[int, tuple[pq.ParquetWriter, str]] = {}
        self.sinks: dict[int, Any] = {}

    def write(self, table: pa.Table, partition: np.ndarray) -> None:
        order = np.argsort(partition, kind="stable")
        bounds = np.searchsorted(partition[order], np.arange(self.count + 1))
        # One take of the whole table, then zero-copy slices: a take per partition would cost
        # the table's size per partition (pyarrow combines a chunked column's chunks to take).
        grouped = table.take(pa.array(order, pa.int64()))
        for p in np.flatnonzero(np.diff(bounds)).tolist():
            part = grouped.slice(int(bounds[p]), int(bounds[p + 1] - bounds[p]))
            self.buffers.setdefault(p, []).append(part)
            self.buffered += part.nbytes
        if self.buffered >= self.budget:
            self.flush()

    def flush(self) -> None:
        for p in sorted(self.buffers):
            parts = self.buffers.pop(p)
            if p not in self.writers:
                final = self.ctx.partition_file(self.step, p, self.rank)
                staged = staging_path(final)
                sink = final.fs.open_output_stream(staged)
                # No dictionary encoding: intermediates are hashes, keys and ids (one value per
                # row), and a dictionary per open file costs memory (+100 MB at 20 partitions).
                self.writers[p] = (pq.ParquetWriter(sink, self.schema, compression="zstd", use_dictionary=False,
                                                    compression_level=self.compression_level,
                                                    data_page_size=self.DATA_PAGE_BYTES), staged)
                self.sinks[p] = sink
            table = pa.concat_tables(parts).cast(self.schema)
            del parts
            table = pa.Table.from_batches(table.to_batches(max_chunksize=self.WRITE_CHUNK_ROWS), self.schema)
            per_row = max(1, table.nbytes // max(1, table.num_rows))
            self.writers[p][0].write_table(table, row_group_size=max(1024, self.ROW_GROUP_BYTES // per_row))
            del table
        self.buffered = 0

    def close(self) -> int:
        """Commit every file; returns how many partitions got rows."""
        self.flush()
        for p, (writer, tmp) in self.writers.items():
            writer.close()  # writes the footer; the stream it was given stays open until closed here
            self.sinks[p].close()  # on an object store: completes the upload (the object appears)
            commit_staged(self.ctx.partition_file(self.step, p, self.rank), tmp)
        return len(self.writers)


class StageStats:
    """Counters a rank accumulates and reports (JSON-serialisable via `to_dict`)."""

    def __init__(self) -> None:
        self.docs_in = 0
        self.docs_out = 0
        self.generated = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.removed: Counter[str] = Counter()
        self.extra: dict[str, Any] = {}
        self.started = time.monotonic()

    def add(self, other: dict[str, Any]) -> None:
        self.docs_in += int(other.get("docs_in", 0))
        self.docs_out += int(other.get("docs_out", 0))
        self.generated += int(other.get("generated", 0))
        self.bytes_in += int(other.get("bytes_in", 0))
        self.bytes_out += int(other.get("bytes_out", 0))
        self.removed.update({k: int(v) for k, v in other.get("removed", {}).items()})

    def to_dict(self) -> dict[str, Any]:
        return {
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "generated": self.generated,
            "removed": dict(sorted(self.removed.items())),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "seconds": round(time.monotonic() - self.started, 3),
            **({"extra": self.extra} if self.extra else {}),
        }


def text_bytes(table: pa.Table) -> int:
    """UTF-8 bytes of a table's documents (from `_bytes` when present, else the text)."""
    if table.num_rows == 0:
        return 0
    if BYTES in table.column_names:
        return int(pc.sum(table.column(BYTES)).as_py() or 0)
    if TEXT not in table.column_names:
        return 0
    return int(pc.sum(pc.binary_length(table.column(TEXT).cast(pa.large_binary()))).as_py() or 0)


def split_bytes(table: pa.Table, kept: np.ndarray) -> tuple[int, int]:
    """UTF-8 bytes of a table's documents and of its `kept` rows (from `_bytes` when present:
    no copy of the text to count the kept rows' bytes)."""
    if BYTES not in table.column_names or table.num_rows == 0:
        texts = table.select([TEXT]) if TEXT in table.column_names else table
        return text_bytes(texts), text_bytes(texts.filter(pa.array(kept)))
    sizes = np.asarray(pc.fill_null(table.column(BYTES), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    return int(sizes.sum()), int(sizes[kept].sum())


# A decision: per row, None (keep) or the reason for rejection.
Reasons = Sequence[str | None]


class Stage:
    """Base class of all stages. Subclasses set `type_name`, `steps` and implement `step_<name>`."""

    type_name: ClassVar[str]
    steps: ClassVar[tuple[str, ...]]

    def __init__(self, config: Any, spec: PipelineSpec) -> None:
        self.config = config  # the stage's spec entry (name, params, resources)
        self.params = config.params if config is not None else None
        self.spec = spec
        self.name: str = config.stage_name if config is not None else self.type_name

    def run(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        method: Callable[[StepContext, int, int], dict[str, Any]] | None = getattr(
            self, f"step_{ctx.step.step}", None
        )
        if method is None:
            raise StepError(f"stage {self.type_name} has no step '{ctx.step.step}'")
        return method(ctx, rank, world_size)

    # ---- helpers for map steps -------------------------------------------------------------

    def require_input(self, ctx: StepContext) -> CorpusView:
        if ctx.input is None:
            raise StepError(f"{ctx.step.id}: this step needs the previous stage's output")
        return ctx.input

    def shard_done(self, ctx: StepContext, shard: int) -> dict[str, Any] | None:
        """Per-shard resume: stats of a shard that an interrupted rank already finished."""
        loc = ctx.scratch.join("_shard_stats", ctx.step.step, f"s{shard:05d}.json")
        if loc.exists():
            data: dict[str, Any] = loc.read_json()
            return data
        return None

    def mark_shard(self, ctx: StepContext, shard: int, stats: dict[str, Any]) -> None:
        ctx.scratch.join("_shard_stats", ctx.step.step, f"s{shard:05d}.json").write_json_atomic(stats)

    def write_split(
        self, ctx: StepContext, shard: int, table: pa.Table, reasons: Reasons, kept: pa.Table | None = None
    ) -> dict[str, Any]:
        """Record the stage's decision about each row of `table` (the rows `ctx.input` gave, with `_row`).

        Columns of `table` (or of `kept`, the kept rows, when given) that the stage's input did not
        have are its annotations; a changed `text` in `kept` is a modification (stored for the
        changed rows only). Nothing else of the document is written."""
        if len(reasons) != table.num_rows:
            raise StepError(f"{ctx.step.id}: {len(reasons)} decisions for {table.num_rows} rows")
        mask = np.fromiter((r is None for r in reasons), dtype=bool, count=len(reasons))
        rows = table.column(ROW).to_numpy().astype(np.int64)
        # Evidence (`dup_of`, `similarity`) is per stage: an earlier stage's column does not hide this one's.
        before = (set(self.require_input(ctx).schema(shard).names) - set(EVIDENCE)) | {ROW, BYTES, TEXT}
        annotations: dict[str, pa.Array] = {}
        source = table if kept is None else kept
        if kept is not None and kept.num_rows != int(mask.sum()):
            raise StepError(f"{ctx.step.id}: kept table has {kept.num_rows} rows, expected {mask.sum()}")
        kept_pos = np.flatnonzero(mask)
        for name in source.column_names:
            if name in before:
                continue
            values = source.column(name).combine_chunks() if source.num_rows else pa.array([], source.column(name).type)
            annotations[name] = values if kept is None else scatter(values, kept_pos, table.num_rows)
        if kept is not None and TEXT in kept.column_names and TEXT in table.column_names and kept.num_rows:
            old = table.column(TEXT).take(pa.array(kept_pos, pa.int64()))
            changed = pc.fill_null(pc.not_equal(kept.column(TEXT), old), True)
            if pc.any(changed).as_py():
                new_text = pc.if_else(changed, kept.column(TEXT), pa.nulls(kept.num_rows, pa.string()))
                annotations[TEXT] = scatter(new_text.combine_chunks(), kept_pos, table.num_rows)
                lengths = pc.binary_length(new_text).cast(pa.int64())
                annotations[BYTES] = scatter(lengths.combine_chunks(), kept_pos, table.num_rows)
        decisions = decision_table(rows, pa.array(list(reasons), pa.string()), annotations)
        stats = StageStats()
        stats.docs_in = table.num_rows
        stats.docs_out = int(mask.sum())
        stats.bytes_in, stats.bytes_out = split_bytes(table, mask)
        stats.removed.update(r for r in reasons if r is not None)
        self.write_decisions(ctx, shard, decisions)
        return stats.to_dict()

    def write_decisions(self, ctx: StepContext, shard: int, decisions: pa.Table,
                        synthetic: pa.Table | None = None) -> None:
        """Write a shard's decision file (and, for stages that create documents, its synthetic rows:
        written first, so a decision file never names rows that do not exist)."""
        if synthetic is not None:
            write_parquet(ctx.files.synthetic(shard), synthetic)
        write_parquet(ctx.files.decisions(shard), decisions,
                      {"thresher.stage": json.dumps({"stage": self.name, "step": ctx.step.id})})

    def map_shards(
        self, ctx: StepContext, rank: int, world_size: int, process: Callable[[int], dict[str, Any]]
    ) -> StageStats:
        """The loop of a map step: `process(shard)` for each of this rank's shards not finished
        yet (per-shard resume), its stats recorded; returns the stats of all the rank's shards."""
        total = StageStats()
        for shard in ctx.shards_for(rank, world_size):
            done = self.shard_done(ctx, shard)
            if done is None:
                done = process(shard)
                self.mark_shard(ctx, shard, done)
            total.add(done)
        return total

    def filter_shards(
        self,
        ctx: StepContext,
        rank: int,
        world_size: int,
        decide: Callable[[pa.Table, int], tuple[Reasons, pa.Table | None]],
        columns: list[str] | None = None,
    ) -> dict[str, Any]:
        """A map step that reads each of this rank's shards, decides, and writes the split."""
        source = self.require_input(ctx)

        def split(shard: int) -> dict[str, Any]:
            table = source.read_shard(shard, columns)
            reasons, kept = decide(table, shard)
            return self.write_split(ctx, shard, table, reasons, kept)

        return self.map_shards(ctx, rank, world_size, split).to_dict()


def doc_keys(shard: int, num_rows: int) -> np.ndarray:
    """Global 64-bit keys of a shard's rows: shard in the high 32 bits, row in the low 32."""
    return (np.uint64(shard) << np.uint64(32)) | np.arange(num_rows, dtype=np.uint64)


def split_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keys = keys.astype(np.uint64, copy=False)
    return (keys >> np.uint64(32)).astype(np.int64), (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)

