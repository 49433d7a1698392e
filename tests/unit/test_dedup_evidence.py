"""Evidence of dedup removals (dup_of, similarity, dup_group), MinHash text verification,
`thresher explain` and the report's evidence section."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.cli_explain import explain
from curation.corpus import EVIDENCE
from curation.dataset import Location
from curation.lookup import find_documents
from curation.params.dedup import MinHashParams
from curation.stages import minhash
from curation.stages import minhash_math as mm
from curation.stages.minhash import pair_batches, range_indices
from tests.helpers import make_spec, output_rows, run_all, write_docs

# ---- pure functions ------------------------------------------------------------------------------


def test_pair_jaccard_equals_python_set_jaccard() -> None:
    rng = np.random.default_rng(0)
    sets_a, sets_b = [], []
    for _ in range(200):
        a = set(rng.integers(0, 60, rng.integers(0, 40)).tolist())
        b = set(rng.integers(0, 60, rng.integers(1, 40)).tolist())
        sets_a.append(sorted(a))
        sets_b.append(sorted(b))
    flat = lambda sets: np.array([x for s in sets for x in s], dtype=np.uint32)  # noqa: E731
    got = mm.pair_jaccard(flat(sets_a), np.array([len(s) for s in sets_a]), flat(sets_b),
                          np.array([len(s) for s in sets_b]))
    want = [len(set(a) & set(b)) / len(set(a) | set(b)) for a, b in zip(sets_a, sets_b, strict=True)]
    assert np.allclose(got, want)


def test_shingle_sets_are_the_keys_the_signature_is_the_minimum_over() -> None:
    texts = pa.array(["The quick brown fox jumps over the lazy dog again and again.", "short one", "",
                      "日本語の文章はスペースなしで書かれます"])
    sigs, flat, offsets = mm.signatures_and_shingles(texts, 5, 16, seed=3)
    assert np.array_equal(sigs, mm.signatures(texts, 5, 16, seed=3))
    again, again_offsets = mm.shingle_sets(texts, 5)
    assert np.array_equal(flat, again) and np.array_equal(offsets, again_offsets)
    a, b = mm.minhash_permutations(16, 3)
    for d in range(len(texts)):
        keys = flat[offsets[d] : offsets[d + 1]].astype(np.uint64)
        if not len(keys):
            assert not mm.has_shingles(sigs[d : d + 1])[0]
            continue
        assert np.all(np.diff(keys.astype(np.int64)) > 0)  # sorted, distinct
        expected = ((a * keys[None, :] + b).min(axis=1) >> np.uint64(32)).astype(np.uint32)
        assert np.array_equal(sigs[d], expected)


def test_sorted_unique_equals_numpy_unique() -> None:
    x = np.random.default_rng(1).integers(0, 50, 1000).astype(np.uint64)
    assert np.array_equal(mm.sorted_unique(x), np.unique(x))
    assert len(mm.sorted_unique(np.zeros(0, np.uint64))) == 0


def test_range_indices_and_pair_batches() -> None:
    assert range_indices(np.array([5, 0, 9]), np.array([2, 0, 3])).tolist() == [5, 6, 9, 10, 11]
    batches = list(pair_batches(np.array([3, 3, 10, 1, 1]), budget=6))
    assert [(b.start, b.stop) for b in batches] == [(0, 2), (2, 3), (3, 5)]


def test_verify_parameters_keep_the_old_meaning_of_verify_threshold() -> None:
    assert MinHashParams().verify_mode == "none" and MinHashParams().verify_at is None
    old = MinHashParams(verify_threshold=0.7)
    assert (old.verify_mode, old.verify_at) == ("signatures", 0.7)
    assert MinHashParams(verify="text").verify_at == 0.8
    with pytest.raises(ValueError, match="no effect"):
        MinHashParams(verify="none", verify_threshold=0.5)


# ---- corpora with known Jaccard ---------------------------------------------------------------------


def _words(rng: random.Random, n: int) -> list[str]:
    return [f"w{rng.randrange(10**7)}" for _ in range(n)]


def _variant(rng: random.Random, words: list[str], every: int) -> list[str]:
    out = list(words)
    for i in range(rng.randrange(every), len(out), every):
        out[i] = f"x{rng.randrange(10**7)}"
    return out


def _shingle_jaccard(a: str, b: str) -> float:
    flat, offsets = mm.shingle_sets(pa.array([a, b]), 5)
    sa, sb = set(flat[: offsets[1]].tolist()), set(flat[offsets[1] :].tolist())
    return len(sa & sb) / len(sa | sb)


def _evidence_corpus(seed: int = 0) -> list[str]:
    """Originals each with an exact copy, a near copy (one word in 60 changed: Jaccard ~0.92) and
    a loose copy (one word in 12: Jaccard ~0.65, which LSH 14x8 proposes now and then), plus
    unrelated documents."""
    rng = random.Random(seed)
    texts: list[str] = []
    for _ in range(12):
        words = _words(rng, 300)
        texts += [" ".join(words), " ".join(words).upper(), " ".join(_variant(rng, words, 60)),
                  " ".join(_variant(rng, words, 12))]
    texts += [" ".join(_words(rng, 200)) for _ in range(20)]
    rng.shuffle(texts)
    return texts


def _run(tmp: Path, texts: list[str], minhash_params: dict[str, Any], parallelism: int = 2,
         keep_work: bool = True) -> tuple[Path, dict[str, Any]]:
    inp = write_docs(tmp / "in", texts, shards=4)
    stages = [{"type": "exact-dedup"}, {"type": "minhash-dedup", "params": minhash_params}]
    spec = make_spec(inp, tmp / "out", stages, keep_work=keep_work, parallelism=parallelism)
    return tmp / "out", run_all(spec)


def assert_every_removal_names_a_survivor(out: Path, stages: list[str]) -> None:
    """For every removal: dup_of (and dup_group) is set; following dup_of from stage to stage
    always ends at a document in data/, and each hop goes to a document that the stage itself
    kept (it can only be removed by a later stage)."""
    kept = {r["doc_id"] for r in output_rows(out)}
    rejected = {r["doc_id"]: r for r in output_rows(out, "rejected")}
    order = {name: i for i, name in enumerate(stages)}
    assert rejected, "the corpus must produce removals"
    for doc, row in rejected.items():
        assert row["dup_of"] is not None and row["dup_group"] is not None and row["similarity"] is not None, doc
        hops, current = 0, row
        while True:
            target = current["dup_of"]
            assert target != current["doc_id"]
            if target in kept:
                break
            later = rejected[target]  # removed, but only by a later stage
            assert order[later["stage"]] > order[current["stage"]], (doc, target)
            current, hops = later, hops + 1
            assert hops <= len(stages)


# ---- the stages ------------------------------------------------------------------------------------


@pytest.mark.parametrize("parallelism", [1, 3])
def test_exact_and_minhash_removals_name_a_kept_survivor_with_evidence(tmp_path: Path, parallelism: int) -> None:
    texts = _evidence_corpus()
    out, summary = _run(tmp_path, texts, {"verify": "text"}, parallelism=parallelism)
    assert summary["conservation"]["holds"]
    assert_every_removal_names_a_survivor(out, ["exact-dedup", "minhash-dedup"])
    text_of = {f"d{i:05d}": t for i, t in enumerate(texts)}
    kept_rows = output_rows(out)
    assert not set(kept_rows[0]) & set(EVIDENCE)  # kept rows carry no (null) evidence column
    rejected = output_rows(out, "rejected")
    exact = [r for r in rejected if r["stage"] == "exact-dedup"]
    near = [r for r in rejected if r["stage"] == "minhash-dedup"]
    assert len(exact) == 12 and all(r["similarity"] == 1.0 and r["dup_group"] == r["dup_of"] for r in exact)
    assert all(r["similarity_estimate"] is None for r in exact)
    assert len(near) >= 12
    for r in near:  # the exact Jaccard of the two documents' shingle sets, and the estimate next to it
        assert r["similarity"] == pytest.approx(_shingle_jaccard(text_of[r["doc_id"]], text_of[r["dup_of"]]))
        assert r["similarity"] >= 0.8 and abs(r["similarity_estimate"] - r["similarity"]) < 0.2
        assert r["dup_group"] == r["dup_of"]  # keep: first: the survivor is the component's first member


def test_text_verification_rejects_loose_candidates_and_samples_them(tmp_path: Path) -> None:
    # Variants of one text at Jaccard ~0.6: candidates now and then, never true at 0.8.
    rng = random.Random(4)
    words = _words(rng, 400)
    texts = [" ".join(words), " ".join(words[:-1])] + [" ".join(_variant(rng, words, 16)) for _ in range(40)]
    loose_out, loose = _run(tmp_path / "loose", texts, {})
    out, strict = _run(tmp_path / "strict", texts, {"verify": "text", "verifyThreshold": 0.8})
    assert loose["stages"][2]["removed"]["near-duplicate"] > 1
    assert strict["stages"][2]["removed"] == {"near-duplicate": 1}
    extra = strict["stages"][2]["extra"]
    assert extra["pairs_failed_verification"] > 0
    assert extra["verification"]["mode"] == "text" and extra["verification"]["threshold"] == 0.8
    sample = [p for rank in extra["verification"]["rejected_sample"].values() for p in rank]
    assert 0 < len(sample) <= 20
    text_of = {f"d{i:05d}": t for i, t in enumerate(texts)}
    for pair in sample:
        assert pair["similarity"] < 0.8
        assert pair["similarity"] == pytest.approx(_shingle_jaccard(text_of[pair["a"]], text_of[pair["b"]]), abs=1e-4)
    # without verification the similarity column is the signature estimate
    for r in output_rows(loose_out, "rejected"):
        if r["stage"] == "minhash-dedup":
            assert r["similarity"] == r["similarity_estimate"]


def test_text_verification_in_small_batches_gives_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _evidence_corpus(seed=5)
    big, _ = _run(tmp_path / "big", texts, {"verify": "text"})
    monkeypatch.setattr(minhash, "VERIFY_KEYS", 700)  # a few pairs per batch
    monkeypatch.setattr(minhash, "VERIFY_BLOCK", 3)
    small, _ = _run(tmp_path / "small", texts, {"verify": "text"})
    for sub in ("data", "rejected"):
        assert sorted(map(str, output_rows(big, sub))) == sorted(map(str, output_rows(small, sub)))


def test_signature_verification_uses_the_side_file_rows(tmp_path: Path) -> None:
    texts = _evidence_corpus(seed=6)
    out, summary = _run(tmp_path, texts, {"verifyThreshold": 0.8})
    assert summary["stages"][2]["extra"]["verification"]["mode"] == "signatures"
    assert_every_removal_names_a_survivor(out, ["exact-dedup", "minhash-dedup"])
    near = [r for r in output_rows(out, "rejected") if r["stage"] == "minhash-dedup"]
    assert near and all(r["similarity"] == r["similarity_estimate"] for r in near)


# ---- lookup, explain, report --------------------------------------------------------------------------


def test_find_documents_reads_matching_row_groups_only(tmp_path: Path) -> None:
    for k in range(3):
        table = pa.table({"n": pa.array(range(k * 100, k * 100 + 100), pa.int64()),
                          "text": [f"text {i}" for i in range(k * 100, k * 100 + 100)]})
        pq.write_table(table, tmp_path / f"part-{k:05d}.parquet", row_group_size=10)
    loc = Location.of(str(tmp_path))
    names = [f"part-{k:05d}.parquet" for k in range(3)]
    found = find_documents(loc, names, "n", ["5", "250", "999"], ["text"])
    assert sorted(found.column("n").to_pylist()) == [5, 250]
    assert set(found.column("text").to_pylist()) == {"text 5", "text 250"}
    assert find_documents(loc, names, "n", ["not a number"]).num_rows == 0
    assert find_documents(loc, names, "n", ["5", "6"], limit=1).num_rows >= 1


@pytest.mark.parametrize("keep_work", [False, True])
def test_explain_prints_each_stage_decision_with_evidence(tmp_path: Path, keep_work: bool,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    texts = _evidence_corpus(seed=7)
    out, _ = _run(tmp_path, texts, {"verify": "text"}, keep_work=keep_work)
    rejected = output_rows(out, "rejected")
    exact = next(r for r in rejected if r["stage"] == "exact-dedup")
    near = next(r for r in rejected if r["stage"] == "minhash-dedup")

    result = explain(str(out), exact["doc_id"])
    decisions = {s["stage"]: s for s in result["stages"]}
    assert decisions["ingest"]["decision"] == "kept"
    assert decisions["exact-dedup"]["decision"] == "removed"
    assert decisions["exact-dedup"]["evidence"]["dup_of"] == exact["dup_of"]
    assert decisions["minhash-dedup"]["decision"] == "not reached"
    # the kept copy is in data/, or was removed by the later stage (as a near-duplicate itself)
    assert result["dup_of"]["where"] == "data" or result["dup_of"]["stage"] == "minhash-dedup"

    assert main(["explain", near["doc_id"], "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "minhash-dedup" in printed and "near-duplicate" in printed and near["dup_of"] in printed
    assert "exact Jaccard" in printed and "kept (in data/)" in printed

    survivor = explain(str(out), near["dup_of"])
    assert survivor["where"] == "data" and all(s["decision"] == "kept" for s in survivor["stages"])
    assert near["doc_id"] in {d["id"] for d in survivor["removed_duplicates"]["first"]}
    if keep_work:  # the per-stage decision files are read too
        assert "decision_file" in next(s for s in survivor["stages"] if s["stage"] == "minhash-dedup")
    assert main(["explain", "no-such-id", "--output", str(out)]) != 0


def test_report_shows_pairs_side_by_side_histograms_and_rejected_candidates(tmp_path: Path) -> None:
    rng = random.Random(8)
    words = _words(rng, 400)
    texts = _evidence_corpus(seed=8) + [" ".join(_variant(rng, words, 16)) for _ in range(30)]  # + loose pairs
    out, _ = _run(tmp_path, texts, {"verify": "text"})
    report = (out / "report.html").read_text()
    assert "Duplicate evidence" in report
    assert report.count("class='pair'") >= 2  # exact and near
    assert "<ins>" in report and "<del>" in report  # the near copy's changed words are marked
    assert "similarity of removals" in report
    assert "candidate pairs rejected" in report and "signature estimate" in report
