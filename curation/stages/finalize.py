"""Finalize: publish the curated dataset and the rejected set, check conservation, write reports.

The data manifest and `summary.json` are written only after the conservation check passes, so
a run that lost a document never looks complete.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.conservation import check_conservation
from curation.dataset import ID, SYNTHETIC_SOURCE, TEXT, RankMarker, ShardedDataset, concat, read_table
from curation.layout import RunLayout
from curation.plan import INGEST, data_fingerprint, plan_steps
from curation.spec import PipelineSpec
from curation.stages.base import Stage, StepContext


def user_columns(spec: PipelineSpec, table: pa.Table) -> pa.Table:
    """Give the canonical `text`/`id` columns back the names the input used."""
    names = []
    for name in table.column_names:
        if name == TEXT:
            names.append(spec.input.text_field)
        elif name == ID and spec.input.id_field:
            names.append(spec.input.id_field)
        else:
            names.append(name)
    return table.rename_columns(names)


def _ids(table: pa.Table) -> tuple[list[str], list[str]]:
    """(real ids, synthetic source ids) of a table."""
    if table.num_rows == 0:
        return [], []
    ids = table.column(ID)
    if SYNTHETIC_SOURCE in table.column_names:
        src = table.column(SYNTHETIC_SOURCE)
        synthetic = pc.is_valid(src)
        real = ids.filter(pc.invert(synthetic)).to_pylist()
        return real, src.filter(synthetic).to_pylist()
    return ids.to_pylist(), []


def merge_extra(target: dict[str, Any], extra: dict[str, Any]) -> None:
    """Numbers and dicts of numbers add up across ranks; anything else: last one wins."""
    for key, value in extra.items():
        if isinstance(value, int | float) and isinstance(target.get(key), int | float):
            target[key] += value
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_extra(target[key], value)
        else:
            target[key] = value


def collect_stage_stats(spec: PipelineSpec, layout: RunLayout) -> list[dict[str, Any]]:
    """Per stage: counts from the step that wrote its output; time and extras from all its steps."""
    stages: dict[str, dict[str, Any]] = {}
    for step in plan_steps(spec):
        if step.stage == "finalize":
            continue
        entry = stages.setdefault(
            step.stage,
            {"name": step.stage, "type": step.stage_type, "index": step.index, "steps": [], "extra": {}},
        )
        marker = RankMarker(layout.work, step.id)
        ranks = [marker.read(r, step.world_size) for r in range(step.world_size) if marker.is_done(r, step.world_size)]
        seconds = sum(float(r.get("seconds", 0.0)) for r in ranks)
        wall = max((r.get("finished", 0) for r in ranks), default=0) - min((r.get("started", 0) for r in ranks), default=0)
        entry["steps"].append({"id": step.id, "world_size": step.world_size, "rank_seconds": round(seconds, 3),
                               "wall_seconds": round(max(wall, 0.0), 3)})
        for r in ranks:
            merge_extra(entry["extra"], r.get("extra", {}))
        if step.writes_output:
            totals: dict[str, Any] = {"docs_in": 0, "docs_out": 0, "generated": 0, "bytes_in": 0, "bytes_out": 0,
                                      "removed": {}}
            for r in ranks:
                for k in ("docs_in", "docs_out", "generated", "bytes_in", "bytes_out"):
                    totals[k] += int(r.get(k, 0))
                for reason, n in r.get("removed", {}).items():
                    totals["removed"][reason] = totals["removed"].get(reason, 0) + int(n)
            entry.update(totals)
    out = []
    for entry in stages.values():
        entry["seconds"] = round(sum(s["wall_seconds"] for s in entry["steps"]), 3)
        entry["docs_removed"] = sum(entry.get("removed", {}).values())
        if not entry["extra"]:
            entry.pop("extra")
        out.append(entry)
    return out


class FinalizeStage(Stage):
    type_name = "finalize"
    steps = ("write",)

    def step_write(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        spec = self.spec
        layout = RunLayout.of(spec.output.path)
        last = spec.stages[-1].stage_name
        final = layout.stage_output(len(spec.stages), last)
        # Start clean: a finalize that died half-way may have left files; none is marked complete.
        layout.data.loc.delete_dir()
        layout.rejected.loc.delete_dir()
        for stale in (layout.summary, layout.report):
            if stale.exists():
                stale.fs.delete_file(stale.path)

        out_real: list[str] = []
        synthetic_sources: list[str] = []
        rows_per_shard = spec.output.rows_per_shard
        buffer: list[pa.Table] = []
        out_index = 0
        bytes_out = 0
        for name in final.shard_names():
            table = read_table(final.loc.join(name))
            real, syn = _ids(table)
            out_real.extend(real)
            synthetic_sources.extend(syn)
            if rows_per_shard is None:
                bytes_out += layout.data.write_shard(out_index, user_columns(spec, table))
                out_index += 1
            else:
                buffer.append(table)
                merged = concat(buffer)
                while merged.num_rows >= rows_per_shard:
                    bytes_out += layout.data.write_shard(out_index, user_columns(spec, merged.slice(0, rows_per_shard)))
                    out_index += 1
                    merged = merged.slice(rows_per_shard)
                buffer = [merged]
        if rows_per_shard is not None and (buffer and buffer[0].num_rows or out_index == 0):
            bytes_out += layout.data.write_shard(out_index, user_columns(spec, concat(buffer)))

        input_ids: list[str] = []
        rejected_ids: list[str] = []
        rejected_synthetic_sources: list[str] = []
        rej_index = 0
        for i, stage in enumerate([INGEST, *[s.stage_name for s in spec.stages]]):
            kept_ds: ShardedDataset = layout.stage_output(i, stage)
            rej_ds = layout.stage_rejected(i, stage)
            if i == 0:
                for name in kept_ds.shard_names():
                    input_ids.extend(read_table(kept_ds.loc.join(name), [ID]).column(ID).to_pylist())
            for name in rej_ds.shard_names():
                table = read_table(rej_ds.loc.join(name))
                if table.num_rows == 0:
                    continue
                real, syn = _ids(table)
                if i == 0:
                    input_ids.extend(real)
                rejected_ids.extend(real)
                rejected_synthetic_sources.extend(syn)
                layout.rejected.write_shard(rej_index, user_columns(spec, table))
                rej_index += 1

        report = check_conservation(input_ids, out_real, rejected_ids,
                                    synthetic_sources + rejected_synthetic_sources)
        fingerprint = data_fingerprint(spec)
        lineage = {"spec_fingerprint": fingerprint, "input": spec.input.path,
                   "stages": [s.stage_name for s in spec.stages]}
        layout.rejected.write_manifest(lineage)
        stages = collect_stage_stats(spec, layout)
        mixture = _mixture_manifest(spec, layout)
        if mixture is not None:
            layout.data.loc.join("mixture.json").write_json_atomic(mixture)
        manifest = layout.data.write_manifest(lineage)
        total_in = report.input_docs
        summary = {
            "spec_fingerprint": fingerprint,
            "input": {"path": spec.input.path, "docs": total_in, "text_field": spec.input.text_field},
            "output": {"path": spec.output.path, "docs": manifest["rows"], "shards": len(manifest["shards"]),
                       "bytes": bytes_out},
            "stages": stages,
            "totals": {
                "input_docs": total_in,
                "output_docs": manifest["rows"],
                "real_output_docs": report.output_docs,
                "rejected_docs": report.rejected_docs,
                "synthetic_docs": len(synthetic_sources),
                "synthetic_rejected": len(rejected_synthetic_sources),
                "kept_fraction": round(report.output_docs / total_in, 6) if total_in else 0.0,
            },
            "conservation": report.to_dict(),
        }
        layout.summary.write_json_atomic(summary)
        from curation.report import write_report

        write_report(layout, summary)
        return {"docs_in": total_in, "docs_out": report.output_docs, "generated": len(synthetic_sources),
                "removed": {}, "seconds": 0.0}


def _mixture_manifest(spec: PipelineSpec, layout: RunLayout) -> dict[str, Any] | None:
    """Copy the curriculum's mixture manifest next to the data when the last stage wrote one."""
    for i, stage in enumerate(spec.stages, start=1):
        if stage.type == "curriculum" and i == len(spec.stages):
            loc = layout.stage_scratch(i, stage.stage_name).join("curriculum.json")
            if loc.exists():
                data: dict[str, Any] = loc.read_json()
                return data
    return None
