"""Pluggable text generation for rephrasing: transformers by default, vLLM when installed.

Both backends take finished prompt strings (chat template already applied) and return the new
text of each. The transformers backend sorts prompts by length, generates in large batches with
left padding and, on GPUs, a static KV cache (which lets transformers compile the decode step);
a batch that runs out of memory is retried at half the size.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from curation.errors import MissingDependencyError
from curation.models import metrics
from curation.models.batching import run_length_sorted
from curation.models.embeddings import pad_batch
from curation.models.loading import (
    dequantised_gguf_dir,
    import_torch,
    load_model,
    model_kind,
    models_root,
    resolve_model,
    select_device,
)


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 0.9
    repetition_penalty: float = 1.0
    seed: int = 0
    batch_size: int | None = None  # default: 256 on a GPU, 16 on CPU


@dataclass(frozen=True)
class Generation:
    text: str
    new_tokens: int
    finished: bool  # ended with an end-of-sequence token (not cut by max_new_tokens)


class GenerationBackend(Protocol):
    name: str
    tokenizer: Any

    def generate(self, prompts: Sequence[str], config: SamplingConfig) -> list[Generation]: ...


def chat_prompt(tokenizer: Any, message: str) -> str:
    """The prompt string for one user message: the model's chat template when it has one."""
    if getattr(tokenizer, "chat_template", None):
        return str(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
            )
        )
    return f"{message}\n\n"


class TransformersBackend:
    name = "transformers"

    def __init__(self, loaded: Any, stage_type: str = "rephrase") -> None:
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.stage_type = stage_type
        config = loaded.model.config
        self.eos_ids = sorted(
            {i for i in _as_list(self.tokenizer.eos_token_id) + _as_list(config.eos_token_id)}
        )
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        )

    def generate(self, prompts: Sequence[str], config: SamplingConfig) -> list[Generation]:
        if not prompts:
            return []
        torch = import_torch()
        started = time.monotonic()
        # Chat templates already hold the special tokens; plain prompts get the tokenizer's own.
        special = not getattr(self.tokenizer, "chat_template", None)
        ids = [list(x) for x in self.tokenizer(list(prompts), add_special_tokens=special)["input_ids"]]
        results: list[Generation | None] = [None] * len(ids)
        model, device = self.loaded.model, self.loaded.device
        kwargs: dict[str, Any] = {
            "max_new_tokens": config.max_new_tokens,
            "do_sample": config.temperature > 0,
            "pad_token_id": self.pad_id,
            "eos_token_id": self.eos_ids,
            "repetition_penalty": config.repetition_penalty,
        }
        if config.temperature > 0:
            kwargs.update(temperature=config.temperature, top_p=config.top_p)
        else:  # silence generation-config defaults (e.g. a temperature) that greedy ignores
            kwargs.update(temperature=None, top_p=None, top_k=None)
        # A static KV cache lets transformers compile the decode step on GPUs; prompt widths are
        # rounded up so that batches share a few cache shapes instead of recompiling each time.
        multiple_of = 1
        if device.startswith("cuda"):
            kwargs["cache_implementation"] = "static"
            multiple_of = 64

        def run(batch: np.ndarray) -> None:
            input_ids, mask = pad_batch(
                [ids[i] for i in batch], self.pad_id, left=True, multiple_of=multiple_of
            )
            torch.manual_seed(config.seed)
            with torch.inference_mode():
                out = model.generate(
                    input_ids=torch.from_numpy(input_ids).to(device),
                    attention_mask=torch.from_numpy(mask).to(device),
                    **kwargs,
                )
            new = out[:, input_ids.shape[1] :].cpu().numpy()
            for row, index in zip(new, batch, strict=True):
                results[index] = self._decode(row)

        batch_size = config.batch_size or (256 if device.startswith("cuda") else 16)
        run_length_sorted(
            [len(x) for x in ids], 1 << 62, run, stage_type=self.stage_type, max_size=batch_size
        )
        done = [r for r in results if r is not None]
        _record(self.stage_type, done, sum(len(x) for x in ids), time.monotonic() - started)
        return done

    def _decode(self, row: np.ndarray) -> Generation:
        tokens = row.tolist()
        finished = False
        for pos, token in enumerate(tokens):
            if token in self.eos_ids:
                tokens, finished = tokens[:pos], True
                break
        tokens = [t for t in tokens if t != self.pad_id]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        return Generation(text, len(tokens), finished)


class VLLMBackend:
    name = "vllm"

    def __init__(self, directory: Path, seed: int, stage_type: str = "rephrase") -> None:
        try:
            import vllm
        except ImportError:
            raise MissingDependencyError("backend vllm needs the `vllm` package in the image") from None
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=str(directory), tokenizer=str(directory), seed=seed, dtype="auto", trust_remote_code=False
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.stage_type = stage_type

    def generate(self, prompts: Sequence[str], config: SamplingConfig) -> list[Generation]:
        started = time.monotonic()
        params = self._vllm.SamplingParams(
            max_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p if config.temperature > 0 else 1.0,
            repetition_penalty=config.repetition_penalty,
            seed=config.seed,
        )
        outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        done = [
            Generation(
                o.outputs[0].text.strip(), len(o.outputs[0].token_ids), o.outputs[0].finish_reason == "stop"
            )
            for o in outputs
        ]
        _record(
            self.stage_type,
            done,
            sum(len(o.prompt_token_ids or []) for o in outputs),
            time.monotonic() - started,
        )
        return done


def _record(stage_type: str, done: list[Generation], prompt_tokens: int, seconds: float) -> None:
    new_tokens = sum(g.new_tokens for g in done)
    metrics.GENERATED_TOKENS.labels(stage_type=stage_type).inc(new_tokens)
    metrics.record(stage_type, "generate", len(done), prompt_tokens, seconds)
    if seconds > 0:
        metrics.TOKEN_THROUGHPUT.labels(stage_type=stage_type, step="generate").set(new_tokens / seconds)


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)]


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


_BACKENDS: dict[tuple[str, str, str], GenerationBackend] = {}


def open_backend(
    models: Any, name: str, backend: str = "auto", device: str | None = None, seed: int = 0
) -> GenerationBackend:
    """The generation backend for a model of the models location (created once per process)."""
    device = select_device(device)
    choice = backend
    if backend == "auto":
        choice = "vllm" if device.startswith("cuda") and vllm_available() else "transformers"
    key = (str(name), choice, device)
    if key in _BACKENDS:
        return _BACKENDS[key]
    if choice == "vllm":
        root = models if isinstance(models, Path) else models_root(models)
        path = resolve_model(root, name)
        directory = dequantised_gguf_dir(root, path) if model_kind(path) == "gguf" else path
        opened: GenerationBackend = VLLMBackend(directory, seed)
    else:
        opened = TransformersBackend(load_model(models, name, "causal-lm", device))
    _BACKENDS[key] = opened
    return opened


def clear_backends() -> None:
    _BACKENDS.clear()
