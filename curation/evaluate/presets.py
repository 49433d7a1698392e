"""Proxy-model presets for `thresher eval`: model shape, token budget, optimiser, expected cost.

A preset fixes everything an arm's training depends on except the data and the seed, so two
arms trained with one preset differ only in what they read. `tokens` is the budget every arm is
trained on, exactly (steps x batch x sequence length); a dataset with fewer tokens is repeated.

- `tiny`: a 2-layer, 128-wide Llama (about 4.4M parameters, most of them the tied embedding of
  the tokenizer's vocabulary) on 131,072 tokens (64 steps of 8 x 256): about 1-2 minutes per arm
  and seed on two CPU cores, for tests, laptops and the bundled sample.
- `proxy-150m`: a 12-layer, 768-wide Llama with the SmolLM2 tokenizer (vocabulary 49,152; about
  151M parameters with tied embeddings) on 3.0B tokens, 20 tokens per parameter (Chinchilla).
  DataDecide (Magnusson et al. 2025) found that ranking corpora with ~150M-parameter proxies
  predicts the winner at 1B about 80% of the time. Cost from 6*N*D FLOPs (attention adds ~25% at
  sequence 2048) at the stated MFU of an H100's dense bf16 peak: see `estimate_cost`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from curation.errors import SpecError

H100_BF16_FLOPS = 989e12  # dense bf16 peak, SXM
DEFAULT_MFU = 0.40


@dataclass(frozen=True)
class Preset:
    name: str
    hidden: int
    layers: int
    heads: int
    intermediate: int
    seq_len: int
    batch: int  # sequences per optimiser step (micro_batch x accumulation)
    micro_batch: int
    tokens: int  # training budget per arm and seed (rounded down to whole steps)
    lr: float
    min_lr_ratio: float
    warmup_fraction: float
    weight_decay: float
    eval_points: int  # evaluations along the run (the last at the end)
    eval_tokens: int  # held-out tokens scored per evaluation set (a fixed prefix of its sequences)
    seeds: int
    tokenizer: str  # default tokenizer, relative to the models location
    vocab_hint: int  # that tokenizer's vocabulary (for cost estimates before it is loaded)
    device: str  # auto | cpu | cuda
    description: str

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq_len

    @property
    def steps(self) -> int:
        return max(1, self.tokens // self.tokens_per_step)

    @property
    def budget(self) -> int:
        """The exact number of tokens each arm trains on."""
        return self.steps * self.tokens_per_step

    def with_overrides(self, **changes: Any) -> Preset:
        given = {k: v for k, v in changes.items() if v is not None}
        unknown = set(given) - set(asdict(self))
        if unknown:
            raise SpecError(f"unknown preset field(s): {', '.join(sorted(unknown))}")
        preset = replace(self, **given)
        if preset.batch % preset.micro_batch:
            raise SpecError(f"batch {preset.batch} is not a multiple of micro_batch {preset.micro_batch}")
        if preset.hidden % preset.heads:
            raise SpecError(f"hidden {preset.hidden} is not a multiple of heads {preset.heads}")
        return preset

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "steps": self.steps, "budget_tokens": self.budget}


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny", hidden=128, layers=2, heads=2, intermediate=512, seq_len=256, batch=8, micro_batch=8,
        tokens=131_072, lr=3e-3, min_lr_ratio=0.1, warmup_fraction=0.05, weight_decay=0.1,
        eval_points=4, eval_tokens=32_768, seeds=3, tokenizer="all-MiniLM-L6-v2", vocab_hint=30522,
        device="cpu",
        description="CPU: 2 layers x 128, ~4.4M parameters (MiniLM's 30,522-token vocabulary), 131k tokens; "
                    "~1-2 min per arm and seed on 2 cores",
    ),
    "proxy-150m": Preset(
        name="proxy-150m", hidden=768, layers=12, heads=12, intermediate=3072, seq_len=2048, batch=256,
        micro_batch=16, tokens=3_000_000_000, lr=3e-3, min_lr_ratio=0.1, warmup_fraction=0.01,
        weight_decay=0.1, eval_points=20, eval_tokens=2_097_152, seeds=3,
        tokenizer="SmolLM2-135M-Instruct.Q4_1.gguf", vocab_hint=49152, device="cuda",
        description="one GPU: 12 layers x 768, ~151M parameters (SmolLM2's 49,152-token vocabulary), "
                    "3.0B tokens (20 per parameter); ~1.9 H100-hours per arm and seed at 40% MFU",
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise SpecError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def parameter_count(preset: Preset, vocab_size: int) -> int:
    """Parameters of the Llama a preset builds (tied input/output embedding, RMSNorm weights)."""
    d, f = preset.hidden, preset.intermediate
    per_layer = 4 * d * d + 3 * d * f + 2 * d
    return vocab_size * d + preset.layers * per_layer + d


def estimate_cost(preset: Preset, vocab_size: int, mfu: float = DEFAULT_MFU,
                  peak_flops: float = H100_BF16_FLOPS) -> dict[str, float]:
    """Training FLOPs (6*N*D, plus the attention term 6*L*d*seq per token for reference) and
    GPU-hours per arm and seed at `mfu` of `peak_flops`."""
    n = parameter_count(preset, vocab_size)
    flops = 6.0 * n * preset.budget
    attention = 6.0 * preset.layers * preset.hidden * preset.seq_len * preset.budget
    hours = flops / (mfu * peak_flops) / 3600
    return {
        "parameters": n,
        "tokens": preset.budget,
        "tokens_per_parameter": round(preset.budget / n, 2),
        "train_flops_6nd": flops,
        "attention_flops": attention,
        "mfu": mfu,
        "peak_flops": peak_flops,
        "gpu_hours_per_arm_seed": round(hours, 6),
        "gpu_hours_per_arm_seed_with_attention": round((flops + attention) / (mfu * peak_flops) / 3600, 6),
    }
