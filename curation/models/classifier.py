"""Quality classifiers: a hashed n-gram linear model we own, fastText files, Hugging Face heads.

The linear classifier is fastText-like in spirit (DCLM's quality filter is a fastText bigram
model): lowercase word unigrams and bigrams hashed into a fixed number of buckets, a logistic
regression on their log-counts. It needs only numpy to train and to score, and is saved as a
small `.npz` file (format `thresher-linear-v1`). Real fastText `.bin` models are read when the
`fasttext` module is importable; Hugging Face sequence classifiers through transformers.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import xxhash

from curation.errors import MissingDependencyError, SpecError
from curation.models import metrics

FORMAT = "thresher-linear-v1"
WORD_RE = re.compile(r"\w+", re.UNICODE)
FASTTEXT_POSITIVE = "__label__hq"
FASTTEXT_NEGATIVE = "__label__lq"


class QualityClassifier(Protocol):
    def score(self, texts: Sequence[str]) -> np.ndarray: ...


# ---- features ----------------------------------------------------------------------------------


def hashed_ngrams(text: str, dim: int, ngrams: int = 2) -> np.ndarray:
    """Bucket ids of the lowercase word 1..n-grams of a text (with repeats)."""
    words = WORD_RE.findall(text.lower())
    grams = list(words)
    for n in range(2, ngrams + 1):
        grams.extend(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    return np.fromiter(
        (xxhash.xxh3_64_intdigest(g.encode()) % dim for g in grams), dtype=np.int64, count=len(grams)
    )


@dataclass
class SparseRows:
    """CSR-like rows: row i has columns indices[indptr[i]:indptr[i+1]] with values."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray

    @property
    def rows(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))


def featurise(texts: Sequence[str], dim: int, ngrams: int) -> SparseRows:
    """log(1 + count) of each hashed n-gram, each row scaled to unit length."""
    indptr = [0]
    all_idx: list[np.ndarray] = []
    all_val: list[np.ndarray] = []
    for text in texts:
        buckets, counts = np.unique(hashed_ngrams(text, dim, ngrams), return_counts=True)
        values = np.log1p(counts.astype(np.float32))
        norm = float(np.linalg.norm(values))
        all_idx.append(buckets)
        all_val.append(values / norm if norm > 0 else values)
        indptr.append(indptr[-1] + len(buckets))
    return SparseRows(
        np.asarray(indptr, dtype=np.int64),
        np.concatenate(all_idx) if all_idx else np.zeros(0, np.int64),
        np.concatenate(all_val).astype(np.float32) if all_val else np.zeros(0, np.float32),
    )


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


# ---- the linear classifier ---------------------------------------------------------------------


@dataclass
class LinearClassifier:
    weights: np.ndarray
    bias: float
    ngrams: int = 2
    positive_label: str = "positive"
    negative_label: str = "negative"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return len(self.weights)

    def decision(self, x: SparseRows) -> np.ndarray:
        n = len(x.indptr) - 1
        return np.bincount(x.rows, weights=self.weights[x.indices] * x.values, minlength=n) + self.bias

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """Probability of the positive label, per text."""
        started = time.monotonic()
        out = _sigmoid(self.decision(featurise(texts, self.dim, self.ngrams)))
        metrics.record("quality-score", "score", len(texts), 0, time.monotonic() - started)
        return out

    def save(self, path: Path) -> None:
        meta = {
            "format": FORMAT,
            "ngrams": self.ngrams,
            "positive_label": self.positive_label,
            "negative_label": self.negative_label,
            **self.info,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                weights=self.weights.astype(np.float32),
                bias=np.float32(self.bias),
                meta=np.array(json.dumps(meta)),
            )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> LinearClassifier:
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                weights, bias = data["weights"].astype(np.float32), float(data["bias"])
        except (OSError, KeyError, ValueError) as err:
            raise SpecError(f"{path}: not a Thresher linear classifier ({err})") from None
        if meta.get("format") != FORMAT:
            raise SpecError(f"{path}: unknown classifier format {meta.get('format')!r} (expected {FORMAT})")
        info = {
            k: v for k, v in meta.items() if k not in {"format", "ngrams", "positive_label", "negative_label"}
        }
        return cls(weights, bias, int(meta["ngrams"]), meta["positive_label"], meta["negative_label"], info)


def train_linear(
    texts: Sequence[str],
    labels: np.ndarray,
    *,
    dim: int = 1 << 20,
    ngrams: int = 2,
    epochs: int = 150,
    learning_rate: float = 0.05,
    l2: float = 1e-6,
) -> LinearClassifier:
    """Class-balanced logistic regression with full-batch Adam (deterministic)."""
    y = np.asarray(labels, dtype=np.float64)
    if len(np.unique(y)) != 2:
        raise SpecError("training needs both positive and negative examples")
    x = featurise(texts, dim, ngrams)
    rows = x.rows
    n = len(y)
    pos = y.sum()
    sample_weight = np.where(y == 1, n / (2 * pos), n / (2 * (n - pos))) / n
    w = np.zeros(dim, dtype=np.float64)
    b = 0.0
    m_w, v_w = np.zeros(dim), np.zeros(dim)
    m_b = v_b = 0.0
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for t in range(1, epochs + 1):
        z = np.bincount(rows, weights=w[x.indices] * x.values, minlength=n) + b
        r = (_sigmoid(z) - y) * sample_weight
        g_w = np.bincount(x.indices, weights=r[rows] * x.values, minlength=dim) + l2 * w
        g_b = float(r.sum())
        m_w = beta1 * m_w + (1 - beta1) * g_w
        v_w = beta2 * v_w + (1 - beta2) * g_w * g_w
        m_b = beta1 * m_b + (1 - beta1) * g_b
        v_b = beta2 * v_b + (1 - beta2) * g_b * g_b
        correction = np.sqrt(1 - beta2**t) / (1 - beta1**t)
        w -= learning_rate * correction * m_w / (np.sqrt(v_w) + eps)
        b -= learning_rate * correction * m_b / (np.sqrt(v_b) + eps)
    return LinearClassifier(w.astype(np.float32), float(b), ngrams)


# ---- evaluation --------------------------------------------------------------------------------


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def f1_score(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    y = np.asarray(labels).astype(bool)
    pred = np.asarray(scores) >= threshold
    tp = int((pred & y).sum())
    precision = tp / max(1, int(pred.sum()))
    recall = tp / max(1, int(y.sum()))
    return 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)


def holdout_split(n: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows (a seeded, stable choice)."""
    keys = np.fromiter(
        (xxhash.xxh64_intdigest(f"{seed}:{i}".encode()) for i in range(n)), dtype=np.uint64, count=n
    )
    return (keys / np.float64(2**64)) < fraction


# ---- fastText and Hugging Face classifiers -----------------------------------------------------


class FastTextClassifier:
    def __init__(self, path: Path, positive_label: str | None) -> None:
        fasttext = import_fasttext()
        self.model = fasttext.load_model(str(path))
        labels = list(self.model.labels)
        self.positive = positive_label or FASTTEXT_POSITIVE
        if self.positive not in labels:
            raise SpecError(
                f"{path}: label {self.positive!r} not in the model's labels {labels}; set positiveLabel"
            )

    def score(self, texts: Sequence[str]) -> np.ndarray:
        started = time.monotonic()
        lines = [" ".join(t.split()) for t in texts]  # fastText predicts one line at a time
        labels, probs = self.model.predict(lines, k=-1)
        out = np.array(
            [
                dict(zip(lab, p, strict=True)).get(self.positive, 0.0)
                for lab, p in zip(labels, probs, strict=True)
            ],
            dtype=np.float64,
        )
        metrics.record("quality-score", "score", len(texts), 0, time.monotonic() - started)
        return np.clip(out, 0.0, 1.0)


def import_fasttext() -> Any:
    try:
        import fasttext
    except ImportError:
        raise MissingDependencyError(
            "fastText models need the `fasttext` module; pip install fasttext-numpy2 (or use a "
            "Thresher linear classifier from `thresher train-classifier`)"
        ) from None
    return fasttext


class HFClassifier:
    """A Hugging Face sequence classifier; probability of the positive label, or the raw score
    of a one-output regression head."""

    def __init__(
        self, loaded: Any, positive_label: str | None, max_tokens: int, batch_tokens: int | None
    ) -> None:
        self.loaded = loaded
        from curation.models.embeddings import model_max_length

        self.max_tokens = min(max_tokens, model_max_length(loaded))
        from curation.models.batching import default_budget

        self.budget = default_budget("score", loaded.device, batch_tokens)
        config = loaded.model.config
        self.num_labels = int(config.num_labels)
        id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
        if self.num_labels == 1:
            self.index = 0
        elif positive_label is not None:
            matches = [i for i, name in id2label.items() if name == positive_label]
            if not matches:
                raise SpecError(f"{loaded.path}: label {positive_label!r} not in {sorted(id2label.values())}")
            self.index = matches[0]
        elif self.num_labels == 2:
            self.index = 1
        else:
            raise SpecError(
                f"{loaded.path}: {self.num_labels} labels; set positiveLabel to one of "
                f"{sorted(id2label.values())}"
            )

    def score(self, texts: Sequence[str]) -> np.ndarray:
        from curation.models.batching import run_length_sorted
        from curation.models.embeddings import pad_batch, tokenize
        from curation.models.loading import import_torch

        torch = import_torch()
        started = time.monotonic()
        ids = tokenize(self.loaded.tokenizer, texts, self.max_tokens)
        out = np.zeros(len(ids), dtype=np.float64)
        pad_id = self.loaded.tokenizer.pad_token_id or 0
        model, device = self.loaded.model, self.loaded.device

        def run(batch: np.ndarray) -> None:
            input_ids, mask = pad_batch([ids[i] for i in batch], pad_id)
            with torch.inference_mode():
                logits = model(
                    input_ids=torch.from_numpy(input_ids).to(device),
                    attention_mask=torch.from_numpy(mask).to(device),
                ).logits.float()
                values = (
                    logits[:, 0] if self.num_labels == 1 else torch.softmax(logits, dim=-1)[:, self.index]
                )
            out[batch] = values.cpu().numpy()

        self.budget = run_length_sorted([len(x) for x in ids], self.budget, run, stage_type="quality-score")
        metrics.record(
            "quality-score", "score", len(ids), sum(len(x) for x in ids), time.monotonic() - started
        )
        return out


def load_classifier(
    models: Any,
    name: str,
    positive_label: str | None = None,
    *,
    max_tokens: int = 512,
    batch_tokens: int | None = None,
    device: str | None = None,
) -> QualityClassifier:
    """A classifier from the models location, by file type."""
    from curation.models.loading import load_model, model_kind, models_root, resolve_model

    root = models if isinstance(models, Path) else models_root(models)
    path = resolve_model(root, name)
    kind = model_kind(path)
    if kind == "linear":
        model = LinearClassifier.load(path)
        if positive_label is not None and positive_label != model.positive_label:
            raise SpecError(
                f"{path}: trained with positive label {model.positive_label!r}, not {positive_label!r}"
            )
        return model
    if kind == "fasttext":
        return FastTextClassifier(path, positive_label)
    if kind == "hf":
        loaded = load_model(root, name, "sequence-classifier", device)
        return HFClassifier(loaded, positive_label, max_tokens, batch_tokens)
    raise SpecError(
        f"classifier '{name}' at {path}: expected a model directory, a .npz linear classifier "
        "or a fastText .bin/.ftz file"
    )
