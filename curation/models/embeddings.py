"""Sentence embeddings: encoder forward, mean pooling, L2 normalisation.

Documents are tokenised once, sorted by length and batched by a token budget, so a batch pads
only to its own longest member; weights run in bf16 on GPUs; pooling and normalisation in fp32.
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


class Encoder:
    """Embeds texts with a loaded encoder; reuse one instance across shards."""

    def __init__(
        self,
        loaded: LoadedModel,
        max_tokens: int = 256,
        batch_tokens: int | None = None,
        stage_type: str = "embed",
        step: str = "embed",
    ) -> None:
        self.loaded = loaded
        self.max_tokens = min(max_tokens, model_max_length(loaded))
        self.budget = default_budget("embed", loaded.device, batch_tokens)
        self.stage_type = stage_type
        self.step = step
        self.pad_id = loaded.tokenizer.pad_token_id or 0

    @property
    def dimension(self) -> int:
        return int(self.loaded.model.config.hidden_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dimension) float32, each row of unit length (zeros for an empty batch)."""
        torch = import_torch()
        started = time.monotonic()
        ids = tokenize(self.loaded.tokenizer, texts, self.max_tokens)
        out = np.zeros((len(ids), self.dimension), dtype=np.float32)
        model, device = self.loaded.model, self.loaded.device

        def run(batch: np.ndarray) -> None:
            input_ids, mask = pad_batch([ids[i] for i in batch], self.pad_id)
            input_t = torch.from_numpy(input_ids).to(device, non_blocking=True)
            mask_t = torch.from_numpy(mask).to(device, non_blocking=True)
            with torch.inference_mode():
                hidden = model(input_ids=input_t, attention_mask=mask_t).last_hidden_state
                pooled = mean_pool(torch, hidden, mask_t)
            out[batch] = pooled.cpu().numpy()

        self.budget = run_length_sorted([len(x) for x in ids], self.budget, run, stage_type=self.stage_type)
        metrics.record(
            self.stage_type, self.step, len(ids), sum(len(x) for x in ids), time.monotonic() - started
        )
        return out


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
