from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curation.models.clustering import group_sizes, semantic_duplicates, train_kmeans
from tests.helpers import make_spec, output_rows, run_all, write_docs
from tests.model.corpus import PARAPHRASE_PAIRS, UNRELATED

pytestmark = pytest.mark.model


def test_semantic_duplicates_keep_the_highest_priority_member_of_each_group() -> None:
    base = np.eye(4, dtype=np.float32)
    near = base[0] + 0.01 * base[1]
    emb = np.stack([base[0], near / np.linalg.norm(near), base[2], base[3]])
    dup, nearest = semantic_duplicates(emb, priority=np.array([0.1, 0.9, 0.5, 0.5]), epsilon=0.01)
    assert dup.tolist() == [True, False, False, False]  # row 1 has the higher priority and survives
    assert nearest[0] == 1
    assert group_sizes(nearest).tolist() == [2]


def test_semantic_duplicates_respect_epsilon() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    dup, _ = semantic_duplicates(emb, np.zeros(50), epsilon=0.0)
    assert not dup.any()  # random directions are never identical
    twice = np.concatenate([emb, emb])
    dup, nearest = semantic_duplicates(twice, np.arange(100, dtype=float), epsilon=0.0)
    assert dup.sum() == 50 and (nearest[:50][dup[:50]] >= 50).all()


def test_kmeans_separates_well_separated_groups() -> None:
    rng = np.random.default_rng(1)
    centres = np.eye(8, dtype=np.float32)[:3]
    x = np.concatenate([c + 0.05 * rng.normal(size=(30, 8)) for c in centres]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    centroids = train_kmeans(x, 3, 20, seed=0)
    labels = (x @ centroids.T).argmax(axis=1)
    assert len({tuple(labels[i * 30 : (i + 1) * 30]) for i in range(3)}) == 3
    assert all(len(set(labels[i * 30 : (i + 1) * 30])) == 1 for i in range(3))


def test_encoder_places_paraphrases_closer_than_unrelated_texts(encoder: Any) -> None:
    a, b = PARAPHRASE_PAIRS[0]
    emb = encoder.encode([a, b, UNRELATED[0], ""])
    assert emb.shape == (4, 384)
    assert np.allclose(np.linalg.norm(emb[:3], axis=1), 1.0, atol=1e-4)
    assert emb[0] @ emb[1] > 0.9 > emb[0] @ emb[2]


def test_encoder_result_does_not_depend_on_batching(encoder: Any) -> None:
    texts = [a for a, _ in PARAPHRASE_PAIRS] + UNRELATED
    alone = np.stack([encoder.encode([t])[0] for t in texts[:4]])
    together = encoder.encode(texts)[:4]
    # cosine, not exact equality: bf16 (CPUs with AMX, GPUs) rounds differently per batch shape
    assert (np.sum(alone * together, axis=1) > 0.999).all()


def semantic_spec(tmp_path: Path, models_dir: Path, texts: list[str], **params: Any) -> Any:
    inp = write_docs(tmp_path / "in", texts, shards=2)
    stage = {
        "type": "semantic-dedup",
        "params": {"clusters": 3, "epsilon": 0.1, "embedding": {"model": "all-MiniLM-L6-v2"}, **params},
    }
    return make_spec(inp, tmp_path / "out", [stage], models={"path": str(models_dir)}, parallelism=2)


def test_semantic_dedup_removes_paraphrases_and_keeps_unrelated_documents(
    tmp_path: Path, models_dir: Path
) -> None:
    texts = [t for pair in PARAPHRASE_PAIRS for t in pair] + UNRELATED
    summary = run_all(semantic_spec(tmp_path, models_dir, texts))

    kept = {r["text"] for r in output_rows(tmp_path / "out")}
    rejected = output_rows(tmp_path / "out", "rejected")
    for a, b in PARAPHRASE_PAIRS:
        assert (a in kept) != (b in kept), f"exactly one of a paraphrase pair survives: {a!r}"
    assert set(UNRELATED) <= kept
    assert {r["reason"] for r in rejected} == {"semantic-duplicate"}
    assert summary["conservation"]["holds"]
    stage = summary["stages"][1]
    assert stage["removed"] == {"semantic-duplicate": len(PARAPHRASE_PAIRS)}
    assert stage["extra"]["cluster_sizes"] == {"2": len(PARAPHRASE_PAIRS)}
    assert sum(stage["extra"]["kmeans_cluster_sizes"].values()) == 3
    assert all(isinstance(r["semantic_cluster"], int) for r in output_rows(tmp_path / "out"))


def test_semantic_dedup_can_keep_the_highest_quality_member(tmp_path: Path, models_dir: Path) -> None:
    texts = [t for pair in PARAPHRASE_PAIRS for t in pair] + UNRELATED
    # the second of each pair scores higher
    quality = [0.1 if i < 2 * len(PARAPHRASE_PAIRS) and i % 2 == 0 else 0.9 for i in range(len(texts))]
    inp = write_docs(tmp_path / "in", texts, shards=2, extra={"quality_score": quality})
    stage = {"type": "semantic-dedup", "params": {"clusters": 3, "epsilon": 0.1, "keep": "highest-quality"}}
    run_all(make_spec(inp, tmp_path / "out", [stage], models={"path": str(models_dir)}))
    kept = {r["text"] for r in output_rows(tmp_path / "out")}
    assert {b for _, b in PARAPHRASE_PAIRS} <= kept
    assert not {a for a, _ in PARAPHRASE_PAIRS} & kept


def test_model_stages_pass_an_empty_shard_through(tmp_path: Path, models_dir: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [t for pair in PARAPHRASE_PAIRS[:2] for t in pair] + UNRELATED[:2]
    inp = write_docs(tmp_path / "in", texts, shards=2)
    empty = pa.table({"doc_id": pa.array([], pa.string()), "text": pa.array([], pa.string())})
    pq.write_table(empty, inp / "input-999.parquet")
    stages = [
        {
            "type": "quality-score",
            "params": {"perplexityModel": "SmolLM2-135M-Instruct.Q4_1.gguf", "maxTokens": 16},
        },
        {"type": "semantic-dedup", "params": {"clusters": 2, "epsilon": 0.1}},
        {"type": "redundancy-control", "params": {"clusters": 2, "keepFraction": 0.8}},
        {"type": "rephrase", "params": {"model": "SmolLM2-135M-Instruct.Q4_1.gguf", "ratio": 0.0}},
    ]
    summary = run_all(
        make_spec(inp, tmp_path / "out", stages, models={"path": str(models_dir)}, parallelism=2)
    )
    assert summary["conservation"]["holds"]
    assert summary["totals"]["real_output_docs"] + summary["totals"]["rejected_docs"] == len(texts)
    assert len(list((tmp_path / "out" / "_work").glob("04-rephrase/out/part-*.parquet"))) == 3
