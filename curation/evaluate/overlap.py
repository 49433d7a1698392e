"""Evaluation sets must be disjoint from every dataset a proxy model trains on.

Two checks, both streamed over the training datasets (the evaluation sets are small and held in
memory): document ids (where both sides name an id field), and word n-grams (13 by default, as GPT-3's and the peers'
decontamination), normalised and hashed exactly as the `decontaminate` stage does. A training
document that shares at least `min_matches` distinct n-grams with the evaluation sets overlaps.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from curation.errors import CurationError
from curation.evaluate.data import DatasetRef, iter_batches
from curation.stages.decontaminate import ngram_hashes

EXAMPLE_CHARS = 80


class OverlapError(CurationError):
    """An evaluation set shares documents (ids or n-grams) with a dataset an arm trains on."""

    reason = "EvalSetOverlaps"


@dataclass
class NgramIndex:
    """Sorted unique n-gram hashes of a set of documents, each with one document that has it."""

    ngram: int
    hashes: np.ndarray
    owner: np.ndarray  # index into `labels`
    labels: list[str]  # "<set> <id>"
    texts: list[str]

    @classmethod
    def build(cls, docs: Iterable[tuple[str, str, str]], ngram: int) -> NgramIndex:
        """From (label, id, text) triples."""
        labels: list[str] = []
        texts: list[str] = []
        chunks: list[np.ndarray] = []
        owners: list[np.ndarray] = []
        batch: list[str] = []

        def flush() -> None:
            if batch:
                h, doc = ngram_hashes(pa.array(batch, pa.string()), ngram)
                chunks.append(h)
                owners.append(doc + (len(texts) - len(batch)))
                batch.clear()

        for label, _id, text in docs:
            labels.append(label)
            texts.append(text)
            batch.append(text)
            if len(batch) >= 2048:
                flush()
        flush()
        h = np.concatenate(chunks) if chunks else np.zeros(0, np.uint64)
        own = np.concatenate(owners) if owners else np.zeros(0, np.int64)
        hashes, first = np.unique(h, return_index=True)
        return cls(ngram, hashes, own[first], labels, texts)

    def matches(self, texts: list[str], min_matches: int) -> tuple[np.ndarray, np.ndarray]:
        """Per text: distinct matching n-grams, and one indexed document it shares them with (-1)."""
        counts = np.zeros(len(texts), np.int64)
        partner = np.full(len(texts), -1, np.int64)
        if not len(self.hashes) or not texts:
            return counts, partner
        h, doc = ngram_hashes(pa.array(texts, pa.string()), self.ngram)
        pos = np.minimum(np.searchsorted(self.hashes, h), len(self.hashes) - 1)
        hit = self.hashes[pos] == h
        if hit.any():
            pairs = np.unique(np.stack([doc[hit], h[hit].view(np.int64)], axis=1), axis=0)
            counts = np.bincount(pairs[:, 0], minlength=len(texts)).astype(np.int64)
            hit_docs, first = np.unique(doc[hit], return_index=True)
            partner[hit_docs] = self.owner[pos[hit][first]]
        return counts, partner


@dataclass
class OverlapReport:
    ngram: int
    min_matches: int
    eval_documents: int
    eval_ngrams: int
    checked: dict[str, int] = field(default_factory=dict)  # dataset -> documents checked

    def to_dict(self) -> dict[str, Any]:
        return {"ngram": self.ngram, "min_matches": self.min_matches, "eval_documents": self.eval_documents,
                "eval_ngrams": self.eval_ngrams, "checked_documents": self.checked, "overlapping_documents": 0}


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat[:EXAMPLE_CHARS] + ("…" if len(flat) > EXAMPLE_CHARS else "")


def eval_documents(eval_sets: list[DatasetRef]) -> Iterable[tuple[str, str, str]]:
    for ref in eval_sets:
        for texts, ids in iter_batches(ref):
            for i, t in zip(ids, texts, strict=True):
                yield f"{ref.name} {i}", i, t


def check_disjoint(datasets: list[DatasetRef], eval_sets: list[DatasetRef], ngram: int = 13,
                   min_matches: int = 1) -> OverlapReport:
    """Raise OverlapError naming the count and an example when an evaluation set shares an id or
    `min_matches`+ word n-grams with a dataset; else the report of what was checked."""
    triples = list(eval_documents(eval_sets))
    ids: dict[str, str] = {}
    by_id = {e.name for e in eval_sets if e.id_field}  # positional ids (<file>:<row>) say nothing
    for label, i, _t in triples:
        if label.split(" ", 1)[0] in by_id:
            ids.setdefault(i, label.split(" ", 1)[0])
    index = NgramIndex.build(triples, ngram)
    report = OverlapReport(ngram, min_matches, len(triples), len(index.hashes))
    for ref in datasets:
        shared_ids, overlapping, checked = 0, 0, 0
        id_example = ngram_example = ""
        for texts, batch_ids in iter_batches(ref):
            checked += len(texts)
            for i in batch_ids if ref.id_field else ():
                if i in ids:
                    shared_ids += 1
                    id_example = id_example or f"{i} (in {ids[i]})"
            counts, partner = index.matches(texts, min_matches)
            bad = np.flatnonzero(counts >= min_matches)
            overlapping += len(bad)
            if len(bad) and not ngram_example:
                j = int(bad[0])
                ngram_example = (f"{ref.name} {batch_ids[j]} and {index.labels[partner[j]]} share {counts[j]} "
                                 f"{ngram}-gram(s): \"{_snippet(texts[j])}\"")
        if shared_ids:
            raise OverlapError(
                f"dataset {ref.name} shares {shared_ids} document id(s) with the evaluation set(s), e.g. "
                f"{id_example}; evaluate on a held-out split (thresher holdout) or a disjoint set")
        if overlapping:
            raise OverlapError(
                f"dataset {ref.name} has {overlapping} document(s) sharing >= {min_matches} word {ngram}-gram(s) "
                f"with the evaluation set(s), e.g. {ngram_example}; split with thresher holdout (it moves "
                f"such documents out of train) or pass a disjoint evaluation set")
        report.checked[ref.name] = checked
    return report
