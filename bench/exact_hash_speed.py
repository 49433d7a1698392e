"""`exact-dedup.hash` speed, old against new, side by side in one run, with identical output.

    python bench/exact_hash_speed.py                                  # 100k documents (~275 MB), 3 rounds
    python bench/exact_hash_speed.py --docs 20000 --rounds 2 --modes full

"old" is `curation/stages/exact_dedup.py` and `exact_math.py` as of BASE_COMMIT (read with
`git show`, loaded as separate modules); "new" is the working tree. Everything else (the corpus
reader, the partition writer) is the working tree's for both, so the figures compare the stage's
own code.

The corpus is `bench/scale_corpus.py`'s synthetic one (`--docs` documents, generated once into
`--workdir`, reused after). Per `normalize` mode the ingest steps run once (one rank, parallelism
1: every canonical shard goes to the one hash rank), then, in fresh subprocesses, per variant:

    step    `ExactDedupStage.step_hash` on rank 0 of 1, called as `curation.executor.run_rank`
            would (allocators tuned, context built the same way): reads every shard, normalises,
            hashes, writes the partition files. CPU seconds after the imports: user + system of
            the process (Arrow's reader threads included).
    read    only reading the shards the way the variant's step does (old: `read_shard`, then
            `combine_chunks`; new: `alive_rows`, the chunked column).
    kernel  only `exact_hashes(texts, mode)` on each shard's text as the variant's step hands it
            over (old: combined; new: chunked), after the untimed read.

The figure is text MB (1e6 bytes) per CPU second. Variants alternate within each round, in a
rotating order, so load from other processes hits both alike; per mode, the median of each and
the median of the per-round ratios. After every step run the partition files are read back and
compared row by row (hash, key, length, id) with the old variant's: any difference is an error —
equal files mean the same duplicate groups and survivors downstream. Writes
bench/results/exact-hash-speed-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import yaml  # noqa: E402

BASE_COMMIT = "ca45591"  # exact dedup before the speed work of issue 9
MB = 1e6
VARIANTS = ("old", "new")
MODES = ("full", "strip-punctuation", "whitespace", "none")


def old_modules(commit: str = BASE_COMMIT) -> types.ModuleType:
    """`curation.stages.exact_dedup` as of `commit`, with its own copy of `exact_math`."""
    from old_code import stage_at

    return stage_at(commit, "exact_dedup", "exact_math")


# ---- setup: corpus, spec, ingest ------------------------------------------------------------------


def prepare(workdir: Path, docs: int, mode: str) -> tuple[Path, int]:
    """The spec of a run with one exact-dedup stage in `mode`, its ingest done; and the text bytes."""
    import scale_corpus

    from curation.executor import run_rank
    from curation.plan import plan_steps
    from curation.spec import load_spec

    corpus_dir = workdir / f"corpus-{docs}"
    manifest = scale_corpus.generate(corpus_dir, docs)
    output = workdir / f"out-{docs}-{mode}"
    spec_path = workdir / f"spec-{docs}-{mode}.yaml"
    doc = {
        "input": {"path": str(corpus_dir), "format": "parquet", "textField": "text", "idField": "doc_id"},
        "output": {"path": str(output), "keepWork": True},
        "parallelism": 1,
        "stages": [{"type": "exact-dedup", "params": {"normalize": mode}}],
    }
    text = yaml.safe_dump(doc, sort_keys=False)
    if not spec_path.exists() or spec_path.read_text() != text:
        shutil.rmtree(output, ignore_errors=True)
        spec_path.write_text(text)
    spec = load_spec(str(spec_path))
    for step in plan_steps(spec):
        if step.stage == "ingest":
            for rank in range(step.world_size):
                run_rank(spec, step.id, rank, step.world_size)  # a finished rank is skipped
    return spec_path, int(manifest["stats"]["text_bytes"])


def partition_rows(spec_path: Path) -> pa.Table:
    """Every row the hash step wrote, sorted by key (the files' order is the writer's business)."""
    from curation.layout import RunLayout
    from curation.spec import load_spec

    layout = RunLayout.of(load_spec(str(spec_path)).output.path)
    root = Path(layout.stage_scratch(1, "exact-dedup").path) / "hash"
    files = sorted(root.glob("p*/r*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files]) if files else pa.table({})
    return table.sort_by("key") if table.num_rows else table


# ---- children: one timing each, in a fresh process ----------------------------------------------


def _context(spec_path: Path) -> tuple[Any, Any, Any]:
    from curation.executor import build_context
    from curation.memory import tune_allocators
    from curation.plan import find_step, plan_steps
    from curation.spec import load_spec

    tune_allocators()  # as run_rank does
    spec = load_spec(str(spec_path))
    steps = plan_steps(spec)
    step = find_step(spec, "exact-dedup.hash", steps)
    return spec, step, build_context(spec, step, steps)


def _stage_module(variant: str) -> Any:
    if variant == "old":
        return old_modules()
    from curation.stages import exact_dedup

    return exact_dedup


def _usage() -> np.ndarray:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return np.array([r.ru_utime, r.ru_stime, r.ru_minflt], dtype=float)


def child(what: str, variant: str, spec_path: Path) -> dict[str, float]:
    module = _stage_module(variant)
    spec, step, ctx = _context(spec_path)
    from curation.executor import stage_config

    stage = module.ExactDedupStage(stage_config(spec, step), spec)
    mode = stage.params.normalize
    if what == "step":
        before = _usage()
        stage.step_hash(ctx, 0, 1)
        used = _usage() - before
        return {"cpu_s": used[0] + used[1], "user_s": used[0], "sys_s": used[1], "page_faults": used[2],
                "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    from curation.dataset import ID, TEXT

    source = ctx.input
    read = kernel = np.zeros(3)
    for shard in range(source.num_shards):
        before = _usage()
        if variant == "old":
            texts = source.read_shard(shard, [ID, TEXT]).column(TEXT).combine_chunks()
        else:
            texts = module.alive_rows(source, shard, [ID, TEXT]).column(TEXT)
        middle = _usage()
        module.exact_hashes(texts, mode)
        after = _usage()
        read, kernel = read + (middle - before), kernel + (after - middle)
        del texts
    return {"read_cpu_s": read[0] + read[1], "kernel_cpu_s": kernel[0] + kernel[1],
            "kernel_user_s": kernel[0], "kernel_sys_s": kernel[1]}


def timed(what: str, variant: str, spec_path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", what, variant, str(spec_path)],
        check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


# ---- the race -----------------------------------------------------------------------------------


def race(spec_path: Path, text_bytes: int, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    reference: pa.Table | None = None
    for r in range(rounds):
        order = VARIANTS[r % 2 :] + VARIANTS[: r % 2]
        for variant in order:
            run = timed("step", variant, spec_path)
            rows = partition_rows(spec_path)
            if reference is None:
                reference = rows
            elif not rows.equals(reference):
                raise SystemExit(f"{spec_path.name}: the {variant} step wrote different partition rows")
            run.update(timed("parts", variant, spec_path))
            runs[variant].append(run)
    assert reference is not None
    megabytes = text_bytes / MB

    def col(variant: str, key: str) -> list[float]:
        return [run[key] for run in runs[variant]]

    def rate(key: str) -> dict[str, float]:
        return {v: round(megabytes / median(col(v, key)), 1) for v in VARIANTS}

    def speedup(key: str) -> float:
        return round(median(o / n for o, n in zip(col("old", key), col("new", key), strict=True)), 2)

    return {
        "megabytes": round(megabytes, 1),
        "rows_written": reference.num_rows,
        "step_mb_per_cpu_s": rate("cpu_s"),
        "step_mb_per_user_cpu_s": rate("user_s"),
        "kernel_mb_per_cpu_s": rate("kernel_cpu_s"),
        "read_mb_per_cpu_s": rate("read_cpu_s"),
        "step_speedup": speedup("cpu_s"),
        "kernel_speedup": speedup("kernel_cpu_s"),
        "identical_partition_rows": True,
        "runs": {v: [{k: round(x, 3) for k, x in run.items()} for run in runs[v]] for v in VARIANTS},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=100_000, help="synthetic documents (~2.75 KB each)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/thresher-exact-hash-speed"),
                        help="corpus and run folders (reused by later runs)")
    parser.add_argument("--modes", default="full,strip-punctuation",
                        help=f"comma-separated normalize modes ({', '.join(MODES)})")
    parser.add_argument("--rounds", type=int, default=3, help="timings of each variant per mode")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/...)")
    parser.add_argument("--child", nargs=3, metavar=("WHAT", "VARIANT", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], Path(args.child[2]))))
        return 0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; expected {', '.join(MODES)}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: dict[str, Any] = {}
    header = (f"{'normalize':18s} {'MB':>6s} | {'step MB/CPU-s':>13s} {'old':>6s} {'new':>6s} {'x':>5s} | "
              f"{'kernel':>6s} {'old':>6s} {'new':>6s} {'x':>5s} | {'read':>4s} {'old':>6s} {'new':>6s}")
    print(header)
    for mode in modes:
        spec_path, text_bytes = prepare(args.workdir, args.docs, mode)
        timing = race(spec_path, text_bytes, args.rounds)
        results[mode] = timing
        s, k, r = timing["step_mb_per_cpu_s"], timing["kernel_mb_per_cpu_s"], timing["read_mb_per_cpu_s"]
        print(f"{mode:18s} {timing['megabytes']:6.1f} | {'':13s} {s['old']:6.1f} {s['new']:6.1f} "
              f"{timing['step_speedup']:5.2f} | {'':6s} {k['old']:6.1f} {k['new']:6.1f} {timing['kernel_speedup']:5.2f} | "
              f"{'':4s} {r['old']:6.1f} {r['new']:6.1f}", flush=True)
    today = datetime.date.today().isoformat()
    out = args.out or ROOT / "bench" / "results" / f"exact-hash-speed-{today}.json"
    report = {
        "what": "exact-dedup.hash step, one rank over every shard: text MB per CPU second (user + system)",
        "base_commit": BASE_COMMIT,
        "date": today,
        "docs": args.docs,
        "rounds": args.rounds,
        "seconds": round(time.monotonic() - started, 1),
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(), "python": platform.python_version(),
                    "numpy": np.__version__, "pyarrow": pa.__version__},
        "modes": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
