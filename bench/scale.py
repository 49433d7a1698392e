"""Scale benchmark: every step of a pipeline at growing corpus sizes, one subprocess per rank.

    python bench/scale.py generate --docs 1000000 --out /data/c1m          # corpus + ground truth
    python bench/scale.py run --docs 100000 1000000 --workdir /data/scale  # generate, run, measure
    python bench/scale.py show results.json [more.json ...]                # the tables again

`run` generates (or reuses) a synthetic corpus per size (`scale_corpus.py`: Zipfian text, planted
exact and near duplicates with known Jaccard, planted junk), writes a spec from a template
(default `examples/quickstart.yaml`, input and output paths replaced), and runs each step of the
plan in order, each rank as `thresher worker --spec S --step ID --rank R --world-size W`, up to
`--parallelism` ranks at once. The steps come from `curation.plan.plan_steps` at run time, so the
benchmark follows the engine as its steps change. `curation/` is copied to <workdir>/engine at the
start and every step runs that copy (`--live-engine`: the working tree as it changes).

Measured per step: CPU seconds (user + system of each worker, `wait4` in a small shim), wall
seconds, peak RSS per rank, bytes and files written under the output folder (a walk before and
after), and the peak size of `<output>/_work` (sampled while the step runs). Per run: totals, text MB per CPU-second, and the
dedup quality on the planted pairs (recall, precision) plus what the heuristic filter did to
junk and to clean documents. Across sizes: the log-log slope of each quantity against N.

The numbers go to a table on stdout and to JSON (`--json`, default bench/results/scale-<date>.json).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scale_corpus as corpus  # bench/ is on sys.path when this file runs as a script
import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = REPO / "examples" / "quickstart.yaml"
POLL_SECONDS = 0.05
MB = 1e6

# Each rank runs under this shim, which forks the worker, waits for it and writes the worker's own
# rusage to argv[1]. Why not wait4 on the worker directly: Linux records, at exec, the high-water
# RSS of the address space being replaced into the new program's ru_maxrss. A worker forked from
# this driver (hundreds of MB after generating a corpus) would report at least the driver's RSS.
# Forked from the shim (a bare interpreter, -I -S: ~10 MB), the worker's ru_maxrss is its own.
# The shim passes SIGTERM on, so stopping a step stops its workers.
RUSAGE_SHIM = r"""
import json, os, signal, sys
out, cmd = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))
_, status, ru = os.wait4(pid, 0)
with open(out, "w") as f:
    json.dump({"status": status, "utime": ru.ru_utime, "stime": ru.ru_stime, "maxrss": ru.ru_maxrss}, f)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


class BenchError(Exception):
    """A failure the benchmark reports in one clear message (and stops)."""


# ---- file-tree measurements --------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of every file below root."""
    out: dict[str, tuple[int, int]] = {}
    if not root.exists():
        return out
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:  # removed while we walked (a temporary file renamed)
                continue
            out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return out


def tree_bytes(root: Path) -> int:
    total = 0
    stack = [str(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    total += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
    return total


def written(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Files new or changed between two snapshots (and the net change, which deletions lower)."""
    changed = [k for k, v in after.items() if before.get(k) != v]
    return {
        "bytes_written": sum(after[k][0] for k in changed),
        "files_written": len(changed),
        "bytes_net": sum(v[0] for v in after.values()) - sum(v[0] for v in before.values()),
        "files_net": len(after) - len(before),
    }


# ---- running one step ------------------------------------------------------------------------------


def thresher_command() -> list[str]:
    """The `thresher` entry point of this interpreter's environment, else `python -m curation.cli`
    (-P: the working directory must not shadow a frozen engine on PYTHONPATH)."""
    beside = Path(sys.executable).with_name("thresher")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("thresher")
    return [found] if found else [sys.executable, "-P", "-m", "curation.cli"]


def freeze_engine(workdir: Path) -> dict[str, Any]:
    """Copy `curation/` as it is now (uncommitted edits included) to <workdir>/engine and put it
    first on the import path of this process and of every worker. A run at 1M documents takes
    half an hour; without the copy, edits landing meanwhile make later steps run other code than
    earlier ones (seen: a step list or a spec fingerprint that changed between two steps)."""
    dest = workdir / "engine"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(REPO / "curation", dest / "curation", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    digest = hashlib.sha256()
    for path in sorted((dest / "curation").rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(dest)).encode() + b"\0" + path.read_bytes())
    if "curation" in sys.modules:
        raise BenchError("curation was imported before the engine was frozen")
    sys.path.insert(0, str(dest))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(dest), os.environ.get("PYTHONPATH")) if p)
    import curation

    if not Path(curation.__file__).resolve().is_relative_to(dest.resolve()):
        raise BenchError(f"the frozen engine is shadowed: curation imports from {curation.__file__}")
    return {"frozen": True, "path": str(dest), "digest": digest.hexdigest()[:16]}


@dataclass
class Rank:
    rank: int
    proc: subprocess.Popen[bytes]
    started: float
    logs: dict[str, Path]


@dataclass
class StepRun:
    step_id: str
    world_size: int
    spec: Path
    output: Path
    logs: Path
    parallelism: int
    ranks: list[dict[str, Any]] = field(default_factory=list)
    work_peak: int = 0

    def launch(self, rank: int) -> Rank:
        safe = self.step_id.replace("/", "_")
        logs = {k: self.logs / f"{safe}.r{rank}.{k}" for k in ("out", "err", "term", "rusage")}
        worker = [*thresher_command(), "worker", "--spec", str(self.spec), "--step", self.step_id,
                  "--rank", str(rank), "--world-size", str(self.world_size)]
        cmd = [sys.executable, "-I", "-S", "-c", RUSAGE_SHIM, str(logs["rusage"]), *worker]
        # Through the environment, not flags: unknown variables never break a changed CLI.
        # Metrics off: concurrent ranks would fight over one port.
        env = {**os.environ, "THRESHER_METRICS_PORT": "0", "THRESHER_TERMINATION_LOG": str(logs["term"])}
        with open(logs["out"], "wb") as out, open(logs["err"], "wb") as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO)
        return Rank(rank, proc, time.monotonic(), logs)

    def reap(self, r: Rank, status: int, usage: Any) -> dict[str, Any]:
        wall = time.monotonic() - r.started
        code = os.waitstatus_to_exitcode(status)
        r.proc.returncode = code  # reaped by wait4: Popen must not wait for it again
        stats: Any = None
        with contextlib.suppress(OSError, ValueError):  # no or unreadable termination message
            stats = json.loads(r.logs["term"].read_text())
        # The worker's own rusage, from the shim; without it (the shim itself failed), the shim's
        # (its CPU includes the worker's, its RSS is not the worker's alone).
        user, system, rss = usage.ru_utime, usage.ru_stime, usage.ru_maxrss
        with contextlib.suppress(OSError, ValueError, KeyError):
            own = json.loads(r.logs["rusage"].read_text())
            user, system, rss = own["utime"], own["stime"], own["maxrss"]
        return {
            "rank": r.rank,
            "rc": code,
            "cpu_s": round(user + system, 3),
            "user_s": round(user, 3),
            "sys_s": round(system, 3),
            "wall_s": round(wall, 3),
            "max_rss_kib": int(rss),  # KiB on Linux
            "stats": stats,
        }

    def run(self) -> str | None:
        """All ranks, at most `parallelism` at once, _work sampled while they run. On the first
        failing rank the others are stopped; returns what went wrong (None: all succeeded)."""
        pending, running = list(range(self.world_size)), {}
        work = self.output / "_work"
        self.work_peak = tree_bytes(work)
        next_sample, interval = time.monotonic(), 0.5
        failed: dict[str, Any] | None = None
        while pending or running:
            while pending and failed is None and len(running) < self.parallelism:
                r = self.launch(pending.pop(0))
                running[r.proc.pid] = r
            time.sleep(POLL_SECONDS)
            for pid, r in list(running.items()):
                got, status, usage = os.wait4(pid, os.WNOHANG)
                if got == 0:
                    continue
                del running[pid]
                result = self.reap(r, status, usage)
                self.ranks.append(result)
                if result["rc"] != 0 and failed is None:
                    failed = {**result, "logs": r.logs}
                    pending.clear()
                    for other in running.values():  # our own children, by pid
                        os.kill(other.proc.pid, signal.SIGTERM)
            if time.monotonic() >= next_sample:
                t = time.monotonic()
                self.work_peak = max(self.work_peak, tree_bytes(work))
                # A walk of a big _work costs time: sample at most ~5% of the time.
                interval = min(10.0, max(0.5, 20 * (time.monotonic() - t)))
                next_sample = time.monotonic() + interval
        self.work_peak = max(self.work_peak, tree_bytes(work))
        return describe_failure(self.step_id, failed) if failed is not None else None


def describe_failure(step_id: str, failed: dict[str, Any]) -> str:
    err = failed["logs"]["err"]
    try:
        tail = err.read_text(errors="replace").strip().splitlines()[-25:]
    except OSError:
        tail = []
    body = "\n".join("    " + line for line in tail) or "    (no stderr)"
    return (f"step {step_id} rank {failed['rank']} failed with exit code {failed['rc']}; "
            f"stderr tail:\n{body}\n  logs: {err.parent}")


def run_step(step: Any, spec: Path, output: Path, logs: Path, parallelism: int, text_bytes: int) -> dict[str, Any]:
    before = snapshot(output)
    started = time.monotonic()
    run = StepRun(step.id, step.world_size, spec, output, logs, parallelism)
    error = run.run()
    wall = time.monotonic() - started
    after = snapshot(output)
    cpu = sum(r["cpu_s"] for r in run.ranks)
    work_after = sum(v[0] for k, v in after.items() if k.split(os.sep, 1)[0] == "_work")
    return {
        "id": step.id,
        "kind": str(getattr(step, "kind", "")),
        "world_size": step.world_size,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "peak_rss_kib": max((r["max_rss_kib"] for r in run.ranks), default=0),
        **written(before, after),
        "work_bytes_after": work_after,
        "work_peak_bytes": run.work_peak,
        "text_mb_per_cpu_s": round(text_bytes / MB / cpu, 3) if cpu > 0 else None,
        "docs_out": _docs_out(run.ranks),
        "ranks": sorted(run.ranks, key=lambda r: r["rank"]),
        "error": error,
    }


def _docs_out(ranks: list[dict[str, Any]]) -> int | None:
    counts = [r["stats"].get("docs_out") for r in ranks if isinstance(r.get("stats"), dict)]
    return sum(int(c) for c in counts if c is not None) if counts and None not in counts else None


# ---- one size ---------------------------------------------------------------------------------------


def write_spec(template: Path, corpus_dir: Path, output: Path, parallelism: int, path: Path) -> dict[str, Any]:
    """The template with input/output replaced; works for a CurationJob or a bare pipeline spec."""
    doc = yaml.safe_load(template.read_text())
    spec = doc["spec"] if isinstance(doc.get("spec"), dict) else doc
    spec["input"] = {**spec.get("input", {}), "path": str(corpus_dir), "format": "parquet",
                     "textField": "text", "idField": "doc_id"}
    spec["output"] = {**spec.get("output", {}), "path": str(output)}
    spec["parallelism"] = parallelism
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return spec


def run_size(args: argparse.Namespace, docs: int) -> dict[str, Any]:
    from curation.plan import plan_steps
    from curation.spec import load_spec

    work = Path(args.workdir).resolve()
    corpus_dir = work / f"corpus-{docs}"
    print(f"\n== N = {docs:,}: corpus {corpus_dir}", flush=True)
    manifest = corpus.generate(corpus_dir, docs, seed=args.seed, workers=args.gen_workers)
    cstats = manifest["stats"]
    print(f"   {cstats['text_bytes'] / MB:,.1f} MB of text, {cstats['parquet_bytes'] / MB:,.1f} MB Parquet in "
          f"{manifest['params']['files']} files (generated in {manifest['seconds']:.1f}s)", flush=True)
    output, logs = work / f"out-{docs}", work / f"logs-{docs}"
    for old in (output, logs):
        shutil.rmtree(old, ignore_errors=True)  # a fresh run: a rerun would skip finished ranks
    logs.mkdir(parents=True)
    spec_path = work / f"spec-{docs}.yaml"
    spec_doc = write_spec(Path(args.spec), corpus_dir, output, args.parallelism, spec_path)
    steps = plan_steps(load_spec(str(spec_path)))
    result: dict[str, Any] = {"docs": docs, "corpus": manifest, "spec": str(spec_path), "output": str(output),
                              "steps": [], "error": None}
    started = time.monotonic()
    for step in steps:
        print(f"   {step.id:<32} x{step.world_size} ...", end="", flush=True)
        rec = run_step(step, spec_path, output, logs, args.parallelism, cstats["text_bytes"])
        result["steps"].append(rec)
        if rec["error"]:
            print(" FAILED", flush=True)
            result["error"] = rec["error"]
            return result
        print(f" {rec['cpu_s']:8.1f} CPU-s {rec['wall_s']:7.1f} s {rec['peak_rss_kib'] / 1024:7.0f} MB RSS",
              flush=True)
    result["totals"] = totals(result["steps"], cstats, time.monotonic() - started, output)
    try:
        result["quality"] = quality(output, corpus_dir, docs, spec_doc)
    except Exception as err:  # the output format changed: keep the measurements anyway
        result["quality"] = {"error": f"{type(err).__name__}: {err}"}
    if not args.keep_output:
        shutil.rmtree(output, ignore_errors=True)
    return result


def totals(steps: list[dict[str, Any]], cstats: dict[str, int], wall: float, output: Path) -> dict[str, Any]:
    cpu = sum(s["cpu_s"] for s in steps)
    return {
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "input_parquet_bytes": cstats["parquet_bytes"],
        "input_text_bytes": cstats["text_bytes"],
        "work_bytes_end": tree_bytes(output / "_work"),
        "work_bytes_peak": max((s["work_peak_bytes"] for s in steps), default=0),
        "output_bytes_end": tree_bytes(output),
        "files_written": sum(s["files_written"] for s in steps),
        "bytes_written": sum(s["bytes_written"] for s in steps),
        "peak_rss_kib": max((s["peak_rss_kib"] for s in steps), default=0),
        "text_mb_per_cpu_s": round(cstats["text_bytes"] / MB / cpu, 3) if cpu else None,
        "docs_per_cpu_s": round(cstats["docs"] / cpu, 1) if cpu else None,
    }


# ---- dedup quality against the planted truth ----------------------------------------------------

KEPT, DEDUP, OTHER = 0, 1, 2  # what happened to each document


def read_rejected(output: Path) -> pa.Table:
    """doc_id, stage, reason (and dup_of when present) of every rejected row."""
    root = output / "rejected"
    files = [p for p in sorted(root.rglob("*.parquet"))
             if not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts)]
    tables = []
    for path in files:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        missing = [c for c in ("doc_id", "stage", "reason") if c not in names]
        if missing:
            raise BenchError(f"{path}: rejected rows lack column(s) {', '.join(missing)}")
        t = pf.read(columns=[c for c in ("doc_id", "stage", "reason", "dup_of") if c in names])
        if "dup_of" not in names:
            t = t.append_column("dup_of", pa.nulls(t.num_rows, pa.string()))
        tables.append(t.select(["doc_id", "stage", "reason", "dup_of"]).cast(
            pa.schema([(c, pa.string()) for c in ("doc_id", "stage", "reason", "dup_of")])))
    empty = pa.schema([(c, pa.string()) for c in ("doc_id", "stage", "reason", "dup_of")]).empty_table()
    return pa.concat_tables(tables) if tables else empty


def id_index(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Corpus index of generated ids ('d' + 9 digits); -1 for any other id (e.g. synthetic rows)."""
    ok = pc.match_substring_regex(ids, r"^d[0-9]{9}$").to_numpy(zero_copy_only=False)
    out = np.full(len(ids), -1, dtype=np.int64)
    if ok.any():
        digits = pc.utf8_slice_codeunits(pc.filter(ids, pa.array(ok)), 1)
        out[ok] = pc.cast(digits, pa.int64()).to_numpy(zero_copy_only=False)
    return out


def quality(output: Path, corpus_dir: Path, docs: int, spec_doc: dict[str, Any]) -> dict[str, Any]:
    dups, junk = corpus.read_truth(corpus_dir)
    rej = read_rejected(output)
    idx = id_index(rej.column("doc_id"))
    reason = np.array(rej.column("reason").to_pylist(), dtype=object)
    stage = np.array(rej.column("stage").to_pylist(), dtype=object)
    is_dup = np.array([isinstance(r, str) and r.endswith("duplicate") for r in reason], dtype=bool)
    fate = np.zeros(docs, dtype=np.int8)
    fate[idx[idx >= 0]] = np.where(is_dup, DEDUP, OTHER)[idx >= 0]
    # Non-dedup removals by a stage before the last dedup stage hide a pair from dedup: such pairs
    # are not scored. Removals by later stages (the quickstart's heuristic filter) do not.
    order = [s.get("name") or s.get("type") for s in spec_doc.get("stages", [])]
    dedup_stages = {s for s, d in zip(stage, is_dup, strict=True) if d}
    last_dedup = max((order.index(s) for s in dedup_stages if s in order), default=-1)
    early = np.zeros(docs, dtype=bool)
    early_rows = (~is_dup) & (idx >= 0) & np.array([order.index(s) < last_dedup if s in order else False
                                                    for s in stage], dtype=bool)
    early[idx[early_rows]] = True

    copy = id_index(dups.column("doc_id"))
    orig = id_index(dups.column("original_id"))
    kind = np.array(dups.column("kind").to_pylist(), dtype=object)
    jacc = dups.column("jaccard").to_numpy()
    family = np.arange(docs)
    family[copy] = orig
    fam_size = np.bincount(family, minlength=docs)
    # A family (original + its copies) is deduplicated right when at least one member survives dedup.
    fam_survivor = np.bincount(family[fate != DEDUP], minlength=docs) > 0

    def recall(mask: np.ndarray) -> dict[str, Any]:
        c, o = copy[mask], orig[mask]
        scored = ~(early[c] | early[o])
        found = ((fate[c] == DEDUP) | (fate[o] == DEDUP)) & fam_survivor[o]
        n = int(scored.sum())
        return {"pairs": int(mask.sum()), "scored": n, "found": int((found & scored).sum()),
                "recall": round(float((found & scored).sum()) / n, 4) if n else None}

    result: dict[str, Any] = {"exact": recall(kind == "exact"), "near": recall(kind == "near")}
    result["near_by_jaccard"] = near_bins(kind, jacc, recall, spec_doc)
    dup_of_idx = id_index(rej.column("dup_of").fill_null(""))
    for name, reason_name in (("exact", "exact-duplicate"), ("near", "near-duplicate")):
        rows = (reason == reason_name) & (idx >= 0)
        d = idx[rows]
        related = fam_size[family[d]] >= 2
        has_dup_of = dup_of_idx[rows] >= 0
        # With dup_of: right when the survivor it points to is of the same planted family.
        same = np.where(has_dup_of, family[np.maximum(dup_of_idx[rows], 0)] == family[d], related)
        n = int(rows.sum())
        result[name].update({
            "removed": n,
            "removed_planted": int(same.sum()),
            "removed_unrelated": int((~related).sum()),
            "precision": round(float(same.sum()) / n, 4) if n else None,
            "precision_basis": "dup_of" if has_dup_of.any() else "family",
        })
    result["heuristics"] = heuristics(junk, fate, idx, reason, is_dup, family, fam_size, docs)
    return result


def near_bins(kind: np.ndarray, jacc: np.ndarray, recall: Any, spec_doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Near-pair recall per Jaccard bin, next to the LSH S-curve 1-(1-J^r)^b of the spec's MinHash."""
    bands, rows = 14, 8
    for s in spec_doc.get("stages", []):
        if s.get("type") == "minhash-dedup":
            p = s.get("params") or {}
            bands, rows = int(p.get("bands", bands)), int(p.get("rowsPerBand", rows))
    out = []
    edges = [0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mask = (kind == "near") & (jacc >= lo) & (jacc < hi)
        if not mask.any():
            continue
        r = recall(mask)
        theory = float(np.mean(1 - (1 - jacc[mask] ** rows) ** bands))
        out.append({"bin": f"{lo:.1f}-{hi:.1f}", **r, "lsh_theory": round(theory, 4)})
    return out


def heuristics(junk: pa.Table, fate: np.ndarray, idx: np.ndarray, reason: np.ndarray, is_dup: np.ndarray,
               family: np.ndarray, fam_size: np.ndarray, docs: int) -> dict[str, Any]:
    """Junk removed (by kind), and clean documents removed by a non-dedup stage (by reason)."""
    junk_idx = id_index(junk.column("doc_id"))
    junk_kind = np.array(junk.column("junk").to_pylist(), dtype=object)
    by_kind = {}
    for k in corpus.JUNK_KINDS:
        m = junk_idx[junk_kind == k]
        by_kind[k] = {"planted": len(m), "removed": int((fate[m] != KEPT).sum())}
    clean = np.ones(docs, dtype=bool)
    clean[junk_idx] = False
    clean_removed_rows = (~is_dup) & (idx >= 0)
    clean_removed_rows[clean_removed_rows] = clean[idx[clean_removed_rows]]
    reasons: dict[str, int] = {}
    for r in reason[clean_removed_rows]:
        reasons[str(r)] = reasons.get(str(r), 0) + 1
    n_clean = int(clean.sum())
    removed_other = int(clean_removed_rows.sum())
    return {
        "junk": by_kind,
        "junk_removed_frac": round(sum(v["removed"] for v in by_kind.values()) / max(1, len(junk_idx)), 4),
        "clean_docs": n_clean,
        "clean_removed_by_filters": removed_other,
        "clean_kept_frac": round(1 - removed_other / max(1, n_clean), 4),
        "clean_removal_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:10]),
    }


# ---- across sizes ---------------------------------------------------------------------------------

SLOPE_FIELDS = ("cpu_s", "wall_s", "peak_rss_kib", "bytes_written", "files_written", "work_peak_bytes")


def slope_report(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Slopes over all finished sizes and, from three sizes on, between the largest two (start-up
    costs flatten the small sizes, so the largest two show the asymptotic growth best)."""
    done = sorted((r for r in runs if r.get("totals")), key=lambda r: r["docs"])
    out = {}
    if len(done) >= 2:
        out["all_sizes"] = slopes(done)
    if len(done) >= 3:
        out["largest_two"] = slopes(done[-2:])
    return out


def slopes(done: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Least-squares slope of log(quantity) on log(N), per step and for the totals (1 = linear)."""
    out: dict[str, dict[str, float | None]] = {}
    step_ids = [s["id"] for s in done[-1]["steps"]]
    for sid in [*step_ids, "TOTAL"]:
        points: dict[str, list[tuple[float, float]]] = {f: [] for f in SLOPE_FIELDS}
        for r in done:
            rec = r["totals"] if sid == "TOTAL" else next((s for s in r["steps"] if s["id"] == sid), None)
            if rec is None:
                continue
            for f in SLOPE_FIELDS:
                value = rec.get({"work_peak_bytes": "work_bytes_peak"}.get(f, f) if sid == "TOTAL" else f)
                if value and value > 0:
                    points[f].append((math.log(r["docs"]), math.log(value)))
        out[sid] = {f: _fit(p) for f, p in points.items()}
    return out


def _fit(points: list[tuple[float, float]]) -> float | None:
    xs = {x for x, _ in points}
    if len(xs) < 2:
        return None
    x, y = np.array(points).T
    return round(float(np.polyfit(x, y, 1)[0]), 3) + 0.0  # + 0.0: no "-0.000"


# ---- printing -----------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in cells:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return "\n".join(out)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def describe_run(r: dict[str, Any]) -> str:
    text_mb = r["corpus"]["stats"]["text_bytes"] / MB
    rows = [[s["id"], s["world_size"], s["cpu_s"], s["wall_s"], s["peak_rss_kib"] / 1024, s["bytes_written"] / MB,
             s["files_written"], s["work_peak_bytes"] / MB, s["text_mb_per_cpu_s"]] for s in r["steps"]]
    parts = [f"N = {r['docs']:,} documents, {text_mb:,.1f} MB of text"]
    if r["steps"]:
        parts.append(table(["step", "ranks", "CPU s", "wall s", "peak RSS MB", "written MB", "files",
                            "_work peak MB", "text MB/CPU-s"], rows))
    if r.get("error"):
        parts.append("FAILED: " + r["error"])
        return "\n".join(parts)
    t = r["totals"]
    parts.append(
        f"total: {t['cpu_s']:,.1f} CPU-s, {t['wall_s']:,.1f} s wall, {t['text_mb_per_cpu_s']} text MB/CPU-s, "
        f"{t['docs_per_cpu_s']:,} docs/CPU-s; input {t['input_parquet_bytes'] / MB:,.1f} MB Parquet; "
        f"_work peak {t['work_bytes_peak'] / MB:,.1f} MB, at end {t['work_bytes_end'] / MB:,.1f} MB; "
        f"written {t['bytes_written'] / MB:,.1f} MB in {t['files_written']:,} files; "
        f"peak RSS {t['peak_rss_kib'] / 1024:,.0f} MB")
    q = r["quality"]
    if "error" in q:
        parts.append(f"quality not scored: {q['error']}")
        return "\n".join(parts)
    rows = [[k, q[k]["pairs"], q[k]["scored"], q[k]["found"], q[k]["recall"], q[k]["removed"],
             q[k]["removed_unrelated"], q[k]["precision"]] for k in ("exact", "near")]
    parts.append(table(["planted", "pairs", "scored", "found", "recall", "removed (reason)", "unrelated",
                        "precision"], rows))
    bins = q["near_by_jaccard"]
    if bins:
        parts.append("near recall by Jaccard (found / LSH theory): " + ", ".join(
            f"{b['bin']}: {_cell(b['recall'])}/{b['lsh_theory']:.2f} (n={b['pairs']})" for b in bins))
    h = q["heuristics"]
    junk = ", ".join(f"{k} {v['removed']}/{v['planted']}" for k, v in h["junk"].items())
    reasons = ", ".join(f"{k} {v}" for k, v in h["clean_removal_reasons"].items()) or "none"
    parts.append(f"junk removed: {h['junk_removed_frac']:.1%} ({junk}); clean documents kept by the filters: "
                 f"{h['clean_kept_frac']:.2%} (removed: {reasons})")
    return "\n".join(parts)


def describe_slopes(report: dict[str, dict[str, dict[str, float | None]]], sizes: list[int]) -> str:
    parts = []
    for key, title in (("all_sizes", "all sizes"), ("largest_two", "the largest two sizes")):
        if key not in report:
            continue
        over = sizes if key == "all_sizes" else sizes[-2:]
        rows = [[sid, *(v.get(f) for f in SLOPE_FIELDS)] for sid, v in report[key].items()]
        parts.append(f"log-log slope against N over {title} ({', '.join(f'{n:,}' for n in over)}; "
                     "1 = linear, 0 = flat):\n"
                     + table(["step", "CPU s", "wall s", "peak RSS", "bytes", "files", "_work peak"], rows))
    return "\n\n".join(parts)


# ---- commands -------------------------------------------------------------------------------------


def cmd_generate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    manifest = corpus.generate(out, args.docs, seed=args.seed, files=args.files, workers=args.workers,
                               progress=True)
    s = manifest["stats"]
    secs = max(manifest["seconds"], 1e-9)
    print(f"{out}: {s['docs']:,} documents in {manifest['params']['files']} files; "
          f"{s['text_bytes'] / MB:,.1f} MB text, {s['parquet_bytes'] / MB:,.1f} MB Parquet; "
          f"planted {s.get('exact', 0):,} exact, {s.get('near', 0):,} near, {s.get('junk', 0):,} junk")
    print(f"generated in {manifest['seconds']:.1f}s wall, {manifest['cpu_seconds']:.1f} CPU-s: "
          f"{s['docs'] / secs:,.0f} docs/s, {s['text_bytes'] / MB / secs:,.1f} MB/s of text "
          "(0 s when an existing corpus was reused)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    json_path = Path(args.json or REPO / "bench" / "results" / f"scale-{datetime.date.today():%Y-%m-%d}.json")
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    engine = {"frozen": False, "path": str(REPO / "curation")} if args.live_engine else freeze_engine(work)
    report: dict[str, Any] = {"meta": {**meta(args), "engine": engine}, "runs": [], "slopes": {}}
    failed = False
    for docs in sorted(set(args.docs)):
        run = run_size(args, docs)
        report["runs"].append(run)
        report["slopes"] = slope_report(report["runs"])
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1))  # after every size: partial results survive
        print()
        print(describe_run(run))
        if run.get("error"):
            failed = True
            break
    if report["slopes"]:
        print()
        sizes = sorted(r["docs"] for r in report["runs"] if r.get("totals"))
        print(describe_slopes(report["slopes"], sizes))
    print(f"\nresults: {json_path}")
    if failed:
        print("stopped: a step failed (see above); fix it or rerun with another --spec", file=sys.stderr)
        return 1
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print the tables of saved results again (several files: their runs together, by size)."""
    runs = [run for path in args.json for run in json.loads(Path(path).read_text())["runs"]]
    runs.sort(key=lambda r: r["docs"])
    for run in runs:
        print(describe_run(run), end="\n\n")
    sizes = sorted(r["docs"] for r in runs if r.get("totals"))
    print(describe_slopes(slope_report(runs), sizes))
    return 0


def meta(args: argparse.Namespace) -> dict[str, Any]:
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, check=False).stdout
        except OSError:
            return ""

    commit = git("rev-parse", "HEAD").strip()
    # Uncommitted changes under curation/ at start: the commit alone does not name the code run.
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "curation").splitlines()]
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": commit,
        "uncommitted_engine_files": dirty,
        "spec_template": str(args.spec),
        "parallelism": args.parallelism,
        "seed": args.seed,
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
        "generator_version": corpus.GENERATOR_VERSION,
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write a synthetic corpus and its ground truth")
    g.add_argument("--docs", type=int, required=True)
    g.add_argument("--out", required=True, help="corpus folder (Parquet parts, _truth/, _corpus.json)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--files", type=int, default=None, help="Parquet files (default: ~256 MB each, at least 2)")
    g.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    g.set_defaults(func=cmd_generate)
    r = sub.add_parser("run", help="generate, run every step of the plan per size, measure")
    r.add_argument("--docs", type=int, nargs="+", required=True, help="corpus sizes, e.g. 100000 1000000")
    r.add_argument("--workdir", required=True, help="corpora, specs, outputs and logs go here")
    r.add_argument("--parallelism", type=int, default=2, help="spec parallelism and ranks run at once")
    r.add_argument("--spec", default=str(DEFAULT_SPEC), help="template spec (input/output paths replaced)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--gen-workers", type=int, default=None, help="generator processes (default: CPU count)")
    r.add_argument("--json", default=None, help="default: bench/results/scale-<date>.json")
    r.add_argument("--keep-output", action="store_true", help="keep each size's pipeline output folder")
    r.add_argument("--live-engine", action="store_true",
                   help="run the working tree's curation/ as it changes (default: a copy taken at start)")
    r.set_defaults(func=cmd_run)
    s = sub.add_parser("show", help="print the tables of saved results again")
    s.add_argument("json", nargs="+", help="results file(s) written by run")
    s.set_defaults(func=cmd_show)
    args = ap.parse_args(argv)
    try:
        return int(args.func(args))
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
