"""source-policy: per-source rules, caps and weights, per-source accounting, the source-loss guard.

    count  (map)     per shard: every source's documents and bytes at ingest, removed by each
                     earlier stage, alive here, removed by this stage's rules; for capped sources
                     a histogram of a seeded id hash (65,536 bins: count, bytes). Written per rank
                     to `acct/` and `hist/` (bounded: sources x bins)
    select (global)  adds the ranks' files up; per capped source the hash cutoff (the bins kept,
                     smallest hash first, while the count and bytes stay within the caps); the
                     per-source table; the `maxSourceLoss` guard (fails the run with the numbers)
    filter (map)     the same rules again, the cutoffs, `source_weight` on every document

A document's fate depends only on its source, licence and id: the same at any parallelism.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.corpus import BYTES
from curation.dataset import ID, Location, read_table, write_table_atomic
from curation.errors import InputDataError, SourceLossError, SpecError, StepError
from curation.params.source_policy import SourcePolicyParams
from curation.stages.base import Stage, StageStats, StepContext
from curation.stages.minhash_math import fmix64
from curation.stages.tallies import add_nested

NONE = "(none)"
WEIGHT = "source_weight"
BIN_BITS = 16
HIST_SCHEMA = pa.schema([("source", pa.string()), ("bin", pa.int64()), ("docs", pa.int64()), ("bytes", pa.int64())])
REASONS = ("source:missing", "source:denied", "source:not-allowed", "source:licence", "source:cap")
EXEMPT = ("source:denied", "source:not-allowed")  # losing these sources is the rule's intent


def source_column(spec: Any, params: SourcePolicyParams) -> str:
    column = params.field or spec.input.source_column
    if column is None:
        raise SpecError(
            "source-policy: no source column; set input.sourceField (a column naming each document's source), "
            "input.sourceFromPath, or the stage's params.field"
        )
    return str(column)


def combined(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    return column


def rule_reason_array(sources: pa.Array, licences: pa.Array | None, params: SourcePolicyParams) -> pa.Array:
    """Per document: null or the first rule it fails (see SourcePolicyParams), in Arrow."""
    src = pc.fill_null(sources.cast(pa.string()), "")
    missing = np.asarray(pc.equal(src, "").to_numpy(zero_copy_only=False), bool)
    conds: list[np.ndarray] = []
    names: list[str] = []

    def member(values: pa.Array, wanted: list[str]) -> np.ndarray:
        found = pc.fill_null(pc.is_in(values, value_set=pa.array(wanted, pa.string())), False)
        return np.asarray(found.to_numpy(zero_copy_only=False), bool)

    if params.missing_source == "reject":
        conds.append(missing)
        names.append("source:missing")
    if params.deny:
        conds.append(~missing & member(src, params.deny))
        names.append("source:denied")
    if params.allow:
        conds.append(~missing & ~member(src, params.allow))
        names.append("source:not-allowed")
    if licences is not None and (params.allowed_licences or params.denied_licences):
        lic = licences.cast(pa.string())
        bad = member(lic, params.denied_licences) if params.denied_licences else np.zeros(len(src), bool)
        if params.allowed_licences:
            bad |= ~member(lic, params.allowed_licences)
        conds.append(bad)
        names.append("source:licence")
    if not conds:
        return pa.nulls(len(src), pa.string())
    picked = np.select(conds, names, default="")
    return pc.if_else(pa.array(picked == ""), pa.nulls(len(src), pa.string()), pa.array(picked, pa.string()))


def rule_reasons(sources: list[str | None], licences: list[str | None] | None, params: SourcePolicyParams) -> list[str | None]:
    """`rule_reason_array` on Python lists."""
    lic = pa.array(licences, pa.string()) if licences is not None else None
    return rule_reason_array(pa.array(sources, pa.string()), lic, params).to_pylist()


def hash_bins(ids: pa.Array | pa.ChunkedArray, seed: int) -> np.ndarray:
    """Bin (top 16 bits of a seeded 64-bit hash of the id) of every document."""
    from curation.stages.ingest import id_hashes

    hi, _, _ = id_hashes(ids)
    key = hi ^ np.uint64((0x9E3779B97F4A7C15 * (seed + 1)) % (1 << 64))
    return (fmix64(key) >> np.uint64(64 - BIN_BITS)).astype(np.int64)


def capped(params: SourcePolicyParams, source: str) -> bool:
    rule = params.rule(source)
    return rule.max_docs is not None or rule.max_bytes is not None


def cutoff_bin(bins: np.ndarray, docs: np.ndarray, nbytes: np.ndarray, max_docs: int | None,
               max_bytes: int | None) -> int:
    """First bin not kept: bins below it are kept while both totals stay within the caps."""
    order = np.argsort(bins, kind="stable")
    bins, docs, nbytes = bins[order], docs[order], nbytes[order]
    fits = np.ones(len(bins), dtype=bool)
    if max_docs is not None:
        fits &= np.cumsum(docs) <= max_docs
    if max_bytes is not None:
        fits &= np.cumsum(nbytes) <= max_bytes
    stop = int(np.argmin(fits)) if not fits.all() else len(bins)
    return int(bins[stop]) if stop < len(bins) else 1 << BIN_BITS


def stage_names(spec: Any) -> list[str]:
    return ["ingest", *(s.stage_name for s in spec.stages)]


class SourcePolicyStage(Stage):
    """Source rules, caps, weights and accounting (steps `count`, `select` (global), `filter`)."""

    type_name = "source-policy"
    steps = ("count", "select", "filter")

    @classmethod
    def preflight(cls, config: Any, spec: Any, schema: pa.Schema | None = None) -> None:
        """The source (and licence) column exist; every input file has a path-derived source."""
        params: SourcePolicyParams = config.params
        column = source_column(spec, params)
        names = set(schema.names) if schema is not None else None
        if spec.input.source_from_path is not None and column == spec.input.source_column:
            from curation.stages.ingest import input_location, list_input_files, path_source

            root = input_location(spec)
            for f in list_input_files(spec):
                path_source(spec.input, root, f)
        elif names is not None and column not in names:
            raise InputDataError(
                f"stage {config.stage_name}: no source column '{column}' in the documents (columns: "
                f"{', '.join(sorted(names))}); set input.sourceField or params.field"
            )
        if params.licence_field and names is not None and params.licence_field not in names:
            raise InputDataError(
                f"stage {config.stage_name}.params.licenceField: no column '{params.licence_field}' in the documents "
                f"(columns: {', '.join(sorted(names))})"
            )

    def columns(self) -> list[str]:
        cols = [ID, source_column(self.spec, self.params)]
        return cols + ([self.params.licence_field] if self.params.licence_field else [])

    def _rules(self, table: pa.Table) -> tuple[pa.Array, pa.Array]:
        """(source with `(none)` for a missing one, rule reason) of every row."""
        params: SourcePolicyParams = self.params
        sources = combined(table.column(source_column(self.spec, params))).cast(pa.string())
        licences = combined(table.column(params.licence_field)) if params.licence_field else None
        named = pc.if_else(pc.fill_null(pc.equal(sources, ""), True), NONE, sources)
        return named, rule_reason_array(sources, licences, params)

    # ---- count (map) -----------------------------------------------------------------------------

    def step_count(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        view = self.require_input(ctx)
        params: SourcePolicyParams = self.params
        names = stage_names(self.spec)

        def count(shard: int) -> dict[str, Any]:
            uni = view.universe(shard, self.columns())
            table = uni.table
            n = table.num_rows
            sources, reasons = self._rules(table)
            canonical = np.arange(n) < view.corpus.shard_rows(shard)
            alive = uni.alive
            facts = pa.table({"source": sources, "bytes": combined(table.column(BYTES)).cast(pa.int64()),
                              "at": pa.array(uni.rejected_at), "reason": pc.if_else(pa.array(alive), reasons, pa.nulls(n, pa.string()))})
            acct: dict[str, Any] = {}

            def tally(mask: np.ndarray, keys: list[str], docs: str, nbytes: str | None) -> None:
                part = facts.filter(pa.array(mask))
                if not part.num_rows:
                    return
                grouped = part.group_by(keys).aggregate([("bytes", "count"), ("bytes", "sum")])
                for row in grouped.to_pylist():
                    entry = acct.setdefault(row["source"], {"input_docs": 0, "input_bytes": 0})
                    if len(keys) == 1:
                        entry[docs] = entry.get(docs, 0) + row["bytes_count"]
                        if nbytes:
                            entry[nbytes] = entry.get(nbytes, 0) + row["bytes_sum"]
                    else:
                        key = names[row["at"]] if keys[1] == "at" else row["reason"]
                        sub = entry.setdefault(docs, {})
                        sub[key] = sub.get(key, 0) + row["bytes_count"]
                        if nbytes:
                            entry[nbytes] = entry.get(nbytes, 0) + row["bytes_sum"]

            tally(canonical, ["source"], "input_docs", "input_bytes")
            tally(canonical & (uni.rejected_at >= 0), ["source", "at"], "removed", None)
            tally(alive, ["source"], "alive_docs", "alive_bytes")
            has_reason = np.asarray(pc.is_valid(facts.column("reason")).to_numpy(zero_copy_only=False), bool)
            tally(has_reason, ["source", "reason"], "removed_here", "removed_here_bytes")
            limited = [s for s in set(pc.unique(sources).to_pylist()) if capped(params, s)]
            keep = alive & ~has_reason & np.asarray(
                pc.is_in(sources, value_set=pa.array(limited, pa.string())).to_numpy(zero_copy_only=False), bool)
            hist = HIST_SCHEMA.empty_table()
            if keep.any():
                sub = table.filter(pa.array(keep))
                hist = aggregate(pa.table({
                    "source": sources.filter(pa.array(keep)),
                    "bin": pa.array(hash_bins(sub.column(ID), params.seed), pa.int64()),
                    "docs": pa.array(np.ones(int(keep.sum()), np.int64)),
                    "bytes": combined(sub.column(BYTES)).cast(pa.int64()),
                }, schema=HIST_SCHEMA))
            write_table_atomic(self.hist_file(ctx, f"s{shard:05d}"), hist)
            return {"extra": {"accounting": acct}}

        self.map_shards(ctx, rank, world_size, count)
        acct: dict[str, Any] = {}
        hists = []
        for shard in ctx.shards_for(rank, world_size):
            done = self.shard_done(ctx, shard) or {}
            add_nested(acct, done.get("extra", {}).get("accounting", {}))
            hists.append(read_table(self.hist_file(ctx, f"s{shard:05d}")))
        ctx.scratch.join("acct", f"r{rank:05d}.json").write_json_atomic(acct)
        write_table_atomic(self.hist_file(ctx, f"r{rank:05d}"), aggregate(pa.concat_tables(hists)) if hists
                           else HIST_SCHEMA.empty_table())
        return StageStats().to_dict()

    def hist_file(self, ctx: StepContext, name: str) -> Location:
        return ctx.scratch.join("hist", f"{name}.parquet")

    # ---- select (global) --------------------------------------------------------------------------

    def step_select(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        stats = StageStats()
        params: SourcePolicyParams = self.params
        ranks = ctx.peer("count").world_size
        acct: dict[str, Any] = {}
        merged = HIST_SCHEMA.empty_table()
        for r in range(ranks):
            loc = ctx.scratch.join("acct", f"r{r:05d}.json")
            if not loc.exists():
                raise StepError(f"{loc.path}: missing (did the count step finish?)")
            add_nested(acct, loc.read_json())
            merged = aggregate(pa.concat_tables([merged, read_table(self.hist_file(ctx, f"r{r:05d}"))]))
        cutoffs: dict[str, int] = {}
        cap_removed: Counter[str] = Counter()
        cap_bytes: Counter[str] = Counter()
        for src in sorted(set(merged.column("source").to_pylist())):
            part = merged.filter(pc.equal(merged.column("source"), src))
            bins, docs, nbytes = (part.column(c).to_numpy() for c in ("bin", "docs", "bytes"))
            rule = params.rule(src)
            cut = cutoff_bin(bins, docs, nbytes, rule.max_docs, rule.max_bytes)
            cutoffs[src] = cut
            cap_removed[src] = int(docs[bins >= cut].sum())
            cap_bytes[src] = int(nbytes[bins >= cut].sum())
        ctx.scratch.join("select.json").write_json_atomic({"cutoffs": cutoffs})
        table = source_table(acct, cap_removed, cap_bytes, params)
        stats.extra = {"sources": table, "mixture": mixture(table, params)}
        guard(table, params, self.name)
        return stats.to_dict()

    # ---- filter (map) -----------------------------------------------------------------------------

    def step_filter(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        params: SourcePolicyParams = self.params
        decision = ctx.scratch.join("select.json")
        if not decision.exists():
            raise StepError(f"{decision.path}: missing (did the select step finish?)")
        cutoffs: dict[str, int] = decision.read_json()["cutoffs"]
        view = self.require_input(ctx)

        def split(shard: int) -> dict[str, Any]:
            table = view.read_shard(shard, self.columns())
            sources, rule = self._rules(table)
            uniq = pc.unique(sources)
            where = pc.index_in(sources, value_set=uniq)
            names = uniq.to_pylist()
            weights = pa.array([params.rule(src).weight for src in names], pa.float32()).take(where)
            cut = pa.array([cutoffs.get(src, 1 << BIN_BITS) for src in names], pa.int64()).take(where)
            cut_np = np.asarray(cut.to_numpy(zero_copy_only=False), np.int64)
            eligible = np.asarray(pc.is_null(rule).to_numpy(zero_copy_only=False), bool) & (cut_np < 1 << BIN_BITS)
            reasons = rule
            if eligible.any():
                rows = np.flatnonzero(eligible)
                bins = hash_bins(table.column(ID).take(pa.array(rows, pa.int64())), params.seed)
                over = np.zeros(table.num_rows, bool)
                over[rows[bins >= cut_np[rows]]] = True
                reasons = pc.if_else(pa.array(over), pa.scalar("source:cap"), rule)
            out = table.select(["_row", BYTES]).append_column(WEIGHT, weights)
            return self.write_split(ctx, shard, out, reasons.to_pylist())

        return self.map_shards(ctx, rank, world_size, split).to_dict()


def aggregate(hist: pa.Table) -> pa.Table:
    if not hist.num_rows:
        return HIST_SCHEMA.empty_table()
    grouped = hist.group_by(["source", "bin"]).aggregate([("docs", "sum"), ("bytes", "sum")])
    return grouped.select(["source", "bin", "docs_sum", "bytes_sum"]).rename_columns(HIST_SCHEMA.names).cast(HIST_SCHEMA)


def source_table(acct: dict[str, Any], cap_removed: Counter[str], cap_bytes: Counter[str],
                 params: SourcePolicyParams) -> dict[str, Any]:
    """Per source: in, removed by each stage before this one and by this one, kept, loss."""
    out: dict[str, Any] = {}
    for src in sorted(acct):
        a = acct[src]
        here = dict(a.get("removed_here", {}))
        if cap_removed[src]:
            here["source:cap"] = cap_removed[src]
        alive, alive_bytes = int(a.get("alive_docs", 0)), int(a.get("alive_bytes", 0))
        kept = alive - sum(here.values())
        kept_bytes = alive_bytes - int(a.get("removed_here_bytes", 0)) - cap_bytes[src]
        inp = int(a.get("input_docs", 0))
        out[src] = {
            "input_docs": inp,
            "input_bytes": int(a.get("input_bytes", 0)),
            "removed_before": dict(sorted(a.get("removed", {}).items())),
            "alive_docs": alive,
            "removed_here": dict(sorted(here.items())),
            "kept_docs": kept,
            "kept_bytes": kept_bytes,
            "loss": round(1 - kept / inp, 4) if inp else 0.0,
            "weight": params.rule(src).weight,
        }
    return out


def mixture(table: dict[str, Any], params: SourcePolicyParams) -> dict[str, float]:
    """Each source's share of the weighted mixture (weight x kept bytes, normalised)."""
    weighted = {s: row["weight"] * row["kept_bytes"] for s, row in table.items()}
    total = sum(weighted.values())
    return {s: round(w / total, 4) for s, w in weighted.items()} if total else {}


def guard(table: dict[str, Any], params: SourcePolicyParams, stage: str) -> None:
    """`maxSourceLoss`: fail, naming every source over the limit and what removed its documents."""
    if params.max_source_loss is None:
        return
    over = []
    for src, row in table.items():
        if row["input_docs"] and row["loss"] > params.max_source_loss:
            here = row["removed_here"]
            if any(here.get(r) for r in EXEMPT):
                continue
            causes = {**row["removed_before"], **{f"{stage} ({k})": v for k, v in here.items()}}
            detail = ", ".join(f"{k} {v:,}" for k, v in sorted(causes.items(), key=lambda kv: -kv[1]))
            over.append(f"source '{src}' lost {row['loss']:.1%} of its documents ({row['input_docs']:,} in -> "
                        f"{row['kept_docs']:,} kept; removed by {detail or 'nothing'})")
    if over:
        raise SourceLossError(
            f"stage {stage}: {'; '.join(over)}; maxSourceLoss is {params.max_source_loss:.1%} — check the stages "
            "named, or raise params.maxSourceLoss"
        )

