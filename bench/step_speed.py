"""Whole pipeline steps, an earlier commit against the working tree, side by side in one run.

    python bench/step_speed.py --spec /tmp/hB/spec.yaml --steps heuristic-filter.filter exact-dedup.hash
    python bench/step_speed.py --spec S --steps minhash-dedup.signatures --base 826e817 --rounds 3

`--spec` is a pipeline spec with `output.keepWork: true` whose steps ran up to (at least) the
steps asked for, e.g. the quickstart run step by step on a corpus of `bench/scale.py generate`.
Each timing reruns one step as rank 0 of 1 (`curation.executor.run_rank`) in a fresh process:
its completion marker and per-shard resume records are removed first, so the step does all its
work again from the same inputs and rewrites the same files. "old" is the engine as of `--base`
(extracted with `git archive` into a temporary folder and put first on PYTHONPATH), "new" the
working tree; the variants alternate within each round in a rotating order, so load from other
processes on the machine hits both alike. Figures: user + system CPU seconds of the step and the
process's peak RSS (the imports' ~100 MB included); medians over rounds, and the median of the
per-round new/old ratios; MB/CPU-s over the text the step read (its `bytes_in`, or the whole
corpus's text for steps that report none, such as `exact-dedup.hash`). Unlike `bench/heuristic_speed.py` this times the step as the pipeline
runs it: reading the shard through the view, deciding, writing decisions or partitions.

Writes bench/results/step-speed-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, shutil, sys
from pathlib import Path
from curation.executor import run_rank
from curation.spec import load_spec
spec_path, step = sys.argv[1], sys.argv[2]
spec = load_spec(spec_path)
work = Path(spec.output.path) / "_work"
stage, name = step.split(".", 1)
shutil.rmtree(work / "_done" / step, ignore_errors=True)
for d in work.glob(f"*-{stage}/scratch/_shard_stats/{name}"):
    shutil.rmtree(d)
before = resource.getrusage(resource.RUSAGE_SELF)
stats = run_rank(spec, step, 0, 1)
after = resource.getrusage(resource.RUSAGE_SELF)
corpus = json.loads((work / "corpus" / "_index.json").read_text())["text_bytes"]
import curation
assert Path(curation.__file__).resolve().parent == Path.cwd().resolve() / "curation", curation.__file__
print(json.dumps({"user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime,
                  "peak_rss_mb": after.ru_maxrss / 1024, "bytes_in": stats.get("bytes_in") or corpus}))
"""


def extract(commit: str, into: Path) -> Path:
    """The tree of `commit` (its `curation/` is all the child imports) under `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit, "curation"],
                             check=True, capture_output=True).stdout
    tar_path = into / "tree.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


def time_step(path: Path, spec: str, step: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(path)}
    # cwd: `python -c` puts the working directory first on sys.path, before PYTHONPATH.
    out = subprocess.run([sys.executable, "-c", CHILD, str(Path(spec).resolve()), step], capture_output=True,
                         text=True, env=env, cwd=path)
    if out.returncode != 0:
        raise SystemExit(f"{step} failed with {path}:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["cpu_s"] = round(result["user_s"] + result["sys_s"], 3)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", required=True, help="spec of a kept run (output.keepWork: true)")
    ap.add_argument("--steps", nargs="+", required=True, help="step ids, e.g. heuristic-filter.filter")
    ap.add_argument("--base", default="826e817", help="the old engine's commit")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default=None, help="default: bench/results/step-speed-<date>.json")
    args = ap.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        variants = {"old": extract(args.base, Path(tmp)), "new": ROOT}
        for step in args.steps:
            runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
            for r in range(args.rounds):
                for v in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    runs[v].append(time_step(variants[v], args.spec, step))
                    print(f"{step:28s} {v}: {runs[v][-1]['cpu_s']:8.2f} CPU-s  {runs[v][-1]['peak_rss_mb']:7.0f} MB",
                          flush=True)
            mb = runs["new"][-1]["bytes_in"] / 1e6
            results[step] = {
                "text_mb_in": round(mb, 1),
                "cpu_s": {v: median(x["cpu_s"] for x in runs[v]) for v in runs},
                "mb_per_cpu_s": {v: round(mb / median(x["cpu_s"] for x in runs[v]), 1) if mb else None for v in runs},
                "peak_rss_mb": {v: round(median(x["peak_rss_mb"] for x in runs[v])) for v in runs},
                "cpu_ratio_new_over_old": round(median(n["cpu_s"] / o["cpu_s"] for n, o in zip(runs["new"], runs["old"],
                                                                                                 strict=True)), 3),
                "runs": runs,
            }
    doc = {"what": "pipeline steps rerun as rank 0 of 1: old engine against the working tree", "base": args.base,
           "spec": args.spec, "date": datetime.date.today().isoformat(), "rounds": args.rounds,
           "machine": {"cpus": os.cpu_count(), "load_average_at_end": list(os.getloadavg()),
                       "python": platform.python_version()},
           "steps": results}
    path = Path(args.json or ROOT / "bench" / "results" / f"step-speed-{doc['date']}.json")
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\n{'step':28s} {'MB in':>8s} {'old CPU-s':>10s} {'new CPU-s':>10s} {'new/old':>8s} "
          f"{'old MB/CPU-s':>12s} {'new MB/CPU-s':>12s} {'old RSS':>8s} {'new RSS':>8s}")
    for step, r in results.items():
        print(f"{step:28s} {r['text_mb_in']:8.1f} {r['cpu_s']['old']:10.2f} {r['cpu_s']['new']:10.2f} "
              f"{r['cpu_ratio_new_over_old']:8.3f} {r['mb_per_cpu_s']['old'] or 0:12.1f} "
              f"{r['mb_per_cpu_s']['new'] or 0:12.1f} {r['peak_rss_mb']['old']:8d} {r['peak_rss_mb']['new']:8d}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
