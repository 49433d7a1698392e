"""Sentence embeddings: encoder forward, mean pooling, L2 normalisation.

Documents are tokenised once, sorted by length and batched by a token budget, so a batch pads
only to its own longest member; weights run in bf16 on GPUs; pooling and normalisation in fp32.
A document longer than the token budget is represented by its first tokens (`head`), its first
and last tokens (`head-tail`) or the mean of windows spread over it (`chunked-mean`): see
`token_windows`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from curation.models import metrics
from curation.models.batching import default_budget, run_length_sorted
from curation.models.loading import LoadedModel, import_torch


def pad_batch(
    ids: Sequence[Sequence[int]], pad_id: int, left: bool = False, multiple_of: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Token id lists -> (ids, attention mask) arrays padded to the longest member (rounded up to
    `multiple_of`, so that compiled kernels see few distinct shapes)."""
    width = max((len(x) for x in ids), default=0)
    width = -(-width // multiple_of) * multiple_of
    out = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        if not row:
            continue
        if left:
            out[i, width - len(row) :] = row
            mask[i, width - len(row) :] = 1
        else:
            out[i, : len(row)] = row
            mask[i, : len(row)] = 1
    return out, mask


def tokenize(
    tokenizer: Any, texts: Sequence[str], max_tokens: int, add_special_tokens: bool = True
) -> list[list[int]]:
    if not texts:  # fast tokenizers fail on an empty batch (an empty shard)
        return []
    encoded = tokenizer(
        list(texts), truncation=True, max_length=max_tokens, add_special_tokens=add_special_tokens
    )
    return [list(x) for x in encoded["input_ids"]]


LONG_DOCUMENTS = ("head", "head-tail", "chunked-mean")
CHARS_PER_TOKEN_CAP = 64  # text beyond this many characters per token is never tokenised


def _evenly_spaced(count: int, keep: int) -> np.ndarray:
    """`keep` indices spread evenly over range(count), first and last included."""
    if count <= keep:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, keep).round().astype(np.int64))


def special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The tokens the tokenizer puts before and after a text (e.g. [CLS] and [SEP]), found by
    encoding one probe word with and without them (works across tokenizer classes and versions)."""
    probe = "hello"
    bare = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    for i in range(len(full) - len(bare) + 1):
        if full[i : i + len(bare)] == bare:
            return full[:i], full[i + len(bare) :]
    return [], []


def token_windows(
    tokenizer: Any, texts: Sequence[str], max_tokens: int, mode: str = "head", max_chunks: int = 8
) -> tuple[list[list[int]], np.ndarray]:
    """The token sequences (special tokens included, each at most `max_tokens`) that represent
    each text, and the text each sequence belongs to.

    - `head`: the first tokens (one sequence per text);
    - `head-tail`: the first half and the last half of the budget, so two documents that share a
      long beginning (a licence header, a template) still differ by their end (one sequence);
    - `chunked-mean`: up to `max_chunks` consecutive windows spread evenly over the document,
      embedded separately and averaged by the caller (`max_chunks` forward passes at most).

    Tokenising is bounded: only about CHARS_PER_TOKEN_CAP characters per token of budget are ever
    tokenised from each place of a document that is used, whatever its length."""
    if mode not in LONG_DOCUMENTS:
        raise ValueError(f"unknown longDocuments {mode!r}; expected one of {', '.join(LONG_DOCUMENTS)}")
    if not texts:
        return [], np.zeros(0, np.int64)
    cap = max_tokens * CHARS_PER_TOKEN_CAP
    if mode == "head":
        return tokenize(tokenizer, [t[:cap] for t in texts], max_tokens), np.arange(len(texts))
    prefix, suffix = special_tokens(tokenizer)
    body = max(1, max_tokens - len(prefix) - len(suffix))
    pieces: list[str] = []
    owner: list[int] = []
    windowed: list[bool] = []  # chunked-mean: the piece is one window of a longer document
    for i, text in enumerate(texts):
        if mode == "head-tail":
            pieces.append(text if len(text) <= 2 * cap else text[:cap] + " " + text[-cap:])
            owner.append(i)
        elif len(text) <= cap * max_chunks:
            pieces.append(text)
            owner.append(i)
            windowed.append(False)
        else:  # windows spread over the whole document, tokenised one by one
            starts = np.linspace(0, len(text) - cap, max_chunks).astype(np.int64)
            pieces.extend(text[s : s + cap] for s in starts.tolist())
            owner.extend([i] * max_chunks)
            windowed.extend([True] * max_chunks)
    encoded = tokenizer(pieces, add_special_tokens=False, truncation=False)["input_ids"]
    sequences: list[list[int]] = []
    seq_owner: list[int] = []
    if mode == "head-tail":
        for ids, i in zip(encoded, owner, strict=True):
            ids = list(ids)
            if len(ids) > body:
                head = (body + 1) // 2
                ids = ids[:head] + ids[len(ids) - (body - head) :]
            sequences.append(prefix + ids + suffix)
            seq_owner.append(i)
        return sequences, np.asarray(seq_owner, dtype=np.int64)
    per_text: dict[int, list[list[int]]] = {}
    for ids, i, window in zip(encoded, owner, windowed, strict=True):
        ids = list(ids)
        windows = per_text.setdefault(i, [])
        if window:
            windows.append(ids[:body])
        else:
            windows.extend(ids[k : k + body] for k in range(0, len(ids), body))
    for i in range(len(texts)):
        windows = [w for w in per_text.get(i, []) if w] or [[]]
        for k in _evenly_spaced(len(windows), max_chunks).tolist():
            sequences.append(prefix + windows[k] + suffix)
            seq_owner.append(i)
    return sequences, np.asarray(seq_owner, dtype=np.int64)


class Encoder:
    """Embeds texts with a loaded encoder; reuse one instance across shards."""

    def __init__(
        self,
        loaded: LoadedModel,
        max_tokens: int = 256,
        batch_tokens: int | None = None,
        stage_type: str = "embed",
        step: str = "embed",
        long_documents: str = "head",
        max_chunks: int = 8,
    ) -> None:
        self.loaded = loaded
        self.max_tokens = min(max_tokens, model_max_length(loaded))
        self.budget = default_budget("embed", loaded.device, batch_tokens)
        self.stage_type = stage_type
        self.step = step
        self.pad_id = loaded.tokenizer.pad_token_id or 0
        self.long_documents = long_documents
        self.max_chunks = max_chunks

    @property
    def dimension(self) -> int:
        return int(self.loaded.model.config.hidden_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dimension) float32, each row of unit length (zeros for an empty batch). With
        `chunked-mean`, a document's row is the token-weighted mean of its windows' embeddings,
        normalised again."""
        torch = import_torch()
        started = time.monotonic()
        ids, owner = token_windows(self.loaded.tokenizer, texts, self.max_tokens, self.long_documents,
                                   self.max_chunks)
        pooled_rows = np.zeros((len(ids), self.dimension), dtype=np.float32)
        model, device = self.loaded.model, self.loaded.device

        def run(batch: np.ndarray) -> None:
            input_ids, mask = pad_batch([ids[i] for i in batch], self.pad_id)
            input_t = torch.from_numpy(input_ids).to(device, non_blocking=True)
            mask_t = torch.from_numpy(mask).to(device, non_blocking=True)
            with torch.inference_mode():
                hidden = model(input_ids=input_t, attention_mask=mask_t).last_hidden_state
                pooled = mean_pool(torch, hidden, mask_t)
            pooled_rows[batch] = pooled.cpu().numpy()

        self.budget = run_length_sorted([len(x) for x in ids], self.budget, run, stage_type=self.stage_type)
        metrics.record(
            self.stage_type, self.step, len(texts), sum(len(x) for x in ids), time.monotonic() - started
        )
        if len(ids) == len(texts):
            return pooled_rows
        weights = np.array([len(x) for x in ids], dtype=np.float32)[:, None]
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        np.add.at(out, owner, pooled_rows * weights)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.maximum(norms, 1e-12)).astype(np.float32)


def mean_pool(torch: Any, hidden: Any, mask: Any) -> Any:
    """Mask-aware mean over tokens, in fp32, then L2-normalised."""
    weights = mask.unsqueeze(-1).to(torch.float32)
    summed = (hidden.to(torch.float32) * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1.0)
    return torch.nn.functional.normalize(summed / counts, p=2, dim=1)


def model_max_length(loaded: LoadedModel) -> int:
    """The longest input the model takes (position embeddings, tokenizer limit)."""
    limits = [
        getattr(loaded.model.config, "max_position_embeddings", None),
        loaded.tokenizer.model_max_length,
    ]
    valid = [int(v) for v in limits if isinstance(v, int) and 0 < v < 1_000_000]
    return min(valid) if valid else 1_000_000
