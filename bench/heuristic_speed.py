"""Heuristic filter speed, old against new, side by side in one run, with identical decisions.

    python bench/heuristic_speed.py                 # ~30 MB per corpus, 5 rounds
    python bench/heuristic_speed.py --mb 10 --rounds 3

"old" is `curation/stages/heuristic.py` and `heuristic_rules.py` as of BASE_COMMIT (read with
`git show`, loaded as separate modules); "previous" the same as of PREVIOUS_COMMIT (the filter
before the word-id and word-split work of issue 23: Arrow's split and dictionary encoding of
the words); "new" is the working tree; "new-default-malloc" is the
working tree with `retain_freed_memory` turned off, to tell the code's gain from the allocator's.
Each timing runs `evaluate_column(texts, HeuristicFilterParams())` in a fresh subprocess (the
allocator setting is process-wide, so variants must not share a process), after a warm-up on 2000
documents; the variants alternate within each round, in a rotating order, so load from other
processes on the machine hits all alike. The figure is text MB per CPU second of that call (user +
system time, one core); user-only MB/s is reported too. Per corpus: the median of each variant,
and the median of the per-round ratios.

Corpora: the bundled sample (examples/data/sample, real web-like text, repeated to about --mb MB)
and the synthetic corpus of bench/scale_corpus.py (documents 0.. until about --mb MB); with
`--scale-corpus DIR`, also the first --mb MB of a corpus written by `bench/scale.py generate`
(the documents as the pipeline reads them, planted duplicates and junk included).

Before timing, the decisions are compared on every corpus in this process: reasons per document
with default params, and with C4 line removal in `annotate` mode (reasons, cleaned text, lines
removed) — any difference is an error. Writes bench/results/heuristic-speed-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
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
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from curation.params.heuristic import HeuristicFilterParams  # noqa: E402
from curation.stages import heuristic as new_stage  # noqa: E402

BASE_COMMIT = "473cf8c"  # the heuristic filter before the speed work of issue 9
PREVIOUS_COMMIT = "826e817"  # ... after it, before the exact word ids without Arrow
SAMPLE = ROOT / "examples" / "data" / "sample"


def old_modules(commit: str = BASE_COMMIT) -> types.ModuleType:
    """`curation.stages.heuristic` as of `commit`, with its own copy of `heuristic_rules`."""
    from old_code import stage_at

    return stage_at(commit, "heuristic", "heuristic_rules")


def megabytes(texts: pa.Array) -> float:
    return pc.sum(pc.binary_length(texts)).as_py() / 1e6


def sample_corpus(mb: float) -> pa.Array:
    texts = pq.read_table(sorted(SAMPLE.glob("*.parquet")), columns=["text"]).column("text").combine_chunks()
    return pa.concat_arrays([texts] * max(1, round(mb / megabytes(texts))))


def synthetic_corpus(mb: float) -> pa.Array:
    from scale_corpus import generate_chunk

    docs = max(100, int(mb * 1e6 / 2800))  # ~2.8 KB per document
    return generate_chunk(0, docs, seed=0).docs.column("text").combine_chunks()


def scale_corpus(directory: Path, mb: float) -> pa.Array:
    """The first documents, about `mb` MB of text, of a `bench/scale.py generate` corpus."""
    texts, size = [], 0.0
    for path in sorted(directory.glob("part-*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096, columns=["text"]):
            texts.append(batch.column(0))
            size += megabytes(batch.column(0))
            if size >= mb:
                return pa.concat_arrays(texts)
    return pa.concat_arrays(texts)


def check_identical(old: Any, new: Any, texts: pa.Array) -> dict[str, Any]:
    """Decisions of both on `texts`: default params, and C4 line removal in annotate mode."""
    out: dict[str, Any] = {}
    for label, params in (
        ("default", HeuristicFilterParams()),
        ("c4-annotate", HeuristicFilterParams.model_validate({"c4": {"lineRemoval": "annotate"}})),
    ):
        old_reasons, old_clean = old.evaluate_column(texts, params)
        new_reasons, new_clean = new.evaluate_column(texts, params)
        if old_reasons != new_reasons:
            diff = [i for i, (a, b) in enumerate(zip(old_reasons, new_reasons, strict=True)) if a != b]
            raise SystemExit(f"{label}: {len(diff)} documents decided differently, e.g. {diff[:5]}")
        if old_clean is not None or new_clean is not None:
            assert old_clean is not None and new_clean is not None
            same = old_clean.text.equals(new_clean.text) and np.array_equal(
                old_clean.lines_removed, new_clean.lines_removed
            )
            if not same:
                raise SystemExit(f"{label}: C4 cleaning differs")
        out[label] = {"documents": len(new_reasons), "rejected": sum(r is not None for r in new_reasons)}
    return out


VARIANTS = ("old", "previous", "new", "new-default-malloc")


def child(variant: str, path: Path) -> dict[str, float]:
    """One timing, in this (fresh) process: CPU seconds of `evaluate_column` on the file's texts."""
    if variant == "old":
        module: Any = old_modules()
    elif variant == "previous":
        module = old_modules(PREVIOUS_COMMIT)
    else:
        module = new_stage
        if variant == "new-default-malloc":
            module.retain_freed_memory = lambda: False
    texts = pq.read_table(path, columns=["text"]).column("text").combine_chunks()
    params = HeuristicFilterParams()
    module.evaluate_column(texts.slice(0, 2000), params)  # warm-up: lazily filled tables, imports
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.process_time()
    module.evaluate_column(texts, params)
    cpu = time.process_time() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_s": cpu,
        "user_s": after.ru_utime - before.ru_utime,
        "sys_s": after.ru_stime - before.ru_stime,
        "page_faults": after.ru_minflt - before.ru_minflt,
        "max_rss_mib": after.ru_maxrss / 1024,
    }


def timed(variant: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", variant, str(path)], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def race(path: Path, size: float, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
        for variant in order:
            runs[variant].append(timed(variant, path))

    def col(variant: str, key: str) -> list[float]:
        return [run[key] for run in runs[variant]]

    def ratio(a: str, b: str) -> float:  # how many times faster a is than b, median over rounds
        return round(median(y / x for x, y in zip(col(a, "cpu_s"), col(b, "cpu_s"), strict=True)), 2)

    return {
        "megabytes": round(size, 2),
        "mb_per_cpu_s": {v: round(size / median(col(v, "cpu_s")), 1) for v in VARIANTS},
        "mb_per_user_cpu_s": {v: round(size / median(col(v, "user_s")), 1) for v in VARIANTS},
        "speedup_new_over_old": ratio("new", "old"),
        "speedup_new_over_previous": ratio("new", "previous"),
        "speedup_new_default_malloc_over_old": ratio("new-default-malloc", "old"),
        "speedup_new_over_new_default_malloc": ratio("new", "new-default-malloc"),
        "runs": {v: [{k: round(x, 3) for k, x in run.items()} for run in runs[v]] for v in VARIANTS},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=30.0, help="text megabytes per corpus")
    parser.add_argument("--rounds", type=int, default=5, help="timings of each variant per corpus")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/...)")
    parser.add_argument("--scale-corpus", type=Path, default=None, help="a `bench/scale.py generate` directory")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "PARQUET"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return 0
    old = old_modules()
    results: dict[str, Any] = {}
    print(f"{'corpus':10s} {'docs':>7s} {'MB':>6s}  MB per CPU-s: {'old':>6s} {'prev':>6s} {'new':>6s} "
          f"{'new, default malloc':>20s}  speedup over old, previous")
    with tempfile.TemporaryDirectory() as tmp:
        corpora: list[tuple[str, Any]] = [("sample", sample_corpus), ("synthetic", synthetic_corpus)]
        if args.scale_corpus:
            corpora.append(("scale", lambda mb: scale_corpus(args.scale_corpus, mb)))
        for name, make in corpora:
            texts = make(args.mb)
            decisions = check_identical(old, new_stage, texts)
            path = Path(tmp) / f"{name}.parquet"
            pq.write_table(pa.table({"text": texts}), path)
            timing = race(path, megabytes(texts), args.rounds)
            results[name] = {"documents": len(texts), **timing, "identical_decisions": decisions}
            rate = timing["mb_per_cpu_s"]
            print(
                f"{name:10s} {len(texts):7d} {timing['megabytes']:6.1f}  {'':13s} {rate['old']:6.1f} {rate['previous']:6.1f} "
                f"{rate['new']:6.1f} {rate['new-default-malloc']:20.1f}  {timing['speedup_new_over_old']:.2f}, "
                f"{timing['speedup_new_over_previous']:.2f}"
            )
    today = datetime.date.today().isoformat()
    out = args.out or ROOT / "bench" / "results" / f"heuristic-speed-{today}.json"
    report = {
        "what": "heuristic-filter evaluate_column, default params: MB of text per CPU second (user + system), one core",
        "base_commit": BASE_COMMIT,
        "previous_commit": PREVIOUS_COMMIT,
        "date": today,
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(), "python": platform.python_version(),
                    "numpy": np.__version__, "pyarrow": pa.__version__},
        "rounds": args.rounds,
        "corpora": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
