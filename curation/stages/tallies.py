"""Per-shard tallies (documents and bytes per language, per PII type, per source) added up.

`Stage.map_shards` adds the counters of a rank's shards; the `extra` of each shard's stats is
added here, from the per-shard records, so a resumed rank reports the same totals."""

from __future__ import annotations

from typing import Any

from curation.stages.base import Stage, StageStats, StepContext


def add_nested(target: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Numbers and dicts of numbers add up; anything else: the last value wins."""
    for key, value in other.items():
        if isinstance(value, dict):
            add_nested(target.setdefault(key, {}), value)
        elif isinstance(value, int | float) and isinstance(target.get(key), int | float):
            target[key] += value
        else:
            target[key] = value
    return target


def with_shard_extras(stage: Stage, ctx: StepContext, rank: int, world_size: int, total: StageStats) -> dict[str, Any]:
    """The rank's stats with the `extra` of every shard it finished added up."""
    for shard in ctx.shards_for(rank, world_size):
        done = stage.shard_done(ctx, shard)
        if done is not None:
            add_nested(total.extra, done.get("extra", {}))
    return total.to_dict()
