"""Benchmark: Thresher's MinHash dedup against DataTrove's, on the same data, in the same run.

Both run FineWeb's settings (word 5-grams, 14 bands x 8 rows, keep one per cluster), one process
each by default, from Parquet input to Parquet output:

  Thresher   minhash-dedup: signatures -> buckets -> components -> filter (curation.executor.run_rank)
  DataTrove  MinhashDedupSignature -> MinhashDedupBuckets -> MinhashDedupCluster -> MinhashDedupFilter
             (LocalPipelineExecutor), once with its default English tokenizer (spaCy) and once with
             `str.split` words (its fastest possible tokenizer, closest to ours)

Reported: wall seconds, CPU seconds, documents per CPU-second (= docs/s per core), the ratio, and
pair-level precision / recall / F1 against the known similar pairs (a pair counts as found when both
documents end in the same duplicate cluster; truth = pairs at shingle Jaccard >= --threshold).

DataTrove lives in its own virtual environment (it pins versions we do not want):

    python -m venv /tmp/dt-venv && /tmp/dt-venv/bin/pip install "datatrove[processing,io]" spacy

    python bench/dedup_vs_datatrove.py                      # the bundled sample (examples/data)
    python bench/dedup_vs_datatrove.py --synthetic 50000    # generated data with planted duplicates

This file only imports the standard library at the top: DataTrove's interpreter runs it too
(`--_run-datatrove`), as does ours (`--_run-thresher`), each in a subprocess, so the timings
exclude interpreter start-up and imports.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "data" / "sample"
SAMPLE_PAIRS = REPO / "examples" / "data" / "sample_similar_pairs.parquet"
NGRAM, BANDS, ROWS = 5, 14, 8


class Clock:
    """Wall and CPU seconds (this process and its waited-for children) of a block."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, self._cpu() - self.cpu

    @staticmethod
    def _cpu() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


# ---- the two contestants (each runs in its own interpreter) ------------------------------------


def run_thresher(data: Path, work: Path, workers: int) -> dict:
    from concurrent.futures import ProcessPoolExecutor

    from curation.executor import run_rank
    from curation.layout import RunLayout
    from curation.plan import plan_steps
    from curation.spec import parse_spec

    spec = parse_spec(
        {
            "input": {"path": str(data), "idField": "doc_id"},
            "output": {"path": str(work / "out")},
            "stages": [
                {"type": "minhash-dedup", "params": {"ngram": NGRAM, "bands": BANDS, "rowsPerBand": ROWS}}
            ],
            "parallelism": workers,
        }
    )
    timings, setup = {}, {}
    for step in plan_steps(spec):
        if step.stage == "finalize":
            continue  # reports and the conservation check: not part of deduplication
        n = step.world_size
        # A pool per step, closed before the clock stops: its workers are reaped, so their CPU counts.
        pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else _Inline()
        with Clock() as clock, pool:
            list(pool.map(run_rank, [spec] * n, [step.id] * n, range(n), [n] * n))
        # ingest copies the input into canonical shards; DataTrove reads the input directly
        (setup if step.stage == "ingest" else timings)[step.step] = {"wall": clock.wall, "cpu": clock.cpu}
    layout = RunLayout.of(str(work / "out"))
    return {
        "timings": timings,
        "setup": setup,
        "kept": str(layout.stage_output(1, "minhash-dedup").loc.path),
        "removed": str(layout.stage_rejected(1, "minhash-dedup").loc.path),
    }


class _Inline:
    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn, *iterables):  # noqa: ANN001, ANN201
        return map(fn, *iterables)


def run_datatrove(data: Path, work: Path, workers: int, tokenizer: str) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WordTokenizer

    class SplitTokenizer(WordTokenizer):
        """Words = str.split(): the cheapest tokenizer DataTrove can be given."""

        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    # FineWeb's configuration: 64-bit xxhash shingles, 14 x 8.
    config = MinhashConfig(
        n_grams=NGRAM, num_buckets=BANDS, hashes_per_bucket=ROWS, hash_config=HashConfig(precision=64)
    )
    language = SplitTokenizer() if tokenizer == "split" else "en"
    files = len(list(data.glob("*.parquet")))
    logs = str(work / "logs")

    def reader() -> ParquetReader:
        return ParquetReader(str(data), text_key="text", id_key="doc_id", glob_pattern="*.parquet")

    stages = {
        "signatures": LocalPipelineExecutor(
            [
                reader(),
                MinhashDedupSignature(output_folder=str(work / "sigs"), config=config, language=language),
            ],
            tasks=files,
            workers=workers,
            logging_dir=f"{logs}/1",
        ),
        "buckets": LocalPipelineExecutor(
            [
                MinhashDedupBuckets(
                    input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=config
                )
            ],
            tasks=BANDS,
            workers=workers,
            logging_dir=f"{logs}/2",
        ),
        "components": LocalPipelineExecutor(
            [
                MinhashDedupCluster(
                    input_folder=str(work / "buckets"),
                    output_folder=str(work / "remove"),
                    config=config,
                    save_cluster_id=True,
                )
            ],
            tasks=1,
            workers=1,
            logging_dir=f"{logs}/3",
        ),
        "filter": LocalPipelineExecutor(
            [
                reader(),
                MinhashDedupFilter(
                    input_folder=str(work / "remove"),
                    load_cluster_ids=True,
                    exclusion_writer=ParquetWriter(str(work / "removed")),
                ),
                ParquetWriter(str(work / "kept")),
            ],
            tasks=files,
            workers=workers,
            logging_dir=f"{logs}/4",
        ),
    }
    timings = {}
    for name, executor in stages.items():
        with Clock() as clock:
            executor.run()
        timings[name] = {"wall": clock.wall, "cpu": clock.cpu}
    return {"timings": timings, "kept": str(work / "kept"), "removed": str(work / "removed")}


# ---- data ---------------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """The Jaccard definition of examples/README.md: NFKC, lowercase, punctuation -> space."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join("".join(" " if unicodedata.category(c).startswith("P") else c for c in text).split())


def shingles(text: str) -> set[str]:
    words = normalise(text).split(" ")
    if len(words) <= NGRAM:
        return {" ".join(words)}
    return {" ".join(words[i : i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def make_synthetic(n: int, folder: Path, shards: int, seed: int = 0) -> list[tuple[str, str, float]]:
    """n documents of Zipfian pseudo-English; ~12% near copies (Jaccard spread over 0.3-1.0) and ~3%
    exact copies with case/whitespace changes. Returns every pair inside a family with its Jaccard."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    syllables = [a + b for a in "bcdfghjklmnprstvwz" for b in ["a", "e", "i", "o", "u", "ai", "ou", "ee"]]
    vocab = sorted(
        {
            "".join(rng.choice(syllables) for _ in range(rng.choice([1, 1, 2, 2, 2, 3, 4])))
            for _ in range(60000)
        }
    )
    cdf = np.cumsum(1.0 / np.arange(1, len(vocab) + 1) ** 1.05)
    cdf /= cdf[-1]

    def draw(size: int) -> list[str]:  # Zipfian word frequencies, like natural text
        return [vocab[i] for i in np.searchsorted(cdf, nrng.random(size)).clip(0, len(vocab) - 1)]

    def original() -> list[str]:
        length = int(np.clip(nrng.lognormal(np.log(300), 0.6), 50, 3000))
        words = draw(length)
        i = 0
        while i < length:  # sentences of 6-24 words
            j = min(length, i + rng.randint(6, 24))
            words[i] = words[i].capitalize()
            words[j - 1] += rng.choice([".", ".", ".", "?", "!"])
            if j - i > 10:
                words[i + rng.randint(2, j - i - 3)] += ","
            i = j
        return words

    def near_copy(words: list[str], target: float) -> list[str]:
        # each substitution removes up to NGRAM shingles: J ~ (S - 5k) / (S + 5k)
        k = max(1, round(len(words) * (1 - target) / (NGRAM * (1 + target))))
        out = list(words)
        positions = rng.sample(range(len(out)), min(k, len(out)))
        for pos, word in zip(positions, draw(len(positions)), strict=True):
            out[pos] = word
        return out

    docs: list[tuple[str, str]] = []  # (doc_id, text)
    family: dict[str, str] = {}  # doc id -> family (source) id
    n_near, n_exact = int(n * 0.12), int(n * 0.03)
    sources: list[tuple[str, list[str]]] = []
    for i in range(n - n_near - n_exact):
        words = original()
        docs.append((f"syn-{i:07d}", " ".join(words)))
        sources.append((docs[-1][0], words))
    for i in range(n_near):
        src_id, words = rng.choice(sources)
        docs.append((f"near-{i:07d}", " ".join(near_copy(words, rng.uniform(0.3, 1.0)))))
        family[docs[-1][0]] = src_id
    for i in range(n_exact):
        src_id, words = rng.choice(sources)
        text = " ".join(words)
        text = text.lower() if i % 2 else text.replace(" ", "  ")
        docs.append((f"exact-{i:07d}", text))
        family[docs[-1][0]] = src_id
    pairs = family_pairs(docs, family)
    rng.shuffle(docs)
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(docs) // shards)
    for s in range(shards):
        part = docs[s * per : (s + 1) * per]
        pq.write_table(
            pa.table({"doc_id": [d for d, _ in part], "text": [t for _, t in part]}),
            folder / f"part-{s:05d}.parquet",
        )
    return pairs


def family_pairs(docs: list[tuple[str, str]], family: dict[str, str]) -> list[tuple[str, str, float]]:
    """Every pair inside a family (a source and its copies) at Jaccard >= 0.3, with its Jaccard."""
    members: dict[str, list[str]] = {}
    for doc_id, src in family.items():
        members.setdefault(src, [src]).append(doc_id)
    text_of = dict(docs)
    pairs = []
    for group in members.values():
        sh = {d: shingles(text_of[d]) for d in group}
        for x in range(len(group)):
            for y in range(x + 1, len(group)):
                a, b = sorted((group[x], group[y]))
                j = jaccard(sh[a], sh[b])
                if j >= 0.3:
                    pairs.append((a, b, j))
    return pairs


# ---- scoring ------------------------------------------------------------------------------------


def clusters(kept_dir: str, removed_dir: str, tool: str) -> tuple[dict[str, str], int, int]:
    """doc id -> cluster label for documents in a duplicate cluster; plus kept and removed counts."""
    import pyarrow.parquet as pq

    def rows(folder: str) -> list[dict]:
        return [r for f in sorted(Path(folder).rglob("*.parquet")) for r in pq.read_table(f).to_pylist()]

    kept, removed = rows(kept_dir), rows(removed_dir)
    label: dict[str, str] = {}
    if tool == "thresher":
        for r in removed:
            label[r["id"]] = label[r["dup_of"]] = r["dup_of"]
    else:
        for r in kept + removed:
            cid = (r.get("metadata") or {}).get("minhash_cluster_id", -1)
            if cid is not None and cid >= 0:
                label[r["id"]] = str(cid)
    return label, len(kept), len(removed)


def score(label: dict[str, str], truth: list[tuple[str, str, float]], threshold: float) -> dict:
    groups: dict[str, list[str]] = {}
    for doc, c in label.items():
        groups.setdefault(c, []).append(doc)
    predicted = {(min(a, b), max(a, b)) for g in groups.values() for i, a in enumerate(g) for b in g[i + 1 :]}
    positive = {(a, b) for a, b, j in truth if j >= threshold}
    tp = len(predicted & positive)
    precision = tp / len(predicted) if predicted else 1.0
    recall = tp / len(positive) if positive else 1.0
    bins = {}
    for lo in [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]:
        hi = lo + 0.1 if lo < 1.0 else 1.01
        sel = [(a, b) for a, b, j in truth if lo <= j < hi]
        if sel:
            found = sum(1 for a, b in sel if a in label and label.get(a) == label.get(b))
            bins[f"{lo:.1f}"] = {
                "pairs": len(sel),
                "found": round(found / len(sel), 3),
                "theory": round(_lsh_curve(lo, hi, truth), 3),
            }
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "predicted_pairs": len(predicted),
        "true_pairs": len(positive),
        "recall_by_jaccard": bins,
    }


def _lsh_curve(lo: float, hi: float, truth: list[tuple[str, str, float]]) -> float:
    js = [j for _, _, j in truth if lo <= j < hi]
    return sum(1 - (1 - j**ROWS) ** BANDS for j in js) / len(js)


# ---- driver -------------------------------------------------------------------------------------


def _child(python: str, mode: str, args: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([python, __file__, mode, *args], capture_output=True, text=True, env=env, cwd="/")
    if out.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SAMPLE, help="folder of Parquet shards (doc_id, text)")
    ap.add_argument(
        "--pairs", type=Path, default=SAMPLE_PAIRS, help="Parquet of (doc_id_a, doc_id_b, jaccard)"
    )
    ap.add_argument("--synthetic", type=int, default=0, help="generate N documents instead of --data")
    ap.add_argument("--shards", type=int, default=8, help="shards of the synthetic data")
    ap.add_argument(
        "--workers", type=int, default=1, help="processes per tool (docs/s per core divides by it)"
    )
    ap.add_argument("--datatrove-python", default="/tmp/dt-venv/bin/python")
    ap.add_argument(
        "--tokenizers", default="en,split", help="DataTrove word tokenizers to run: en (spaCy), split"
    )
    ap.add_argument(
        "--threshold", type=float, default=0.75, help="Jaccard at which a pair is a true duplicate"
    )
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dedup-bench-"))
    try:
        if args.synthetic:
            data = work / "data"
            t = time.perf_counter()
            truth = make_synthetic(args.synthetic, data, args.shards)
            print(
                f"generated {args.synthetic:,} documents in {time.perf_counter() - t:.1f}s", file=sys.stderr
            )
        else:
            import pyarrow.parquet as pq

            data = args.data
            truth = [
                (r["doc_id_a"], r["doc_id_b"], r["jaccard"]) for r in pq.read_table(args.pairs).to_pylist()
            ]
        import pyarrow.parquet as pq

        docs = sum(pq.ParquetFile(f).metadata.num_rows for f in data.glob("*.parquet"))
        contestants = [("thresher", sys.executable, "--_run-thresher", [])]
        for tok in args.tokenizers.split(","):
            if tok:
                contestants.append((f"datatrove ({tok})", args.datatrove_python, "--_run-datatrove", [tok]))
        results = {}
        for name, python, mode, extra in contestants:
            folder = work / name.replace(" ", "_").replace("(", "").replace(")", "")
            out = _child(python, mode, [str(data), str(folder), str(args.workers), *extra])
            label, kept, removed = clusters(
                out["kept"], out["removed"], "thresher" if name == "thresher" else "dt"
            )
            wall = sum(t["wall"] for t in out["timings"].values())
            cpu = sum(t["cpu"] for t in out["timings"].values())
            results[name] = {
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "docs_per_cpu_s": round(docs / cpu, 1),
                "docs_per_s_per_core": round(docs / wall / args.workers, 1),
                "kept": kept,
                "removed": removed,
                "steps": {k: {m: round(v, 2) for m, v in t.items()} for k, t in out["timings"].items()},
                **score(label, truth, args.threshold),
            }
            print(f"{name}: {wall:.1f}s wall, {cpu:.1f}s CPU, removed {removed}", file=sys.stderr)
        ours = results["thresher"]
        for r in results.values():
            r["cpu_vs_thresher"] = round(r["cpu_s"] / ours["cpu_s"], 2)
        report = {
            "documents": docs,
            "workers": args.workers,
            "threshold": args.threshold,
            "data": "synthetic" if args.synthetic else str(args.data),
            "cpu_count": os.cpu_count(),
            "results": results,
        }
        print(_table(report))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    finally:
        if args.keep:
            print(f"work folder: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _table(report: dict) -> str:
    lines = [
        f"{report['documents']:,} documents, {report['workers']} worker(s), truth: Jaccard >= {report['threshold']}",
        f"{'tool':<20}{'wall s':>8}{'CPU s':>8}{'docs/CPU-s':>12}{'x ours':>8}{'P':>7}{'R':>7}{'F1':>7}",
    ]
    for name, r in report["results"].items():
        lines.append(
            f"{name:<20}{r['wall_s']:>8.1f}{r['cpu_s']:>8.1f}{r['docs_per_cpu_s']:>12.0f}"
            f"{r['cpu_vs_thresher']:>8.2f}{r['precision']:>7.3f}{r['recall']:>7.3f}{r['f1']:>7.3f}"
        )
    lines.append("recall by Jaccard bin (found / LSH theory):")
    for name, r in report["results"].items():
        cells = "  ".join(
            f"{b}:{v['found']:.2f}/{v['theory']:.2f}" for b, v in r["recall_by_jaccard"].items()
        )
        lines.append(f"  {name:<18}{cells}")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_run-thresher":
        sys.path.append(str(REPO))  # after the standard library: the repo's operator/ must not shadow it
        result = run_thresher(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
        print(json.dumps(result))
    elif len(sys.argv) > 1 and sys.argv[1] == "--_run-datatrove":
        result = run_datatrove(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        print(json.dumps(result))
    else:
        main()
