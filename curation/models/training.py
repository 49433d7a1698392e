"""Training a quality classifier on the user's own labelled documents (sovereign positives).

Reads Parquet with a text column and a label column, holds out a seeded fraction, trains a
Thresher linear classifier (numpy only) or a fastText model (when the `fasttext` module is
installed), and reports held-out AUC and F1.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import InputDataError, SpecError
from curation.models.classifier import (
    FASTTEXT_NEGATIVE,
    FASTTEXT_POSITIVE,
    f1_score,
    holdout_split,
    import_fasttext,
    roc_auc,
    train_linear,
)


@dataclass(frozen=True)
class TrainingReport:
    output: Path
    backend: str
    train_docs: int
    holdout_docs: int
    auc: float
    f1: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "backend": self.backend,
            "train_docs": self.train_docs,
            "holdout_docs": self.holdout_docs,
            "auc": round(self.auc, 4),
            "f1": round(self.f1, 4),
        }


def read_labelled(
    path: Path, text_field: str, label_field: str, positive: str
) -> tuple[list[str], np.ndarray]:
    """Texts and 0/1 labels (1 where the label, as text, equals `positive`)."""
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise InputDataError(f"{path}: no Parquet files")
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f, columns=[text_field, label_field]))
        except (pa.ArrowInvalid, KeyError, OSError) as err:
            raise InputDataError(
                f"{f}: cannot read columns {text_field!r} and {label_field!r} ({err})"
            ) from None
    table = pa.concat_tables(tables, promote_options="permissive")
    texts = [t or "" for t in table.column(text_field).to_pylist()]
    labels = np.array([str(v).lower() == positive.lower() for v in table.column(label_field).to_pylist()])
    if labels.all() or not labels.any():
        values = sorted({str(v) for v in table.column(label_field).to_pylist()})[:10]
        raise InputDataError(f"{path}: need both positive ({positive!r}) and other labels; found {values}")
    return texts, labels.astype(np.int64)


def train_classifier(
    texts: list[str],
    labels: np.ndarray,
    output: Path,
    *,
    backend: str = "linear",
    holdout: float = 0.1,
    seed: int = 0,
    dim: int = 1 << 20,
    ngrams: int = 2,
    epochs: int | None = None,
    positive_label: str = "positive",
) -> TrainingReport:
    """Train on the non-held-out rows, evaluate on the held-out ones, save to `output`."""
    held = holdout_split(len(texts), holdout, seed)
    if held.all() or not held.any():
        held = np.zeros(len(texts), dtype=bool)
        held[:: max(2, int(round(1 / max(holdout, 1e-6))))] = True
    train_texts = [t for t, h in zip(texts, held, strict=True) if not h]
    test_texts = [t for t, h in zip(texts, held, strict=True) if h]
    if backend == "linear":
        model = train_linear(train_texts, labels[~held], dim=dim, ngrams=ngrams, epochs=epochs or 150)
        model.positive_label, model.negative_label = positive_label, f"not-{positive_label}"
        scores = model.score(test_texts)
        auc, f1 = roc_auc(labels[held], scores), f1_score(labels[held], scores)
        model.info = {
            "holdout_auc": round(auc, 4),
            "holdout_f1": round(f1, 4),
            "train_docs": len(train_texts),
        }
        model.save(output)
    elif backend == "fasttext":
        auc, f1 = _train_fasttext(
            train_texts, labels[~held], test_texts, labels[held], output, ngrams, epochs, dim, seed
        )
    else:
        raise SpecError(f"unknown classifier backend {backend!r}; use linear or fasttext")
    return TrainingReport(output, backend, len(train_texts), len(test_texts), auc, f1)


def _train_fasttext(
    train_texts: list[str],
    train_labels: np.ndarray,
    test_texts: list[str],
    test_labels: np.ndarray,
    output: Path,
    ngrams: int,
    epochs: int | None,
    dim: int,
    seed: int,
) -> tuple[float, float]:
    fasttext = import_fasttext()
    from curation.models.classifier import FastTextClassifier

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.txt"
        with open(data, "w", encoding="utf-8") as f:
            for text, label in zip(train_texts, train_labels, strict=True):
                tag = FASTTEXT_POSITIVE if label else FASTTEXT_NEGATIVE
                f.write(f"{tag} {' '.join(text.split())}\n")
        model = fasttext.train_supervised(
            str(data),
            epoch=epochs or 10,
            wordNgrams=ngrams,
            bucket=dim,
            minCount=1,
            lr=0.5,
            seed=seed,
            thread=1,
            verbose=0,
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = output.with_name(f".tmp-{output.name}")
    model.save_model(str(tmp_out))
    os.replace(tmp_out, output)
    scores = FastTextClassifier(output, FASTTEXT_POSITIVE).score(test_texts)
    return roc_auc(test_labels, scores), f1_score(test_labels, scores)
