from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curation.models.clustering import group_sizes, semantic_duplicates, train_kmeans
from tests.helpers import make_spec, output_rows, run_all, write_docs
from tests.model.corpus import PARAPHRASE_PAIRS, UNRELATED, keyboard_mash

pytestmark = pytest.mark.model


def test_semantic_duplicates_keep_the_highest_priority_member_of_each_group() -> None:
    base = np.eye(4, dtype=np.float32)
    near = base[0] + 0.01 * base[1]
    emb = np.stack([base[0], near / np.linalg.norm(near), base[2], base[3]])
    dup, nearest, similarity = semantic_duplicates(emb, priority=np.array([0.1, 0.9, 0.5, 0.5]), epsilon=0.01)
    assert dup.tolist() == [True, False, False, False]  # row 1 has the higher priority and survives
    assert nearest.tolist() == [1, -1, -1, -1]
    assert similarity[0] == pytest.approx(float(emb[0] @ emb[1])) and np.isnan(similarity[1:]).all()
    assert group_sizes(nearest).tolist() == [2]


def test_semantic_duplicates_never_remove_a_row_for_a_removed_row() -> None:
    # a ~ b and b ~ c, but a and c are far apart: b goes (close to a), c stays (its only close
    # neighbour is gone), so every removed row names a survivor within epsilon.
    angle = np.deg2rad(20.0)
    emb = np.array(
        [[1.0, 0.0], [np.cos(angle), np.sin(angle)], [np.cos(2 * angle), np.sin(2 * angle)]], dtype=np.float32
    )
    dup, nearest, similarity = semantic_duplicates(emb, priority=np.array([3.0, 2.0, 1.0]), epsilon=0.1)
    assert dup.tolist() == [False, True, False]
    assert nearest[1] == 0 and similarity[1] >= 0.9
    rng = np.random.default_rng(3)
    walk = np.cumsum(rng.normal(scale=0.05, size=(300, 8)), axis=0) + 1.0  # a long chain of neighbours
    walk = (walk / np.linalg.norm(walk, axis=1, keepdims=True)).astype(np.float32)
    dup, nearest, similarity = semantic_duplicates(walk, np.arange(300.0)[::-1], epsilon=0.01)
    assert dup.any() and not dup[nearest[dup]].any()
    assert (similarity[dup] >= 0.99 - 1e-6).all()
    assert np.allclose(similarity[dup], np.sum(walk[dup] * walk[nearest[dup]], axis=1), atol=1e-5)


def test_semantic_duplicates_respect_epsilon() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    dup, _, _ = semantic_duplicates(emb, np.zeros(50), epsilon=0.0)
    assert not dup.any()  # random directions are never identical
    twice = np.concatenate([emb, emb])
    dup, nearest, _ = semantic_duplicates(twice, np.arange(100, dtype=float), epsilon=0.0)
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
    kept_ids = {r["doc_id"] for r in output_rows(tmp_path / "out")}
    assert all(r["dup_of"] in kept_ids and r["similarity"] >= 0.9 for r in rejected)
    assert all(isinstance(r["semantic_cluster"], int) for r in rejected)


def test_every_semantic_duplicate_names_a_survivor_and_no_group_vanishes(
    tmp_path: Path, models_dir: Path
) -> None:
    # Groups of three near-identical sentences, an exact copy (removed first by exact-dedup, with
    # its own `dup_of`), paraphrase pairs and unrelated sentences.
    triples = [
        [f"The cat sat on the warm mat near the kitchen window{end}" for end in (".", " today.", " again.")],
        [
            f"Regular exercise lowers the risk of heart disease and improves sleep{end}"
            for end in (".", " a lot.", " for most.")
        ],
    ]
    texts = [t for group in triples for t in group] + [t for pair in PARAPHRASE_PAIRS[1:4] for t in pair]
    texts += UNRELATED + [UNRELATED[0]]
    inp = write_docs(tmp_path / "in", texts, shards=3)
    stages = [
        {"type": "exact-dedup"},
        {"type": "semantic-dedup", "params": {"clusters": 3, "epsilon": 0.1, "kmeansSample": 12}},
    ]
    summary = run_all(
        make_spec(inp, tmp_path / "out", stages, models={"path": str(models_dir)}, parallelism=2)
    )
    assert summary["conservation"]["holds"]
    extra = summary["stages"][2]["extra"]
    assert extra["kmeans_sample_docs"] <= 12 < extra["assigned_docs"] == len(texts) - 1  # fit on a sample

    kept = output_rows(tmp_path / "out")
    kept_ids = {r["doc_id"] for r in kept}
    text_of = {f"d{i:05d}": t for i, t in enumerate(texts)}
    rejected = output_rows(tmp_path / "out", "rejected")
    semantic = [r for r in rejected if r["reason"] == "semantic-duplicate"]
    exact = [r for r in rejected if r["reason"] == "exact-duplicate"]
    assert len(exact) == 1 and exact[0]["dup_of"] in kept_ids  # its evidence survives the later stage
    assert semantic, "the near-identical groups lose members"
    for row in semantic:  # the document it duplicates stays, and is that similar
        assert row["dup_of"] in kept_ids and row["dup_of"] != row["doc_id"]
        assert 0.9 <= row["similarity"] <= 1.0
    for group in [*triples, *(list(p) for p in PARAPHRASE_PAIRS[1:4])]:
        assert {i for i, t in text_of.items() if t in group} & kept_ids, f"a group lost every member: {group}"
    assert set(UNRELATED) <= {r["text"] for r in kept}
    assert all(r["dup_of"] is None for r in kept if "dup_of" in r)


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
    mash = keyboard_mash(3, seed=2)
    inp = write_docs(tmp_path / "in", texts, shards=2)
    # A third canonical shard that the first stage empties (keyboard mash, the worst perplexity),
    # and an empty input file (no canonical shard at all).
    pq.write_table(pa.table({"doc_id": [f"m{i}" for i in range(3)], "text": mash}), inp / "input-002.parquet")
    empty = pa.table({"doc_id": pa.array([], pa.string()), "text": pa.array([], pa.string())})
    pq.write_table(empty, inp / "input-999.parquet")
    stages = [
        {
            "type": "quality-score",
            "params": {
                "perplexityModel": "SmolLM2-135M-Instruct.Q4_1.gguf",
                "maxTokens": 16,
                "keepFraction": len(texts) / (len(texts) + len(mash)),
            },
        },
        {"type": "semantic-dedup", "params": {"clusters": 2, "epsilon": 0.1}},
        {"type": "redundancy-control", "params": {"clusters": 2, "keepFraction": 0.8}},
        {"type": "rephrase", "params": {"model": "SmolLM2-135M-Instruct.Q4_1.gguf", "ratio": 0.0}},
    ]
    out = tmp_path / "out"
    summary = run_all(
        make_spec(
            inp,
            out,
            stages,
            models={"path": str(models_dir)},
            parallelism=2,
            output={"path": str(out), "keepWork": True},
        )
    )
    assert summary["conservation"]["holds"]
    assert summary["totals"]["input_docs"] == len(texts) + len(mash)
    assert summary["totals"]["real_output_docs"] + summary["totals"]["rejected_docs"] == len(texts) + len(
        mash
    )
    by_name = {s["name"]: s for s in summary["stages"]}
    assert by_name["quality-score"]["removed"] == {"high-perplexity": len(mash)}
    assert by_name["semantic-dedup"]["docs_in"] == len(texts)
    # every model stage decided about the emptied shard (no rows), and it is published empty
    for index, name in enumerate(
        ["quality-score", "semantic-dedup", "redundancy-control", "rephrase"], start=1
    ):
        decisions = out / "_work" / f"{index:02d}-{name}" / "decisions"
        assert len(list(decisions.glob("part-*.parquet"))) == 3
        assert pq.read_table(decisions / "part-00002.parquet").num_rows == (len(mash) if index == 1 else 0)
    assert pq.read_table(out / "data" / "part-00002.parquet").num_rows == 0
    assert pq.read_table(out / "rejected" / "part-00002.parquet").num_rows == len(mash)
