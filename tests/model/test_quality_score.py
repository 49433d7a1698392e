from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pytest

from curation.models.classifier import LinearClassifier, load_classifier, roc_auc
from curation.models.perplexity import PerplexityScorer
from curation.models.sample_models import GENERATOR
from curation.models.training import train_classifier
from curation.stages.quality import (
    cutoff_from_histogram,
    fine_histogram,
    goodness,
    merge_histograms,
    selection_cutoff,
)
from tests.helpers import make_spec, output_rows, run_all, write_docs
from tests.model.corpus import DENSE_TOPIC, PARAPHRASE_PAIRS, PROSE, SPARSE_TOPICS, UNRELATED, keyboard_mash

pytestmark = pytest.mark.model

GOOD = PROSE + SPARSE_TOPICS + UNRELATED + [a for a, _ in PARAPHRASE_PAIRS]
BAD = (
    DENSE_TOPIC
    + keyboard_mash(20, seed=3)
    + [
        f"click here {w} win money now!!!"
        for w in ("to", "and", "for", "today", "fast", "free", "big", "easy")
    ]
)


def labelled() -> tuple[list[str], np.ndarray]:
    texts = GOOD + BAD
    return texts, np.array([1] * len(GOOD) + [0] * len(BAD))


def test_perplexity_ranks_keyboard_mash_below_prose(causal_lm: Any) -> None:
    scorer = PerplexityScorer(causal_lm, max_tokens=32)
    mash = keyboard_mash(4)
    ppl = scorer.score(PROSE + mash + [""])
    prose_ppl, mash_ppl = ppl[: len(PROSE)], ppl[len(PROSE) : -1]
    assert prose_ppl.max() < mash_ppl.min()
    assert np.isinf(ppl[-1])  # nothing to predict in an empty document


def test_perplexity_does_not_depend_on_batching(causal_lm: Any) -> None:
    scorer = PerplexityScorer(causal_lm, max_tokens=32, batch_tokens=40)  # forces several batches
    together = scorer.score(PROSE[:3])
    alone = np.array([scorer.score([t])[0] for t in PROSE[:3]])
    # bf16 (used on CPUs with AMX) rounds differently for different batch shapes: a few percent
    assert np.allclose(together, alone, rtol=0.05)


def test_selection_cutoff_is_a_global_percentile() -> None:
    values = np.array([0.9, 0.8, 0.1, 0.2, np.nan])
    assert selection_cutoff("quality_score", values, None, 0.4) == 0.8
    assert selection_cutoff("perplexity", np.array([10.0, 50.0, 20.0, np.inf]), None, 0.5) == -20.0
    assert selection_cutoff("perplexity", values, 30.0, None) == -30.0


def test_the_cutoff_from_merged_rank_histograms_is_the_global_percentile() -> None:
    rng = np.random.default_rng(4)
    values = rng.lognormal(3.0, 1.5, size=5000)  # perplexities, spread over decades
    good = goodness("perplexity", values)
    hist = merge_histograms([fine_histogram(part) for part in np.array_split(good, 7)])  # seven ranks
    assert hist.num_rows <= len(values) and int(pc.sum(hist.column("count")).as_py()) == len(values)
    cutoff, kept = cutoff_from_histogram(hist, 1234)
    assert kept == int((good >= cutoff).sum())
    assert abs(kept - 1234) <= 2 and cutoff == pytest.approx(np.sort(good)[::-1][1233], rel=1e-3)
    # equal scores stay together, as with an exact percentile
    ties = goodness("quality_score", np.array([0.5] * 4 + [0.9, 0.1]))
    assert cutoff_from_histogram(fine_histogram(ties), 3) == (0.5, 5)


def test_linear_classifier_learns_quality_and_round_trips(tmp_path: Path) -> None:
    texts, labels = labelled()
    report = train_classifier(texts, labels, tmp_path / "quality.npz", holdout=0.25, seed=1, dim=1 << 16)
    assert report.holdout_docs > 10 and report.auc > 0.9
    model = LinearClassifier.load(tmp_path / "quality.npz")
    assert model.info["holdout_auc"] == round(report.auc, 4)
    scores = model.score(texts)
    assert roc_auc(labels, scores) > 0.99  # training data itself is separated


@pytest.mark.skipif(importlib.util.find_spec("fasttext") is None, reason="fasttext module not installed")
def test_fasttext_backend_trains_and_scores_a_bin_model(tmp_path: Path) -> None:
    """Trained as users train it: `thresher train-classifier` in its own process. (In a process that
    has already run the torch causal LM of the other tests, fastText's training on these 68
    documents lands on a different model, held-out AUC 0.72-0.93 instead of 1.0; see the closing
    note of the production-stages issue.)"""
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    texts, labels = labelled()
    pq.write_table(pa.table({"text": texts, "label": ["good" if x else "bad" for x in labels]}),
                   tmp_path / "labelled.parquet")
    out = subprocess.run(
        [sys.executable, "-m", "curation.cli", "train-classifier", "--input", str(tmp_path / "labelled.parquet"),
         "--output", str(tmp_path / "quality.bin"), "--positive", "good", "--backend", "fasttext",
         "--holdout", "0.25", "--seed", "1", "--buckets", str(1 << 16), "--epochs", "25"],
        capture_output=True, text=True, check=False,
    )
    assert out.returncode == 0, out.stderr
    auc = float(out.stdout.split("held-out AUC ")[1].split(",")[0])
    scorer = load_classifier(tmp_path, "quality.bin")
    scores = scorer.score(texts)
    assert auc > 0.8 and ((scores >= 0) & (scores <= 1)).all()


def test_hugging_face_sequence_classifier_scores_are_probabilities(
    models_dir: Path, tiny_hf_classifier: str
) -> None:
    scorer = load_classifier(models_dir, tiny_hf_classifier, "high", max_tokens=32)
    scores = scorer.score(PROSE + [""])
    assert scores.shape == (len(PROSE) + 1,) and ((scores > 0) & (scores < 1)).all()


def test_quality_stage_keeps_a_global_fraction_across_shards(tmp_path: Path, models_dir: Path) -> None:
    mash = keyboard_mash(len(PROSE), seed=5)
    interleaved = [t for pair in zip(PROSE, mash, strict=True) for t in pair]  # shard 0 prose, shard 1 mash
    inp = write_docs(tmp_path / "in", interleaved, shards=2)
    stage = {
        "type": "quality-score",
        "params": {"perplexityModel": GENERATOR, "keepFraction": 0.5, "maxTokens": 32},
    }
    summary = run_all(
        make_spec(inp, tmp_path / "out", [stage], models={"path": str(models_dir)}, parallelism=2)
    )

    kept = output_rows(tmp_path / "out")
    rejected = output_rows(tmp_path / "out", "rejected")
    assert {r["text"] for r in kept} == set(PROSE)  # a per-shard percentile would keep half the mash
    assert {r["reason"] for r in rejected} == {"high-perplexity"}
    assert all(r["perplexity"] > max(k["perplexity"] for k in kept) for r in rejected)
    extra = summary["stages"][1]["extra"]
    assert sum(extra["histograms"]["perplexity_log10"]["counts"]) == len(interleaved)
    assert extra["kept_fraction"] == 0.5 and summary["conservation"]["holds"]


def test_quality_stage_with_a_trained_classifier_and_threshold(tmp_path: Path, models_dir: Path) -> None:
    texts, labels = labelled()
    train_classifier(texts, labels, models_dir / "quality-test.npz", holdout=0.2, dim=1 << 16)
    docs = GOOD[:8] + BAD[:8]
    inp = write_docs(tmp_path / "in", docs, shards=2)
    stage = {"type": "quality-score", "params": {"classifier": "quality-test.npz", "threshold": 0.5}}
    summary = run_all(make_spec(inp, tmp_path / "out", [stage], models={"path": str(models_dir)}))
    kept = output_rows(tmp_path / "out")
    assert {r["text"] for r in kept} == set(GOOD[:8])
    assert all(0.5 <= r["quality_score"] <= 1 for r in kept)
    assert summary["stages"][1]["removed"] == {"low-quality-score": 8}
    assert sum(summary["stages"][1]["extra"]["histograms"]["quality_score"]["counts"]) == 16
