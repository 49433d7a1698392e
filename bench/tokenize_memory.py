"""Peak memory of the `output.tokenize` steps at two corpus sizes: flat in corpus size, or not.

    python bench/tokenize_memory.py                       # 12 MB and 96 MB of generated text
    python bench/tokenize_memory.py --mb 12,96 --json bench/results/tokenize-memory-$(date +%F).json

A generated corpus (random common words, ~2 KB documents, 8 input files) goes through ingest,
exact-dedup and finalize up to the token steps in this process; then `finalize.tokenize`,
`finalize.layout` and `finalize.merge` each run in a fresh interpreter, one rank, one thread, and
report their peak resident memory (VmHWM of /proc/self/status: the child's own, unlike
ru_maxrss, which Linux carries across exec from the parent).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEPS = ("finalize.tokenize", "finalize.layout", "finalize.merge")
WORDS = ["the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by",
         "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "they",
         "you", "were", "her", "she", "there", "would", "their", "we", "him", "been", "has", "when", "who",
         "will", "more", "no", "if", "out"]
CHILD = """
import sys
sys.path.insert(0, {root!r})
from curation.executor import run_rank
from curation.spec import PipelineSpec
spec = PipelineSpec.model_validate_json(open({spec!r}).read())
run_rank(spec, {step!r}, 0, 1)
print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')))
"""


def corpus(folder: Path, mb: float) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    words = np.array(WORDS)
    folder.mkdir(parents=True, exist_ok=True)
    per_file = int(mb * 1e6 / 2000 / 8)
    for f in range(8):
        texts = [" ".join(rng.choice(words, size=330)) + f" doc {f}-{i}" for i in range(per_file)]
        pq.write_table(pa.table({"doc_id": [f"{f}-{i}" for i in range(per_file)], "text": texts}),
                       folder / f"part-{f}.parquet")


def measure(root: Path, mb: float) -> dict[str, Any]:
    from curation.executor import claim_output, run_rank
    from curation.plan import plan_steps
    from curation.preflight import preflight
    from curation.spec import parse_spec

    corpus(root / "in", mb)
    spec = parse_spec({"input": {"path": str(root / "in"), "idField": "doc_id", "shardTextBytes": 4 << 20},
                       "output": {"path": str(root / "out"), "keepWork": True,
                                  "tokenize": {"tokenizer": "all-MiniLM-L6-v2", "fileBytes": 16 << 20}},
                       "models": {"path": str(ROOT / "examples" / "models")},
                       "stages": [{"type": "exact-dedup"}], "parallelism": 1})
    preflight(spec)
    claim_output(spec)
    steps = plan_steps(spec)
    for step in steps[: [s.id for s in steps].index(STEPS[0])]:
        run_rank(spec, step.id, 0, step.world_size)
    (root / "spec.json").write_text(spec.model_dump_json(by_alias=True))
    out: dict[str, Any] = {"text_mb": mb}
    env = {**os.environ, "RAYON_NUM_THREADS": "1"}
    for step in STEPS:
        started = time.perf_counter()
        code = CHILD.format(root=str(ROOT), spec=str(root / "spec.json"), step=step)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        out[step] = {"peak_rss_mb": round(int(result.stdout.split()[-1]) / 1024, 1),
                     "seconds": round(time.perf_counter() - started, 1)}
    layout = json.loads((root / "out" / "_work" / "02-finalize" / "scratch" / "tokens" / "layout.json").read_text())
    out.update(tokens=layout["kept"]["tokens"], documents=layout["kept"]["docs"], merged_files=len(layout["files"]),
               output_shards=layout["files"][-1]["shards"][1])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", default="12,96", help="corpus sizes in MB of text (comma-separated)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    for mb in [float(x) for x in args.mb.split(",")]:
        with tempfile.TemporaryDirectory(prefix="thresher-tok-mem-") as tmp:
            row = measure(Path(tmp), mb)
        rows.append(row)
        print(f"{mb:>6.0f} MB text, {row['tokens']:>12,} tokens, {row['merged_files']} file(s): " + ", ".join(
            f"{s.split('.')[1]} {row[s]['peak_rss_mb']:.0f} MB / {row[s]['seconds']:.1f}s" for s in STEPS))
    if args.json:
        Path(args.json).write_text(json.dumps({"benchmark": "tokenize-memory", "date": dt.date.today().isoformat(),
                                               "cpus": os.cpu_count(), "results": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
