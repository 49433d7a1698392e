"""Dedup evidence: are the removals true duplicates, and what does text verification cost?

    python bench/evidence.py                      # bundled sample + a generated corpus (20k docs)
    python bench/evidence.py --docs 50000         # a larger generated corpus
    python bench/evidence.py --semantic           # also semantic dedup on the sample (models extra)

For each corpus it runs exact-dedup then minhash-dedup four times on the same data, in this
process, step by step (CPU seconds per step from `time.process_time`): FineWeb's 14 bands x 8
rows with `verify: none`, `verify: signatures` and `verify: text` at `--threshold` (0.8), and
`verify: text` behind a more sensitive 20 x 5 S-curve (`CONFIGS`). It scores the removals of the
MinHash stage against a reference Jaccard computed here, independently of the engine (word
5-gram sets after NFKC, lowercase, punctuation to spaces: the definition of examples/README.md):

* precision@t: share of removals whose `dup_of` (the survivor named as evidence) has reference
  Jaccard >= t with the removed document; also at 0.5;
* partner@t (sample only): share of removals with *some* document of the stage's input at
  reference Jaccard >= t (examples/data/sample_similar_pairs.parquet lists every pair >= 0.3);
* recall@t: of the true pairs at Jaccard >= t whose two documents both reached the MinHash stage,
  the share that do not both survive it (sample: every pair in sample_similar_pairs; generated:
  every planted near copy with its original, Jaccard as the generator measured it);
* the evidence itself: mean |similarity - reference| of the `similarity` column.

With `--semantic`: exact-dedup then semantic-dedup on the sample; share of semantic removals whose
`dup_of` is a true near-duplicate (reference Jaccard >= 0.3, or the pair is listed as similar), and
groups without a survivor (a removal whose `dup_of` is not in data/).

Prints a table and writes JSON to bench/results/evidence-<date>.json. Not a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO))  # after the standard library: the repo's operator/ must not shadow it
sys.path.append(str(REPO / "bench"))

SAMPLE = REPO / "examples" / "data" / "sample"
PAIRS = REPO / "examples" / "data" / "sample_similar_pairs.parquet"
NGRAM = 5


# ---- reference Jaccard (examples/README.md) -------------------------------------------------------


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(text.split())


def shingles(text: str) -> set[str]:
    words = normalise(text).split(" ")
    if len(words) <= NGRAM:
        return {" ".join(words)}
    return {" ".join(words[i : i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


# ---- running a pipeline in this process --------------------------------------------------------


def run_pipeline(input_dir: Path, out: Path, stages: list[dict[str, Any]], id_field: str, models: Path | None = None,
                 parallelism: int = 2) -> dict[str, Any]:
    from curation.executor import run_rank
    from curation.plan import plan_steps
    from curation.spec import parse_spec

    shutil.rmtree(out, ignore_errors=True)
    doc: dict[str, Any] = {"input": {"path": str(input_dir), "idField": id_field},
                           "output": {"path": str(out), "keepWork": False},
                           "stages": stages, "parallelism": parallelism}
    if models is not None:
        doc["models"] = {"path": str(models)}
    spec = parse_spec(doc)
    cpu: dict[str, float] = {}
    wall0 = time.perf_counter()
    for step in plan_steps(spec):
        start = time.process_time()
        for rank in range(step.world_size):
            run_rank(spec, step.id, rank, step.world_size)
        cpu[step.id] = round(time.process_time() - start, 3)
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    summary["_cpu_seconds"] = cpu
    summary["_wall_seconds"] = round(time.perf_counter() - wall0, 2)
    return summary


def read_rows(folder: Path, columns: list[str] | None = None) -> list[dict[str, Any]]:
    tables = [pq.read_table(p, columns=columns) for p in sorted(folder.glob("part-*.parquet"))]
    return pa.concat_tables(tables, promote_options="permissive").to_pylist() if tables else []


# ---- scoring -----------------------------------------------------------------------------------


def score_minhash(out: Path, texts: dict[str, str], truth: list[tuple[str, str, float]], id_field: str,
                  stage: str, threshold: float, all_pairs: bool) -> dict[str, Any]:
    rejected = read_rows(out / "rejected")
    kept = {r[id_field] for r in read_rows(out / "data", [id_field])}
    removed = [r for r in rejected if r["stage"] == stage]
    earlier = {r[id_field] for r in rejected if r["stage"] != stage}  # exact-dedup: never seen by MinHash
    ref = [jaccard(texts[r[id_field]], texts[r["dup_of"]]) for r in removed]
    n = max(1, len(removed))
    result: dict[str, Any] = {
        "removals": len(removed),
        f"precision@{threshold}": round(sum(j >= threshold for j in ref) / n, 4),
        "precision@0.5": round(sum(j >= 0.5 for j in ref) / n, 4),
        "dup_of_kept": round(sum(r["dup_of"] in kept for r in removed) / n, 4),
        "similarity_error": round(sum(abs(r["similarity"] - j) for r, j in zip(removed, ref, strict=True)) / n, 4),
    }
    if all_pairs:  # every pair >= 0.3 is listed: a removal has a true partner if one is listed
        best: dict[str, float] = {}
        for a, b, j in truth:
            if a in earlier or b in earlier:
                continue
            best[a], best[b] = max(best.get(a, 0.0), j), max(best.get(b, 0.0), j)
        result[f"partner@{threshold}"] = round(sum(best.get(r[id_field], 0.0) >= threshold for r in removed) / n, 4)
    gone = {r[id_field] for r in removed}
    true = [(a, b) for a, b, j in truth if j >= threshold and a not in earlier and b not in earlier]
    result[f"true_pairs@{threshold}"] = len(true)
    result[f"recall@{threshold}"] = round(sum(a in gone or b in gone for a, b in true) / max(1, len(true)), 4)
    return result


def minhash_stats(summary: dict[str, Any], stage: str) -> dict[str, Any]:
    entry = next(s for s in summary["stages"] if s["name"] == stage)
    extra = entry.get("extra", {})
    cpu = {k.split(".", 1)[1]: v for k, v in summary["_cpu_seconds"].items() if k.startswith(stage + ".")}
    return {"cpu_seconds": round(sum(cpu.values()), 3), "cpu_by_step": cpu,
            "candidate_pairs": extra.get("candidate_pairs"),
            "pairs_failed_verification": extra.get("pairs_failed_verification", 0)}


# (label, verify mode, bands, rows per band): FineWeb's 14x8 three ways, and text verification
# behind a more sensitive S-curve (20x5: P(found) 0.9997 at Jaccard 0.8), which only text
# verification makes affordable: the extra candidates at 0.5-0.8 are rejected against the text.
CONFIGS = (("none", "none", 14, 8), ("signatures", "signatures", 14, 8), ("text", "text", 14, 8),
           ("text-20x5", "text", 20, 5))


def minhash_runs(name: str, input_dir: Path, work: Path, texts: dict[str, str], truth: list[tuple[str, str, float]],
                 id_field: str, threshold: float, all_pairs: bool) -> dict[str, Any]:
    exact = {"type": "exact-dedup", "params": {"normalize": "strip-punctuation"}}
    runs: dict[str, Any] = {}
    for label, mode, bands, rows in CONFIGS:
        params: dict[str, Any] = {"verify": mode, "bands": bands, "rowsPerBand": rows}
        if mode != "none":
            params["verifyThreshold"] = threshold
        out = work / f"{name}-{label}"
        print(f"  {name}: minhash {bands}x{rows} verify={mode} ...", flush=True)
        summary = run_pipeline(input_dir, out, [exact, {"type": "minhash-dedup", "params": params}], id_field)
        runs[label] = {**score_minhash(out, texts, truth, id_field, "minhash-dedup", threshold, all_pairs),
                       **minhash_stats(summary, "minhash-dedup"), "wall_seconds": summary["_wall_seconds"]}
        if mode == "text":
            stage = next(s for s in summary["stages"] if s["name"] == "minhash-dedup")
            samples = stage["extra"].get("verification", {}).get("rejected_sample", {}).values()
            runs[label]["rejected_sample"] = [p for v in samples for p in v][:5]
    for label, *_ in CONFIGS[1:]:
        runs[label]["extra_cpu_seconds_vs_none"] = round(runs[label]["cpu_seconds"] - runs["none"]["cpu_seconds"], 3)
    return runs


# ---- corpora -------------------------------------------------------------------------------------


def sample_corpus() -> tuple[dict[str, str], list[tuple[str, str, float]]]:
    texts = {r["doc_id"]: r["text"] for r in read_rows(SAMPLE, ["doc_id", "text"])}
    pairs = pq.read_table(PAIRS).to_pylist()
    return texts, [(p["doc_id_a"], p["doc_id_b"], float(p["jaccard"])) for p in pairs]


def generated_corpus(folder: Path, docs: int) -> tuple[dict[str, str], list[tuple[str, str, float]]]:
    import scale_corpus

    scale_corpus.generate(folder, docs, seed=0)
    texts = {r["doc_id"]: r["text"] for r in read_rows(folder, ["doc_id", "text"])}
    dups, _ = scale_corpus.read_truth(folder)
    near = [r for r in dups.to_pylist() if r["kind"] == "near"]
    return texts, [(r["doc_id"], r["original_id"], float(r["jaccard"])) for r in near]


def semantic_run(work: Path, texts: dict[str, str], truth: list[tuple[str, str, float]],
                 epsilon: float, long_documents: str) -> dict[str, Any]:
    from curation.models.sample_models import populate

    models = work / "models"
    if not models.exists():
        populate(models)
    out = work / f"sample-semantic-{long_documents}"
    stages = [{"type": "exact-dedup", "params": {"normalize": "strip-punctuation"}},
              {"type": "semantic-dedup", "params": {"clusters": 20, "epsilon": epsilon,
                                                    "embedding": {"longDocuments": long_documents}}}]
    print(f"  sample: semantic-dedup longDocuments={long_documents} ...", flush=True)
    summary = run_pipeline(SAMPLE, out, stages, "doc_id", models=models)
    similar = {(a, b) for a, b, _ in truth} | {(b, a) for a, b, _ in truth}
    rejected = [r for r in read_rows(out / "rejected") if r["stage"] == "semantic-dedup"]
    kept = {r["doc_id"] for r in read_rows(out / "data", ["doc_id"])}
    ref = [jaccard(texts[r["doc_id"]], texts[r["dup_of"]]) for r in rejected]
    n = max(1, len(rejected))
    groups: dict[str, list[str]] = {}
    for r in rejected:
        groups.setdefault(r["dup_group"], []).append(r["doc_id"])
    earlier = {r["doc_id"] for r in read_rows(out / "rejected", ["doc_id", "stage"]) if r["stage"] != "semantic-dedup"}
    gone = {r["doc_id"] for r in rejected}
    recall = {}
    for t in (0.5, 0.8):
        true = [(a, b) for a, b, j in truth if j >= t and a not in earlier and b not in earlier]
        recall[f"recall@{t}"] = round(sum(a in gone or b in gone for a, b in true) / max(1, len(true)), 4)
    return {**recall,
        "removals": len(rejected),
        "true_near_duplicates": round(
            sum(j >= 0.3 or (r["doc_id"], r["dup_of"]) in similar for r, j in zip(rejected, ref, strict=True)) / n, 4),
        "jaccard>=0.5": round(sum(j >= 0.5 for j in ref) / n, 4),
        "groups": len(groups),
        "groups_without_survivor": sum(g not in kept for g in groups),
        "removals_whose_dup_of_is_not_kept": sum(r["dup_of"] not in kept for r in rejected),
        "cpu_seconds": round(sum(v for k, v in summary["_cpu_seconds"].items() if k.startswith("semantic-dedup.")), 2),
    }


# ---- output ----------------------------------------------------------------------------------------


def table(results: dict[str, Any], threshold: float) -> str:
    labels = [c[0] for c in CONFIGS]
    lines = []
    for name in ("sample", "generated"):
        runs = results.get(name)
        if not runs:
            continue
        lines.append(f"\n{name} ({results['corpora'][name]['docs']:,} docs), verify threshold {threshold}")
        keys = [f"precision@{threshold}", "precision@0.5", f"partner@{threshold}", f"recall@{threshold}",
                f"true_pairs@{threshold}", "removals", "dup_of_kept", "similarity_error", "candidate_pairs",
                "pairs_failed_verification", "cpu_seconds", "extra_cpu_seconds_vs_none"]
        lines.append(f"{'':28}" + "".join(f"{m:>13}" for m in labels))
        for k in keys:
            if k not in runs["text"]:
                continue
            lines.append(f"{k:28}" + "".join(f"{runs[m].get(k, '')!s:>13}" for m in labels))
        for label in labels:
            steps = ", ".join(f"{k} {v}" for k, v in runs[label]["cpu_by_step"].items())
            lines.append(f"  CPU-s per step ({label}): {steps}")
    for key, sem in results.get("semantic", {}).items():
        lines.append(f"\nsemantic-dedup on the sample ({key}): " + ", ".join(f"{k} {v}" for k, v in sem.items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20_000, help="documents of the generated corpus (0: skip)")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/thresher-evidence"))
    parser.add_argument("--semantic", action="store_true", help="also semantic dedup on the sample")
    parser.add_argument("--epsilon", type=float, default=0.05)
    parser.add_argument("--long-documents", default="head,head-tail,chunked-mean")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"date": datetime.date.today().isoformat(), "threshold": args.threshold, "corpora": {}}
    texts, truth = sample_corpus()
    results["corpora"]["sample"] = {"docs": len(texts), "true_pairs_listed": len(truth)}
    results["sample"] = minhash_runs("sample", SAMPLE, args.workdir, texts, truth, "doc_id", args.threshold, True)
    if args.docs:
        folder = args.workdir / f"corpus-{args.docs}"
        gtexts, gtruth = generated_corpus(folder, args.docs)
        results["corpora"]["generated"] = {"docs": len(gtexts), "near_copies": len(gtruth)}
        results["generated"] = minhash_runs("generated", folder, args.workdir, gtexts, gtruth, "doc_id",
                                            args.threshold, False)
    if args.semantic:
        results["semantic"] = {f"longDocuments={m}": semantic_run(args.workdir, texts, truth, args.epsilon, m)
                               for m in args.long_documents.split(",")}
    print(table(results, args.threshold))
    target = args.json or REPO / "bench" / "results" / f"evidence-{results['date']}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {target}")


if __name__ == "__main__":
    main()
