"""Training one proxy model: a randomly initialised Llama, packed sequences, fixed token budget.

Documents are concatenated with EOS after each and cut into fixed-length sequences (sequences
span document boundaries; attention is not masked at them, as in GPT-style pretraining). The
document order is a permutation drawn from the seed, redrawn every epoch, so the arms of one
seed share the initial weights and differ only in data (paired seeds); `order="dataset"` keeps
the stored order (e.g. a curriculum) instead. A dataset with fewer tokens than the budget is
repeated; `epochs` in the result says how many times.

torch and transformers are imported inside the functions (the package imports without them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curation.evaluate.data import TokenFile
from curation.evaluate.presets import Preset

EVAL_BATCH = 4  # sequences per forward pass when scoring: bounds the (batch x seq x vocab) logits


def build_model(preset: Preset, vocab_size: int, eos_id: int, seed: int) -> Any:
    from curation.models.loading import import_transformers

    transformers = import_transformers()
    import torch

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=preset.hidden, intermediate_size=preset.intermediate,
        num_hidden_layers=preset.layers, num_attention_heads=preset.heads, num_key_value_heads=preset.heads,
        max_position_embeddings=preset.seq_len, tie_word_embeddings=True, rms_norm_eps=1e-5,
        bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id, initializer_range=0.02,
    )
    return transformers.LlamaForCausalLM(config)


def packed_batches(data: TokenFile, seq_len: int, micro_batch: int, seed: int,
                   order: str = "shuffle") -> Iterator[np.ndarray]:
    """Endless (micro_batch, seq_len) int64 arrays of packed documents; epoch k draws its
    document order from (seed, k)."""
    need = micro_batch * seq_len
    buf = np.empty(need, np.int64)
    fill = 0
    epoch = 0
    while True:
        if order == "shuffle":
            docs = np.random.default_rng([seed, epoch]).permutation(data.documents)
        else:
            docs = np.arange(data.documents)
        for d in docs:
            piece = data.document(int(d))
            while len(piece):
                take = min(need - fill, len(piece))
                buf[fill:fill + take] = piece[:take]
                fill += take
                piece = piece[take:]
                if fill == need:
                    yield buf.reshape(micro_batch, seq_len).copy()
                    fill = 0
        epoch += 1


def eval_sequences(data: TokenFile, seq_len: int, max_tokens: int) -> np.ndarray:
    """The evaluation set's first `max_tokens` tokens (stored order) as (n, seq_len) sequences."""
    n = max(1, min(data.total, max_tokens) // seq_len)
    flat = np.asarray(data.tokens[: n * seq_len], np.int64)
    if len(flat) < seq_len:  # a very small set: one padded-out sequence is still scored
        return flat.reshape(1, -1)
    return flat.reshape(n, seq_len)


def learning_rate(step: int, preset: Preset) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio` of the peak."""
    warmup = max(1, int(preset.warmup_fraction * preset.steps))
    if step < warmup:
        return preset.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, preset.steps - warmup)
    floor = preset.min_lr_ratio
    return preset.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def eval_loss(model: Any, sequences: np.ndarray, micro_batch: int, device: str) -> float:
    """Mean next-token negative log-likelihood (nats) over every predicted position."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad(), _autocast(device):
        for i in range(0, len(sequences), micro_batch):
            x = torch.from_numpy(sequences[i:i + micro_batch]).to(device)
            logits = model(input_ids=x).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                                    reduction="sum")
            total += float(nll)
            count += x[:, 1:].numel()
    model.train()
    return total / max(1, count)


def _autocast(device: str) -> Any:
    import contextlib

    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def eval_steps(preset: Preset) -> list[int]:
    """Optimiser steps after which the model is evaluated (evenly spaced, the last = the end)."""
    points = max(1, min(preset.eval_points, preset.steps))
    return sorted({max(1, round(k * preset.steps / points)) for k in range(1, points + 1)})


@dataclass
class ArmRun:
    arm: str
    seed: int
    tokens_trained: int
    epochs: float
    wall_seconds: float
    tokens_per_second: float
    curve: list[dict[str, Any]] = field(default_factory=list)  # {step, tokens, train_loss, loss: {set: x}}
    final: dict[str, float] = field(default_factory=dict)
    tasks: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"arm": self.arm, "seed": self.seed, "tokens_trained": self.tokens_trained,
                "epochs": round(self.epochs, 4), "wall_seconds": round(self.wall_seconds, 2),
                "tokens_per_second": round(self.tokens_per_second, 1), "final_loss": self.final,
                "final_perplexity": {k: math.exp(v) for k, v in self.final.items()},
                "curve": self.curve, "tasks": self.tasks}


def train_arm(arm: str, data: TokenFile, evals: dict[str, np.ndarray], preset: Preset, vocab_size: int,
              eos_id: int, seed: int, device: str, order: str = "shuffle",
              after: Callable[[Any], dict[str, dict[str, float]]] | None = None,
              notify: Callable[[str], None] | None = None) -> ArmRun:
    """Train one arm on exactly `preset.budget` tokens; evaluate along the way."""
    import torch

    model = build_model(preset, vocab_size, eos_id, seed).to(device)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": preset.weight_decay},
                               {"params": other, "weight_decay": 0.0}], lr=preset.lr, betas=(0.9, 0.95),
                              eps=1e-8, **({"fused": True} if device.startswith("cuda") else {}))
    accumulation = preset.batch // preset.micro_batch
    batches = packed_batches(data, preset.seq_len, preset.micro_batch, seed, order)
    checkpoints = set(eval_steps(preset))
    run = ArmRun(arm, seed, preset.budget, preset.budget / max(1, data.total), 0.0, 0.0)
    started = time.monotonic()
    train_time = 0.0
    for step in range(preset.steps):
        tick = time.monotonic()
        for group in optim.param_groups:
            group["lr"] = learning_rate(step, preset)
        loss_sum = 0.0
        for _ in range(accumulation):
            x = torch.from_numpy(next(batches)).to(device, non_blocking=True)
            with _autocast(device):
                loss = model(input_ids=x, labels=x).loss / accumulation
            loss.backward()
            loss_sum += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        optim.zero_grad(set_to_none=True)
        train_time += time.monotonic() - tick
        if step + 1 in checkpoints:
            eval_batch = preset.micro_batch if device.startswith("cuda") else EVAL_BATCH
            losses = {name: eval_loss(model, seqs, eval_batch, device) for name, seqs in evals.items()}
            run.curve.append({"step": step + 1, "tokens": (step + 1) * preset.tokens_per_step,
                              "train_loss": round(loss_sum, 5), "loss": losses})
            if notify:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
                notify(f"  {arm} seed {seed}: step {step + 1}/{preset.steps}, "
                       f"{(step + 1) * preset.tokens_per_step:,} tokens, held-out loss {shown}")
    run.final = dict(run.curve[-1]["loss"])
    run.tasks = after(model) if after else {}
    run.wall_seconds = time.monotonic() - started
    run.tokens_per_second = preset.budget / max(train_time, 1e-9)
    del model, optim
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return run
