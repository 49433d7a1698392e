"""A minimal stage used to test the engine independently of the real stages."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curation.stages.base import Stage, StepContext


class DropShort(Stage):
    """Rejects documents shorter than 20 characters (reason `too-short`)."""

    type_name = "heuristic-filter"
    steps = ("filter",)

    def step_filter(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        def decide(table: pa.Table, shard: int) -> tuple[list[str | None], None]:
            return [None if len(t) >= 20 else "too-short" for t in table.column("text").to_pylist()], None

        return self.filter_shards(ctx, rank, world_size, decide)
