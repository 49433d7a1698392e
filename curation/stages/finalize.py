"""Finalize: publish every shard's documents, check conservation exactly, write manifests and reports.

    publish (map over shards)          each canonical shard's rows go to `rejected/part-NNNNN` (with
                                       `stage`, `reason` and evidence) or to `data/part-NNNNN`; when a
                                       curriculum ordered the documents, kept rows go to one piece per
                                       (output shard, rank) instead. Every published id is hashed into
                                       the id partitions of the conservation check.
    order   (reduce over piece groups)  ordered output only: each group (a run of consecutive output
                                       shards, ~512 MB of text) sorted by curriculum position and cut
                                       into its output shards
    check   (reduce per id partition)  exact conservation: every input id once in data/ or rejected/,
                                       synthetic rows' sources are input ids
    tokenize, layout, merge            with `output.tokenize` only: training-ready token files under
                                       `tokens/`, merged (curation/tokens/steps.py)
    summary (global)                   manifests, `summary.json`, `report.html`; then `_work/` is removed
                                       unless `output.keepWork`

The data manifest and `summary.json` are written only after every partition passed the check, so a
run that lost a document never looks complete.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from curation.conservation import PUBLISHED_SCHEMA, Kind, check_partition
from curation.corpus import (
    BYTES,
    EVIDENCE,
    INTERNAL,
    PARTITION_ROWS,
    REASON,
    STAGE,
    SYNTHETIC_SOURCE,
    CorpusView,
    partition_count,
    write_parquet,
)
from curation.dataset import ID, TEXT, RankMarker, read_table
from curation.errors import StepError
from curation.layout import RunLayout
from curation.plan import INGEST, data_fingerprint
from curation.spec import PipelineSpec
from curation.stages.base import PartitionWriter, Stage, StageStats, StepContext
from curation.stages.ingest import ID_SCHEMA, id_hashes

POSITION = "curriculum_position"
# Text per partition of the ordered publish. An order rank holds one group, about 4x this in
# memory (read, sorted copy, writer buffers): 512 MB measured 2.19 GB at 1M documents.
PIECE_BYTES = 128 << 20
PIECE_ZSTD_LEVEL = 3
TOKENS_DIR = "tokens"  # output.tokenize: merged token files and their _manifest.json
ORDER_FILE = "order.json"  # written by a curriculum stage: {"docs", "rows_per_shard", "output_shards"}


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


def merge_extra(target: dict[str, Any], extra: dict[str, Any]) -> None:
    """Numbers and dicts of numbers add up across ranks; anything else: last one wins."""
    for key, value in extra.items():
        if isinstance(value, int | float) and isinstance(target.get(key), int | float):
            target[key] += value
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_extra(target[key], value)
        else:
            target[key] = value


def collect_stage_stats(ctx: StepContext, layout: RunLayout) -> list[dict[str, Any]]:
    """Per stage: counts from the step that reports them; time and extras from all its steps."""
    stages: dict[str, dict[str, Any]] = {}
    for step in ctx.plan:
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
                               "wall_seconds": round(max(wall, 0.0), 3),
                               "objects_read": sum(int(r.get("objects_read", 0)) for r in ranks),
                               "bytes_read": sum(int(r.get("bytes_read", 0)) for r in ranks)})
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


def align(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns, in order (missing ones null)."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            cols.append(table.column(f.name).cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


class FinalizeStage(Stage):
    type_name = "finalize"
    steps = ("publish", "order", "check", "tokenize", "layout", "merge", "summary")

    # -- what every step needs to know ---------------------------------------------------------

    def _layout(self) -> RunLayout:
        return RunLayout.of(self.spec.output.path)

    def _view(self) -> CorpusView:
        layout = self._layout()
        files = [layout.stage_files(i, s.stage_name) for i, s in enumerate(self.spec.stages, start=1)]
        return CorpusView(layout.corpus, files)

    def _order(self) -> dict[str, Any] | None:
        """The ordering of the last curriculum stage, if any (output shards by position)."""
        layout = self._layout()
        for i in range(len(self.spec.stages), 0, -1):
            stage = self.spec.stages[i - 1]
            if stage.type == "curriculum":
                loc = layout.stage_scratch(i, stage.stage_name).join(ORDER_FILE)
                if not loc.exists():
                    raise StepError(f"{loc.path}: missing (did the curriculum stage finish?)")
                data: dict[str, Any] = loc.read_json()
                return data
        return None

    def _schemas(self, view: CorpusView) -> tuple[pa.Schema, pa.Schema]:
        """Schemas of `data/` and `rejected/` shards (the same for every shard)."""
        full = view.schema(0)
        data_fields = [f for f in full if f.name not in (*INTERNAL, *EVIDENCE) and not f.name.startswith("__")]
        if any(s.type == "rephrase" for s in self.spec.stages) and SYNTHETIC_SOURCE not in [f.name for f in data_fields]:
            data_fields.append(pa.field(SYNTHETIC_SOURCE, pa.string()))
        data = pa.schema(data_fields)
        evidence = [f for f in full if f.name in EVIDENCE]
        rejected = pa.schema([*data_fields, *evidence, pa.field(STAGE, pa.string()), pa.field(REASON, pa.string())])
        return data, rejected

    def _piece_groups(self, order: dict[str, Any]) -> int:
        """Partitions of the ordered publish: runs of consecutive output shards holding about
        PIECE_BYTES of text each, so the publish writers' open files and the order step's memory
        stay bounded however many output shards the curriculum asks for."""
        corpus = self._layout().corpus
        text = sum(int(s.get("bytes", 0)) for s in corpus.index["shards"])
        kept = text * min(1.0, int(order["docs"]) / max(1, corpus.rows))
        return max(1, min(int(order["output_shards"]), math.ceil(kept / PIECE_BYTES)))

    def _data_shards(self, order: dict[str, Any] | None) -> int:
        """Shards of `data/`: one per canonical shard, or per output shard of a curriculum order."""
        return max(1, int(order["output_shards"])) if order is not None else self._layout().corpus.num_shards

    def _id_partitions(self, ctx: StepContext) -> int:
        return partition_count(self._layout().corpus.rows, PARTITION_ROWS["ids"], ctx.peer("check").world_size)

    # -- publish ---------------------------------------------------------------------------------

    def step_publish(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        layout = self._layout()
        if rank == 0 and not self.spec.output.keep_work:
            release_stage_scratch(self.spec, layout)
        view = self._view()
        data_schema, rejected_schema = self._schemas(view)
        order = self._order()
        names = [INGEST, *[s.stage_name for s in self.spec.stages]]
        ids = PartitionWriter(ctx, "ids", rank, self._id_partitions(ctx), PUBLISHED_SCHEMA)
        pieces = None
        if order is not None:
            if POSITION not in data_schema.names:
                raise StepError(f"{ctx.step.id}: the curriculum stage wrote no '{POSITION}' column")
            # The kept text, once more until `order` has sorted it: zstd level 3 keeps this copy
            # ~10% smaller than level 1 (for +0.2 CPU-s per 100 MB), so `_work/` stays under the input.
            pieces = PartitionWriter(ctx, "pieces", rank, self._piece_groups(order),
                                     _user_schema(self.spec, data_schema), compression_level=PIECE_ZSTD_LEVEL)
        stats = StageStats()
        for shard in ctx.shards_for(rank, world_size):
            uni = view.universe(shard)
            table = uni.table
            alive = pa.array(uni.alive)
            kept = table.filter(alive)
            dropped = table.filter(pc.invert(alive))
            stage_of = pa.array(np.asarray(names, dtype=object)[uni.rejected_at[~uni.alive]], pa.string())
            dropped = dropped.append_column(STAGE, stage_of).append_column(REASON, uni.reason.filter(pc.invert(alive)))
            rejected = align(user_columns(self.spec, dropped), _user_schema(self.spec, rejected_schema))
            layout.rejected.write_shard(shard, rejected)
            data = align(user_columns(self.spec, kept), _user_schema(self.spec, data_schema))
            if pieces is not None:
                positions = kept.column(POSITION).to_numpy(zero_copy_only=False).astype(np.int64)
                shard_of = positions // int(order["rows_per_shard"])  # type: ignore[index]
                pieces.write(data, _group_of(shard_of, int(order["output_shards"]), pieces.count))  # type: ignore[index]
            else:
                layout.data.write_shard(shard, data)
            ids.write(*_published_ids(kept, Kind.OUTPUT, ids.count))
            ids.write(*_published_ids(dropped, Kind.REJECTED, ids.count))
            stats.docs_in += table.num_rows
            stats.docs_out += kept.num_rows
            stats.bytes_out += int(pc.sum(kept.column(BYTES)).as_py() or 0) if kept.num_rows else 0
            del uni, table, alive, kept, dropped, rejected, data  # before the next shard is read
        ids.close()
        if pieces is not None:
            pieces.close()
        return stats.to_dict()

    # -- order -------------------------------------------------------------------------------------

    def step_order(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        order = self._order()
        stats = StageStats()
        if order is None:
            return stats.to_dict()
        layout = self._layout()
        data_schema = _user_schema(self.spec, self._schemas(self._view())[0])
        shards: list[dict[str, Any]] = []
        total = max(1, int(order["output_shards"]))
        rows_per_shard = int(order["rows_per_shard"])
        groups = self._piece_groups(order)
        for g in range(rank, groups, world_size):
            table = ctx.read_partition("pieces", g, data_schema, writer="publish")
            table = table.take(pc.sort_indices(table, [(POSITION, "ascending")]))
            shard_of = table.column(POSITION).to_numpy(zero_copy_only=False).astype(np.int64) // rows_per_shard
            members = np.flatnonzero(_group_of(np.arange(total, dtype=np.int64), total, groups) == g)
            bounds = np.searchsorted(shard_of, np.append(members, members[-1] + 1)) if len(members) else []
            for k, j in enumerate(members.tolist()):  # the group's output shards, each written even if empty
                part = table.slice(int(bounds[k]), int(bounds[k + 1] - bounds[k]))
                layout.data.write_shard(j, part)
                shards.append(_shard_summary(j, part))
                stats.docs_out += part.num_rows
            if len(members):
                del part  # a slice: it would keep the group's table alive
            del table, shard_of  # before the next group is read: one group in memory at a time
        ctx.scratch.join("order", f"r{rank:05d}.json").write_json_atomic(shards)
        return stats.to_dict()

    # -- check -------------------------------------------------------------------------------------

    def step_check(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        layout = self._layout()
        ingest_scratch = layout.stage_scratch(0, INGEST)
        ingest_ranks = next(s for s in ctx.plan if s.id == f"{INGEST}.ids").world_size
        counts = {"input_docs": 0, "output_docs": 0, "rejected_docs": 0, "synthetic_docs": 0,
                  "synthetic_rejected": 0}
        for p in range(rank, self._id_partitions(ctx), world_size):
            parts = [read_table(f) for f in (ingest_scratch.join("ids", f"p{p:05d}", f"r{r:05d}.parquet")
                                             for r in range(ingest_ranks)) if f.exists()]
            inputs = pa.concat_tables(parts) if parts else ID_SCHEMA.empty_table()
            result = check_partition(inputs, ctx.read_partition("ids", p, PUBLISHED_SCHEMA, writer="publish"))
            del parts, inputs  # before the next partition is read: one partition in memory at a time
            for k in counts:
                counts[k] += result[k]
        stats = StageStats()
        stats.extra = {"conservation": counts}
        return stats.to_dict()

    # -- tokenize, layout, merge (output.tokenize) ------------------------------------------------

    def step_tokenize(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        from curation.tokens.steps import run_tokenize

        layout = self._layout()
        return run_tokenize(self.spec, ctx.scratch, ctx.models, layout.data.loc, layout.rejected.loc,
                            self._data_shards(self._order()), layout.corpus.num_shards, rank, world_size)

    def step_layout(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        from curation.tokens.steps import run_layout

        return run_layout(self.spec, ctx.scratch, self._data_shards(self._order()), ctx.peer("tokenize").world_size)

    def step_merge(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        from curation.tokens.steps import run_merge

        return run_merge(self.spec, ctx.scratch, self._layout().root.join(TOKENS_DIR), rank, world_size)

    # -- summary -----------------------------------------------------------------------------------

    def step_summary(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        spec = self.spec
        layout = self._layout()
        marker = RankMarker(layout.work, f"{self.name}.check")
        check_step = ctx.peer("check")
        counts: dict[str, int] = {}
        for r in range(check_step.world_size):
            for k, v in marker.read(r, check_step.world_size).get("extra", {}).get("conservation", {}).items():
                counts[k] = counts.get(k, 0) + int(v)
        fingerprint = data_fingerprint(spec)
        lineage = {"spec_fingerprint": fingerprint, "input": spec.input.path,
                   "stages": [s.stage_name for s in spec.stages]}
        # The shards the writers committed (never a listing: on an object store a listing is not
        # the record of what a step produced): one rejected shard per canonical shard; data shards
        # per canonical shard, or per output shard of a curriculum order.
        order = self._order()
        shards = layout.corpus.num_shards
        data_shards = self._data_shards(order)
        layout.rejected.write_manifest(lineage, count=shards)
        stages = collect_stage_stats(ctx, layout)
        mixture = self._mixture(ctx)
        if mixture is not None:
            layout.data.loc.join("_mixture.json").write_json_atomic(mixture)
        manifest = layout.data.write_manifest(lineage, count=data_shards)
        total_in = counts.get("input_docs", 0)
        real_out = counts.get("output_docs", 0)
        summary = {
            "spec_fingerprint": fingerprint,
            "input": {"path": spec.input.path, "docs": total_in, "text_field": spec.input.text_field},
            "output": {"path": spec.output.path, "docs": manifest["rows"], "shards": len(manifest["shards"]),
                       "bytes": sum(int(s.get("bytes", 0)) for s in manifest["shards"])},
            "stages": stages,
            "totals": {
                "input_docs": total_in,
                "output_docs": manifest["rows"],
                "real_output_docs": real_out,
                "rejected_docs": counts.get("rejected_docs", 0),
                "synthetic_docs": counts.get("synthetic_docs", 0),
                "synthetic_rejected": counts.get("synthetic_rejected", 0),
                "kept_fraction": round(real_out / total_in, 6) if total_in else 0.0,
            },
            "conservation": {"holds": True, "input_docs": total_in, "output_docs": real_out,
                             "rejected_docs": counts.get("rejected_docs", 0),
                             "synthetic_docs": counts.get("synthetic_docs", 0)},
        }
        if spec.output.tokenize is not None:
            from curation.tokens.steps import token_summary

            summary["tokens"] = token_summary(spec, ctx.scratch, layout.root.join(TOKENS_DIR), names_with_ingest(spec),
                                              order is not None)
        layout.summary.write_json_atomic(summary)
        try:
            from curation.report import write_report

            write_report(layout, summary)
        except OSError as err:  # the data is published and checked: a report problem is not a failed run
            print(f"warning: could not write {layout.report.path}: {err}", file=sys.stderr)
        if not spec.output.keep_work:
            remove_work(spec, layout)
        return {"docs_in": total_in, "docs_out": real_out, "generated": counts.get("synthetic_docs", 0),
                "removed": {}}

    def _mixture(self, ctx: StepContext) -> dict[str, Any] | None:
        """The curriculum's mixture manifest with the output shards the order step wrote."""
        layout = self._layout()
        for i in range(len(self.spec.stages), 0, -1):
            stage = self.spec.stages[i - 1]
            if stage.type != "curriculum":
                continue
            loc = layout.stage_scratch(i, stage.stage_name).join("curriculum.json")
            if not loc.exists():
                return None
            mixture: dict[str, Any] = loc.read_json()
            ranks = ctx.peer("order").world_size
            shards: list[dict[str, Any]] = []
            for r in range(ranks):
                part = ctx.scratch.join("order", f"r{r:05d}.json")
                if part.exists():
                    shards.extend(part.read_json())
            mixture["shards"] = sorted(shards, key=lambda s: s["shard"])
            return mixture
        return None


def _group_of(shard: np.ndarray, shards: int, groups: int) -> np.ndarray:
    """The piece group of each output shard: contiguous runs, `groups` of them."""
    return (np.asarray(shard, dtype=np.int64) * groups) // max(1, shards)


def names_with_ingest(spec: PipelineSpec) -> list[str]:
    """The stage names a rejected row's `stage` column may hold, in pipeline order."""
    return [INGEST, *[s.stage_name for s in spec.stages]]


# What finalize still reads in a stage's scratch folder: the curriculum's order and mixture.
FINALIZE_READS = {"curriculum": (ORDER_FILE, "curriculum.json")}


def release_stage_scratch(spec: PipelineSpec, layout: RunLayout) -> int:
    """Delete the stages' intermediate files (MinHash signatures and shingle sets, hash and band
    partitions, embeddings, score partitions, ...) once every stage is done: finalize reads only
    the corpus, the decisions and FINALIZE_READS, so `_work/` does not hold them beside the
    publish's pieces. Idempotent (a retried rank deletes what is left). Returns entries deleted."""
    deleted = 0
    for i, stage in enumerate(spec.stages, start=1):
        scratch = layout.stage_scratch(i, stage.stage_name)
        keep = FINALIZE_READS.get(getattr(stage.type, "value", str(stage.type)), ())
        try:
            entries = scratch.fs.get_file_info(pafs.FileSelector(scratch.path, allow_not_found=True))
        except FileNotFoundError:
            continue
        for info in entries:
            if info.base_name in keep:
                continue
            if info.type == pafs.FileType.Directory:
                scratch.fs.delete_dir(info.path)
            else:
                scratch.fs.delete_file(info.path)
            deleted += 1
    return deleted


def remove_work(spec: PipelineSpec, layout: RunLayout) -> None:
    """Delete the corpus copy and every stage's files; keep the owner record and the markers, so a
    rerun of the finished run does nothing."""
    layout.corpus.loc.delete_dir()
    for i, name in enumerate([INGEST, *[s.stage_name for s in spec.stages], "finalize"]):
        layout.stage_root(i, name).delete_dir()


def _user_schema(spec: PipelineSpec, schema: pa.Schema) -> pa.Schema:
    fields = []
    for f in schema:
        if f.name == TEXT:
            fields.append(f.with_name(spec.input.text_field))
        elif f.name == ID and spec.input.id_field:
            fields.append(f.with_name(spec.input.id_field))
        else:
            fields.append(f)
    return pa.schema(fields)


def _published_ids(table: pa.Table, kind: Kind, count: int) -> tuple[pa.Table, np.ndarray]:
    """Id rows of published documents; synthetic rows are checked by their source id."""
    if table.num_rows == 0:
        return PUBLISHED_SCHEMA.empty_table(), np.zeros(0, np.int64)
    ids = table.column(ID)
    kinds = np.full(table.num_rows, int(kind), dtype=np.int8)
    if SYNTHETIC_SOURCE in table.column_names:
        source = table.column(SYNTHETIC_SOURCE)
        synthetic = np.asarray(pc.is_valid(source).to_numpy(zero_copy_only=False), dtype=bool)
        if synthetic.any():
            ids = pc.if_else(pa.array(synthetic), pc.cast(source, pa.string()), pc.cast(ids, pa.string()))
            kinds[synthetic] = int(Kind.SYNTHETIC_OUTPUT if kind == Kind.OUTPUT else Kind.SYNTHETIC_REJECTED)
    hi, lo, strings = id_hashes(ids)
    rows = pa.table({"h_hi": hi, "h_lo": lo, "id": strings, "kind": pa.array(kinds, pa.int8())},
                    schema=PUBLISHED_SCHEMA)
    return rows, (lo % np.uint64(count)).astype(np.int64)


def _shard_summary(j: int, table: pa.Table) -> dict[str, Any]:
    from curation.stages.curriculum import SIGNAL_COLUMN, signal_summary

    entry: dict[str, Any] = {"shard": j, "rows": table.num_rows}
    if SIGNAL_COLUMN in table.column_names:
        values = pc.fill_null(pc.cast(table.column(SIGNAL_COLUMN), pa.float64()), float("nan"))
        entry["signal"] = signal_summary(np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64))
    return entry


__all__ = ["FinalizeStage", "align", "collect_stage_stats", "merge_extra", "user_columns", "write_parquet"]
