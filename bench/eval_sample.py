#!/usr/bin/env python3
"""The sample makes the case: does the quickstart curation give a better proxy model at equal tokens?

1. `thresher holdout` splits the bundled sample (examples/data/sample) by id hash: 10% held out;
   train documents sharing a word 13-gram with a held-out one are moved to overlap/ (else planted
   near-duplicates of held-out documents would leak into training).
2. The clean evaluation set: the held-out documents the sample's ground truth
   (examples/data/sample_truth.parquet) marks `original` (no planted duplicate, no junk). It is
   ground truth, not Thresher's own filters, so the curated arm is not graded by its own rules.
3. The quickstart pipeline (exact + MinHash dedup, heuristic filter, curriculum) curates train/.
4. `thresher eval`, preset tiny: raw = train/, each curated output an arm, same tokenizer, same
   token budget, seeds 0..N-1, on CPU.

Writes bench/results/eval-sample-<date>.json (eval.json plus the split and curation counts) and
leaves the HTML page at <work>/eval/eval.html.

    python bench/eval_sample.py [--work out/eval-sample] [--seeds 3] [--threads 2] \
        [--arm curated=examples/quickstart.yaml --arm no-curly=bench/eval_sample_no_curly.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "data" / "sample"
TRUTH = ROOT / "examples" / "data" / "sample_truth.parquet"


def thresher(*args: str) -> None:
    cmd = [sys.executable, "-m", "curation.cli", *args]
    print("+ thresher " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def _rel(path: str) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else path


def kinds(folder: Path, truth: dict[str, str]) -> dict[str, int]:
    ids = pq.read_table(folder, columns=["doc_id"]).column("doc_id").to_pylist() if any(folder.glob("*.parquet")) else []
    return dict(Counter(truth[i] for i in ids))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(ROOT / "out" / "eval-sample"))
    ap.add_argument("--seeds", default="3")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--tokens", default=None)
    ap.add_argument("--results", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--arm", action="append", default=None, metavar="NAME=SPEC",
                    help="a curation to evaluate, repeatable (default: curated=examples/quickstart.yaml)")
    ap.add_argument("--tag", default="", help="suffix of the results file (eval-sample-<tag>-<date>.json)")
    args = ap.parse_args()
    work = Path(args.work)
    started = time.monotonic()
    from curation.models.sample_models import populate

    models = work / "models"
    populate(models, skip_missing=True)

    split = work / "split"
    thresher("holdout", str(SAMPLE), "--out", str(split), "--fraction", "0.1", "--seed", "0",
             "--id-field", "doc_id", "--force")
    truth_rows = pq.read_table(TRUTH, columns=["doc_id", "kind"]).to_pylist()
    truth = {r["doc_id"]: r["kind"] for r in truth_rows}
    held = pq.read_table(split / "heldout")
    mask = [truth[i] == "original" for i in held.column("doc_id").to_pylist()]
    import pyarrow as pa

    clean = work / "heldout-clean"
    shutil.rmtree(clean, ignore_errors=True)
    clean.mkdir(parents=True)
    pq.write_table(held.filter(pa.array(mask)), clean / "part-00000.parquet")

    arms = [a.split("=", 1) for a in (args.arm or [f"curated={ROOT / 'examples' / 'quickstart.yaml'}"])]
    curation_seconds = {}
    for name, spec in arms:
        curated = work / name
        shutil.rmtree(curated, ignore_errors=True)  # this script's own folder: a fresh run every time
        t0 = time.monotonic()
        thresher("run", spec, "--input", str(split / "train"), "--output", str(curated), "--quiet", "--workers", "2")
        curation_seconds[name] = round(time.monotonic() - t0, 1)

    out = work / "eval"
    t0 = time.monotonic()
    extra = ["--tokens", args.tokens] if args.tokens else []
    datasets = [x for name, _ in arms for x in ("--dataset", f"{name}={work / name / 'data'}")]
    thresher("eval", "--dataset", f"raw={split / 'train'}", *datasets,
             "--eval-set", f"heldout-clean={clean}", "--id-field", "doc_id", "--models", str(models),
             "--preset", args.preset, "--seeds", args.seeds, "--threads", args.threads, "--out", str(out), *extra)
    eval_seconds = time.monotonic() - t0

    result = json.loads((out / "eval.json").read_text())
    result["experiment"] = {
        "script": "bench/eval_sample.py",
        "curations": {name: _rel(spec) for name, spec in arms},
        "split": json.loads((split / "holdout.json").read_text()),
        "kinds": {name: kinds(folder, truth) for name, folder in (
            ("train (raw arm)", split / "train"), ("heldout", split / "heldout"), ("overlap (moved)", split / "overlap"),
            ("heldout-clean (eval set)", clean), *((f"{n} arm", work / n / "data") for n, _ in arms))},
        "curation_seconds": curation_seconds,
        "eval_seconds": round(eval_seconds, 1),
        "total_seconds": round(time.monotonic() - started, 1),
        "cpu_count": os.cpu_count(),
        "note": "2 shared cores; other jobs ran on the machine at the same time, so the wall times are upper bounds",
    }
    Path(args.results).mkdir(parents=True, exist_ok=True)
    tag = f"-{args.tag}" if args.tag else ""
    target = Path(args.results) / f"eval-sample{tag}-{time.strftime('%Y-%m-%d', time.gmtime())}.json"
    target.write_text(json.dumps(result, indent=2))
    diffs = {k: {f: d[f] for f in ("mean", "ci95", "values", "wins")}
             for k, d in result["differences"]["heldout-clean"].items()}
    finals = {k: v["values"] for k, v in result["summary"]["heldout-clean"].items()}
    print(json.dumps({"kinds": result["experiment"]["kinds"], "final_loss": finals, "difference": diffs}, indent=1))
    print(f"results: {target}; page: {out / 'eval.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
