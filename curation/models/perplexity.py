"""Perplexity under a small causal LM (Ankner et al. 2024: small reference models prune well).

The decoder runs once per length-sorted batch; the vocabulary projection and the cross entropy
run in chunks over the real (non-padding) positions only, so the (tokens x vocabulary) logits
never exist in full: memory stays flat and padding costs nothing in the largest matmul.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from curation.models import metrics
from curation.models.batching import default_budget, run_length_sorted
from curation.models.embeddings import model_max_length, pad_batch, tokenize
from curation.models.loading import LoadedModel, import_torch

# fp32 logits per chunk: 128 MB on CPU; 1 GB on a GPU, where fewer, larger kernels pay off
LOGIT_CHUNK_ELEMENTS = {"cpu": 1 << 25, "cuda": 1 << 28}


def perplexity_from_nll(nll_sum: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """exp(mean negative log-likelihood); +inf where a document has no predicted token."""
    out = np.full(nll_sum.shape, math.inf, dtype=np.float64)
    ok = counts > 0
    out[ok] = np.exp(nll_sum[ok] / counts[ok])
    return out


class PerplexityScorer:
    """Scores texts with a loaded causal LM; reuse one instance across shards."""

    def __init__(
        self,
        loaded: LoadedModel,
        max_tokens: int = 512,
        batch_tokens: int | None = None,
        stage_type: str = "quality-score",
        step: str = "score",
    ) -> None:
        self.loaded = loaded
        self.max_tokens = min(max_tokens, model_max_length(loaded))
        self.budget = default_budget("score", loaded.device, batch_tokens)
        self.stage_type = stage_type
        self.step = step
        tok, config = loaded.tokenizer, loaded.model.config
        start = tok.bos_token_id if tok.bos_token_id is not None else config.bos_token_id
        if start is None:
            start = tok.eos_token_id if tok.eos_token_id is not None else config.eos_token_id
        self.start_id = int(start or 0)  # conditions the first real token
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.start_id
        self.softcap = getattr(config, "final_logit_softcapping", None)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """Perplexity per text (float64; +inf for empty texts)."""
        torch = import_torch()
        started = time.monotonic()
        body = tokenize(self.loaded.tokenizer, texts, self.max_tokens - 1, add_special_tokens=False)
        ids = [[self.start_id, *row] for row in body]
        nll = np.zeros(len(ids), dtype=np.float64)
        counts = np.array([len(x) - 1 for x in ids], dtype=np.float64)
        model, device = self.loaded.model, self.loaded.device
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
        head = model.get_output_embeddings()

        def run(batch: np.ndarray) -> None:
            input_ids, mask = pad_batch([ids[i] for i in batch], self.pad_id)
            input_t = torch.from_numpy(input_ids).to(device)
            mask_t = torch.from_numpy(mask).to(device)
            with torch.inference_mode():
                if decoder is not None and head is not None:
                    hidden = decoder(input_ids=input_t, attention_mask=mask_t).last_hidden_state
                    sums = self._chunked_nll(torch, hidden, input_t, mask_t, head)
                else:  # unusual architecture: full logits
                    logits = model(input_ids=input_t, attention_mask=mask_t).logits
                    sums = self._nll_from_logits(torch, logits, input_t, mask_t)
            nll[batch] = sums.cpu().numpy()

        self.budget = run_length_sorted([len(x) for x in ids], self.budget, run, stage_type=self.stage_type)
        metrics.record(self.stage_type, self.step, len(ids), int(counts.sum()), time.monotonic() - started)
        return perplexity_from_nll(nll, counts)

    def _chunked_nll(self, torch: Any, hidden: Any, input_ids: Any, mask: Any, head: Any) -> Any:
        valid = mask[:, 1:].bool()
        rows = torch.nonzero(valid, as_tuple=True)[0]
        states = hidden[:, :-1][valid]
        targets = input_ids[:, 1:][valid]
        sums = torch.zeros(input_ids.shape[0], dtype=torch.float64, device=hidden.device)
        elements = LOGIT_CHUNK_ELEMENTS["cuda" if hidden.device.type == "cuda" else "cpu"]
        chunk = max(1, elements // int(head.weight.shape[0]))
        for start in range(0, states.shape[0], chunk):
            logits = head(states[start : start + chunk]).float()
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            loss = torch.nn.functional.cross_entropy(logits, targets[start : start + chunk], reduction="none")
            sums.index_add_(0, rows[start : start + chunk], loss.double())
        return sums

    def _nll_from_logits(self, torch: Any, logits: Any, input_ids: Any, mask: Any) -> Any:
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), input_ids[:, 1:], reduction="none"
        )
        return (loss * mask[:, 1:]).sum(dim=1).double()
