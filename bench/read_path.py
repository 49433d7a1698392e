"""Reading a shard's columns (`Corpus.read`, `CorpusView.read_shard` / `universe`), old against new.

    python bench/read_path.py --output /tmp/hB/out                 # 5 rounds, every workload
    python bench/read_path.py --output /tmp/hB/out --rounds 3 --workloads view-text,corpus-all

`--output` is a pipeline output folder whose ingest ran (input read in place) and, for the
`view-*` workloads, some stages after it (their decision files mask the rows they removed), e.g.
the quickstart pipeline run by `bench/scale.py` up to `heuristic-filter.filter`.

"old" is `curation/corpus.py` and `curation/dataset.py` as of BASE_COMMIT (read with `git show`,
loaded as separate modules); "new" is the working tree. Each workload reads every shard once, in
a fresh subprocess per variant and round (variants alternate, in a rotating order, so load from
other processes hits both alike), with the allocators tuned as `run_rank` tunes them
(`--default-allocators`: Arrow's and glibc's defaults). Figures: CPU seconds after the imports
(user + system of the process, Arrow's reader threads included) and the process's peak RSS
(`ru_maxrss`, the imports' ~100 MB included); medians over the rounds and the median of the
per-round new/old ratios. Before timing, both variants read every shard in one process and their
tables are compared (schema with metadata, values, order, chunks per column): any difference is
an error.

Workloads (every shard of the corpus):
    corpus-text   Corpus.read(shard, [text])              what the signature / filter steps read
    corpus-all    Corpus.read(shard)                      every column
    view-text     CorpusView(all stages).read_shard(shard, [text])
    view-all      CorpusView(all stages).read_shard(shard)          every column
    view-first    CorpusView(no stages).read_shard(shard, [text])   a first stage: nothing removed
    universe-all  CorpusView(all stages).universe(shard)  what finalize publishes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import types
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE_COMMIT = "826e817"  # the read path before batch-by-batch reads
VARIANTS = ("old", "new")
WORKLOADS = ("corpus-text", "corpus-all", "view-text", "view-all", "view-first", "universe-all")


def corpus_module(variant: str, base: str) -> types.ModuleType:
    from old_code import module_at

    if variant == "new":
        import curation.corpus

        return curation.corpus
    module_at(base, "_old_dataset", "curation/dataset.py")
    return module_at(base, "_old_corpus", "curation/corpus.py", ("from curation.dataset import", "from _old_dataset import"))


def stage_roots(work: Path) -> list[Path]:
    return sorted(p for p in work.iterdir() if p.is_dir() and p.name[:2].isdigit() and p.name[:3] != "00-"
                  and (p / "decisions").is_dir())


def reader(mod: types.ModuleType, output: Path, workload: str) -> tuple[int, Any]:
    work = output / "_work"
    corpus = mod.Corpus(mod.Location.of(str(work / "corpus")))
    stages = [mod.StageFiles(mod.Location.of(str(p))) for p in stage_roots(work)]
    view = mod.CorpusView(corpus, stages)
    first = mod.CorpusView(corpus, [])
    fns = {
        "corpus-text": lambda s: corpus.read(s, ["text"]),
        "corpus-all": lambda s: corpus.read(s),
        "view-text": lambda s: view.read_shard(s, ["text"]),
        "view-all": lambda s: view.read_shard(s),
        "view-first": lambda s: first.read_shard(s, ["text"]),
        "universe-all": lambda s: view.universe(s).table,
    }
    return corpus.num_shards, fns[workload]


def child(args: argparse.Namespace) -> None:
    if not args.default_allocators:
        from curation.memory import tune_allocators

        tune_allocators()  # as run_rank does
    mod = corpus_module(args.variant, args.base)
    shards, read = reader(mod, Path(args.output), args.workload)
    rows = 0
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for s in range(shards):
        table = read(s)
        rows += table.num_rows
        del table
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    print(json.dumps({"cpu_s": r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime,
                      "user_s": r1.ru_utime - r0.ru_utime, "sys_s": r1.ru_stime - r0.ru_stime,
                      "wall_s": wall, "peak_rss_mb": r1.ru_maxrss / 1024, "rss_before_mb": r0.ru_maxrss / 1024,
                      "rows": rows}))


def check(args: argparse.Namespace, workloads: list[str]) -> None:
    """Both variants' tables, shard by shard: identical or an error."""
    mods = {v: corpus_module(v, args.base) for v in VARIANTS}
    for w in workloads:
        (shards, old), (_, new) = (reader(mods[v], Path(args.output), w) for v in VARIANTS)
        for s in range(shards):
            a, b = old(s), new(s)
            same = (a.schema.equals(b.schema, check_metadata=True) and a.equals(b)
                    and [c.num_chunks for c in a.columns] == [c.num_chunks for c in b.columns])
            if not same:
                raise SystemExit(f"{w} shard {s}: the tables differ\nold {a.schema} {[c.num_chunks for c in a.columns]}"
                                 f"\nnew {b.schema} {[c.num_chunks for c in b.columns]}")
        print(f"  {w}: {shards} shards identical", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", required=True, help="pipeline output folder (with _work/)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--base", default=BASE_COMMIT, help="commit of the old read path")
    ap.add_argument("--default-allocators", action="store_true", help="do not tune the allocators")
    ap.add_argument("--json", default=None, help="write the results here too")
    ap.add_argument("--child", nargs=2, metavar=("VARIANT", "WORKLOAD"), help=argparse.SUPPRESS)
    ap.add_argument("--check-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    if args.child:
        args.variant, args.workload = args.child
        child(args)
        return 0
    if args.check_only:
        check(args, workloads)
        return 0
    print("checking that old and new give identical tables ...", flush=True)
    # In a subprocess: a child inherits the peak RSS of the process that starts it (Linux, at exec).
    subprocess.run([sys.executable, __file__, "--output", args.output, "--base", args.base, "--workloads",
                    args.workloads, "--check-only"], check=True)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {w: {v: [] for v in VARIANTS} for w in workloads}
    extra = ["--default-allocators"] if args.default_allocators else []
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    for r in range(args.rounds):
        for w in workloads:
            order = VARIANTS if (r + workloads.index(w)) % 2 == 0 else VARIANTS[::-1]
            for v in order:
                out = subprocess.run([sys.executable, __file__, "--output", args.output, "--base", args.base,
                                      *extra, "--child", v, w], check=True, capture_output=True, text=True, env=env)
                results[w][v].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  round {r + 1}/{args.rounds} done", flush=True)
    print(f"\n{'workload':<14}{'variant':>8}{'CPU-s':>8}{'user':>7}{'sys':>7}{'wall':>7}{'peak RSS MB':>13}"
          f"{'CPU new/old':>13}{'RSS new/old':>13}")
    summary: dict[str, Any] = {}
    for w in workloads:
        per = results[w]
        ratios = {k: median(n[k] / o[k] for o, n in zip(per["old"], per["new"], strict=True))
                  for k in ("cpu_s", "peak_rss_mb")}
        summary[w] = {"ratios": ratios, "runs": per}
        for v in VARIANTS:
            m = {k: median(x[k] for x in per[v]) for k in ("cpu_s", "user_s", "sys_s", "wall_s", "peak_rss_mb")}
            summary[w][v] = m
            tail = f"{ratios['cpu_s']:>13.2f}{ratios['peak_rss_mb']:>13.2f}" if v == "new" else ""
            print(f"{w:<14}{v:>8}{m['cpu_s']:>8.2f}{m['user_s']:>7.2f}{m['sys_s']:>7.2f}{m['wall_s']:>7.2f}"
                  f"{m['peak_rss_mb']:>13.0f}{tail}")
    if args.json:
        Path(args.json).write_text(json.dumps({"base": args.base, "output": args.output,
                                               "default_allocators": args.default_allocators,
                                               "results": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
