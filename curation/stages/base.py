"""The stage base class: one stage = one class with typed params and one method per step.

The base owns what every stage repeats: which shards a rank takes, per-shard resume,
reading the previous stage's output, writing kept and rejected rows atomically, and the
statistics each rank reports. Stage classes hold the orchestration; the math lives in
module-level pure functions next to them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dataset import (
    TEXT,
    Location,
    ShardedDataset,
    with_stage_reason,
)
from curation.errors import StepError
from curation.plan import Step
from curation.spec import PipelineSpec


@dataclass(frozen=True)
class StepContext:
    """Where one step of one stage reads and writes."""

    spec: PipelineSpec
    step: Step
    work: Location  # <output>/_work
    input: ShardedDataset | None  # previous stage's kept documents (None for ingest)
    output: ShardedDataset  # this stage's kept documents
    rejected: ShardedDataset  # this stage's rejected documents (with stage, reason)
    scratch: Location  # this stage's intermediate files
    models: Location  # the models location
    num_shards: int  # number of shards flowing through the pipeline

    def shards_for(self, rank: int, world_size: int) -> list[int]:
        """Map steps: rank r takes shards i with i % world_size == r."""
        return [i for i in range(self.num_shards) if i % world_size == rank]

    def partition_file(self, step: str, partition: int, shard: int, suffix: str = "parquet") -> Location:
        """File written by a map step for one reduce partition: <scratch>/<step>/p<partition>/s<shard>."""
        return self.scratch.join(step, f"p{partition:05d}", f"s{shard:05d}.{suffix}")


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
    if TEXT not in table.column_names or table.num_rows == 0:
        return 0
    return int(pc.sum(pc.binary_length(table.column(TEXT).cast(pa.large_binary()))).as_py() or 0)


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

    def require_input(self, ctx: StepContext) -> ShardedDataset:
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
        """Write the kept rows to the stage output and the others to `rejected/` with their reason.

        `kept`, when given, replaces the kept rows (e.g. with annotation columns added)."""
        mask = np.fromiter((r is None for r in reasons), dtype=bool, count=len(reasons))
        if len(reasons) != table.num_rows:
            raise StepError(f"{ctx.step.id}: {len(reasons)} decisions for {table.num_rows} rows")
        keep_table = kept if kept is not None else table.filter(pa.array(mask))
        if keep_table.num_rows != int(mask.sum()):
            raise StepError(f"{ctx.step.id}: kept table has {keep_table.num_rows} rows, expected {mask.sum()}")
        drop_idx = np.flatnonzero(~mask)
        drop_reasons = [reasons[i] for i in drop_idx]
        rejected = with_stage_reason(table.take(pa.array(drop_idx, pa.int64())), self.name, drop_reasons)
        ctx.rejected.write_shard(shard, rejected)
        ctx.output.write_shard(shard, keep_table)
        stats = StageStats()
        stats.docs_in = table.num_rows
        stats.docs_out = keep_table.num_rows
        stats.bytes_in = text_bytes(table)
        stats.bytes_out = text_bytes(keep_table)
        stats.removed.update(r for r in drop_reasons if r is not None)
        return stats.to_dict()

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
    ) -> dict[str, Any]:
        """A map step that reads each of this rank's shards, decides, and writes the split."""
        source = self.require_input(ctx)

        def split(shard: int) -> dict[str, Any]:
            table = source.read_shard(shard)
            reasons, kept = decide(table, shard)
            return self.write_split(ctx, shard, table, reasons, kept)

        return self.map_shards(ctx, rank, world_size, split).to_dict()


def doc_keys(shard: int, num_rows: int) -> np.ndarray:
    """Global 64-bit keys of a shard's rows: shard in the high 32 bits, row in the low 32."""
    return (np.uint64(shard) << np.uint64(32)) | np.arange(num_rows, dtype=np.uint64)


def split_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keys = keys.astype(np.uint64, copy=False)
    return (keys >> np.uint64(32)).astype(np.int64), (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)
