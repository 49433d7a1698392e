"""Evidence of semantic dedup and redundancy control, stable survivors, and long documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curation.models.embeddings import Encoder, token_windows
from tests.helpers import make_spec, output_rows, run_all, write_docs
from tests.model.corpus import DENSE_TOPIC, PARAPHRASE_PAIRS, SPARSE_TOPICS, UNRELATED
from tests.unit.test_dedup_evidence import assert_every_removal_names_a_survivor

pytestmark = pytest.mark.model

HEADER = (
    "Licensed under the Apache License, Version 2.0 (the License); you may not use this file except in "
    "compliance with the License. You may obtain a copy of the License at the project website. Unless "
    "required by applicable law or agreed to in writing, software distributed under the License is "
    "distributed on an AS IS BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. "
) * 2
BODIES = [
    "The recipe calls for two cups of flour, a pinch of salt and three eggs, mixed slowly and baked for "
    "forty minutes until golden brown on top.",
    "Jupiter's Great Red Spot is a storm larger than the entire Earth, observed by astronomers for more "
    "than three centuries through telescopes.",
]


def test_token_windows_agree_on_short_documents_and_differ_on_long_ones(encoder: Any) -> None:
    tok = encoder.loaded.tokenizer
    short = ["A short sentence.", "Another one, also short."]
    head, _ = token_windows(tok, short, 64, "head")
    assert token_windows(tok, short, 64, "head-tail")[0] == head
    assert token_windows(tok, short, 64, "chunked-mean")[0] == head
    long_docs = [HEADER + body for body in BODIES]
    heads, _ = token_windows(tok, long_docs, 64, "head")
    assert heads[0] == heads[1] and len(heads[0]) == 64  # the shared header is all `head` sees
    tails, owner = token_windows(tok, long_docs, 64, "head-tail")
    assert tails[0] != tails[1] and all(len(t) == 64 for t in tails) and owner.tolist() == [0, 1]
    assert tails[0][:32] == heads[0][:32]  # the first half of the budget is the head
    chunks, owner = token_windows(tok, long_docs, 64, "chunked-mean", max_chunks=3)
    assert all(len(c) <= 64 for c in chunks) and np.bincount(owner).tolist() == [3, 3]
    huge = "word " * 200_000  # tokenising stays bounded: windows spread over the document
    chunks, owner = token_windows(tok, [huge], 32, "chunked-mean", max_chunks=4)
    assert len(chunks) == 4 and all(len(c) <= 32 for c in chunks)


def test_head_tail_tells_apart_documents_that_share_a_long_header(encoder: Any) -> None:
    docs = [HEADER + body for body in BODIES]
    cosine = {}
    for mode in ("head", "head-tail", "chunked-mean"):
        emb = Encoder(encoder.loaded, max_tokens=64, long_documents=mode).encode(docs)
        assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
        cosine[mode] = float(emb[0] @ emb[1])
    assert cosine["head"] > 0.999  # merged by their header alone
    assert cosine["head-tail"] < 0.9 and cosine["chunked-mean"] < 0.95


def _semantic_stage(**params: Any) -> dict[str, Any]:
    return {"type": "semantic-dedup", "params": {"clusters": 3, "epsilon": 0.1, **params}}


def test_semantic_dedup_with_head_tail_keeps_documents_that_share_only_a_header(
    tmp_path: Path, models_dir: Path
) -> None:
    texts = [HEADER + body for body in BODIES] + UNRELATED[:4]
    out: dict[str, set[str]] = {}
    for mode in ("head", "head-tail"):
        inp = write_docs(tmp_path / mode / "in", texts, shards=2)
        stage = _semantic_stage(clusters=2, epsilon=0.02, embedding={"maxTokens": 64, "longDocuments": mode})
        run_all(make_spec(inp, tmp_path / mode / "out", [stage], models={"path": str(models_dir)}))
        out[mode] = {r["doc_id"] for r in output_rows(tmp_path / mode / "out")}
    assert len(out["head"]) == len(texts) - 1  # one of the two goes, for its header
    assert len(out["head-tail"]) == len(texts)


def test_every_removal_of_all_four_dedup_stages_names_a_kept_document(tmp_path: Path, models_dir: Path) -> None:
    base = [" ".join(f"{w}{i}" for i in range(120)) for w in ("alpha", "beta")]
    texts = [t for pair in PARAPHRASE_PAIRS for t in pair] + UNRELATED + DENSE_TOPIC + SPARSE_TOPICS
    texts += [UNRELATED[1], UNRELATED[2].upper()]  # exact copies
    texts += base + [b.replace("7", "seven", 1) for b in base]  # near copies (one word in 120)
    inp = write_docs(tmp_path / "in", texts, shards=3)
    names = ["exact-dedup", "minhash-dedup", "semantic-dedup", "redundancy-control"]
    stages = [
        {"type": "exact-dedup"},
        {"type": "minhash-dedup", "params": {"verify": "text"}},
        _semantic_stage(),
        {"type": "redundancy-control", "params": {"clusters": 3, "keepFraction": 0.7}},
    ]
    summary = run_all(make_spec(inp, tmp_path / "out", stages, models={"path": str(models_dir)}, parallelism=2))
    assert summary["conservation"]["holds"]
    rejected = output_rows(tmp_path / "out", "rejected")
    assert {r["stage"] for r in rejected} == set(names)
    assert_every_removal_names_a_survivor(tmp_path / "out", names)
    kept = {r["doc_id"]: r for r in output_rows(tmp_path / "out")}
    for r in rejected:
        if r["stage"] == "semantic-dedup":
            assert 0.9 <= r["similarity"] <= 1.0 and r["dup_group"] == r["dup_of"]
        if r["stage"] == "redundancy-control":  # a kept member of its own cluster, and their cosine
            assert r["dup_of"] in kept and kept[r["dup_of"]]["redundancy_cluster"] == r["redundancy_cluster"]
            assert -1.0 <= r["similarity"] <= 1.0 and r["redundancy_rank"] >= 1
    assert not {"redundancy_rank", "dup_of", "similarity", "dup_group"} & set(next(iter(kept.values())))


def test_semantic_survivor_does_not_depend_on_parallelism(tmp_path: Path, models_dir: Path) -> None:
    # Identical texts have identical embeddings and distances: the tie goes to the lowest key.
    texts = [t for pair in PARAPHRASE_PAIRS[:3] for t in pair] + UNRELATED[:5]
    texts = texts + texts[:4]
    results = []
    for parallelism in (1, 3):
        inp = write_docs(tmp_path / f"p{parallelism}" / "in", texts, shards=3)
        run_all(make_spec(inp, tmp_path / f"p{parallelism}" / "out", [_semantic_stage()],
                          models={"path": str(models_dir)}, parallelism=parallelism))
        rejected = output_rows(tmp_path / f"p{parallelism}" / "out", "rejected")
        results.append(sorted((r["doc_id"], r["dup_of"]) for r in rejected))
    assert results[0] == results[1] and results[0]
