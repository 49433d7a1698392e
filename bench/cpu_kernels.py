"""Throughput of the CPU kernels per core: exact-dedup hashing, MinHash signatures, heuristic filter.

    python bench/cpu_kernels.py              # the bundled sample repeated to ~100 MB per kernel
    python bench/cpu_kernels.py --mb 20      # quicker

Each kernel runs on the bundled sample's `text` column (examples/data/sample) repeated to about
`--mb` megabytes, in this process, one core. MB/s is text megabytes divided by the CPU seconds
of the call (`time.process_time`), so a busy machine changes it less than wall time would.

    exact      `exact_math.exact_hashes(texts, "full")`: normalise (NFKC, lowercase, whitespace)
               and xxh3-128 every document; documents are two sample documents joined (~3 KB,
               like web pages)
    minhash    `minhash_math.signatures(texts, 5, 112, 1)`: FineWeb's word 5-grams, 14 x 8
    heuristic  `heuristic.evaluate_column(texts, HeuristicFilterParams())`: Gopher quality,
               Gopher repetition, C4 and FineWeb rules with their default thresholds

The ratios compare with the figures measured on this machine class before the kernels were
rewritten (hardening issue): exact 31 MB/s, MinHash 38 MB/s, heuristic 11 MB/s per core.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from curation.params.heuristic import HeuristicFilterParams  # noqa: E402
from curation.stages.exact_math import exact_hashes  # noqa: E402
from curation.stages.heuristic import evaluate_column  # noqa: E402
from curation.stages.minhash_math import signatures  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "data" / "sample"
BASELINE_MB_S = {"exact": 31.0, "minhash": 38.0, "heuristic": 11.0}


def sample_texts(pair: bool) -> pa.Array:
    texts = pq.read_table(sorted(SAMPLE.glob("*.parquet")), columns=["text"]).column("text").combine_chunks()
    if pair:  # ~3 KB documents: consecutive sample documents joined by a blank line
        even = texts.slice(0, len(texts) // 2 * 2)
        lists = pa.ListArray.from_arrays(pa.array(range(0, len(even) + 1, 2), pa.int32()), even)
        texts = pc.binary_join(lists, "\n\n")
    return texts


def repeated(texts: pa.Array, megabytes: float) -> pa.Array:
    size = pc.sum(pc.binary_length(texts)).as_py()
    return pa.concat_arrays([texts] * max(1, round(megabytes * 1e6 / size)))


def measure(run: Callable[[pa.Array], Any], texts: pa.Array) -> tuple[float, float]:
    """(MB per CPU second, CPU seconds) of one call."""
    megabytes = pc.sum(pc.binary_length(texts)).as_py() / 1e6
    run(texts.slice(0, min(len(texts), 2000)))  # warm up: imports, lazily built tables
    start = time.process_time()
    run(texts)
    seconds = time.process_time() - start
    return megabytes / seconds, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=100.0, help="text megabytes per kernel")
    parser.add_argument("--only", choices=sorted(BASELINE_MB_S), action="append", help="run only these kernels")
    args = parser.parse_args(argv)
    kernels: dict[str, tuple[Callable[[pa.Array], Any], bool]] = {
        "exact": (lambda t: exact_hashes(t, "full"), True),
        "minhash": (lambda t: signatures(t, 5, 112, 1), False),
        "heuristic": (lambda t: evaluate_column(t, HeuristicFilterParams()), False),
    }
    print(f"{'kernel':10s} {'docs':>8s} {'MB':>7s} {'CPU s':>7s} {'MB/s/core':>10s} {'baseline':>9s} {'ratio':>6s}")
    for name, (run, pair) in kernels.items():
        if args.only and name not in args.only:
            continue
        texts = repeated(sample_texts(pair), args.mb)
        rate, seconds = measure(run, texts)
        size = pc.sum(pc.binary_length(texts)).as_py() / 1e6
        base = BASELINE_MB_S[name]
        print(f"{name:10s} {len(texts):8d} {size:7.1f} {seconds:7.2f} {rate:10.1f} {base:9.1f} {rate / base:6.2f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB (includes the repeated texts)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
