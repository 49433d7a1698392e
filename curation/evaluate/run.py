"""`evaluate(config) -> EvalResult`: train one proxy model per arm and seed, compare held-out loss.

The library entry point; the CLI (`thresher eval`) and, later, a CurationJob's final step call it
with an `EvalConfig`. Steps: check every evaluation set is disjoint from every arm (ids and word
n-grams; OverlapError otherwise), tokenise each dataset once into `<out>/_tokens/`, train each
(seed, arm) on exactly the preset's budget, score the evaluation sets along the way and the
multiple-choice tasks at the end, then summarise over seeds (paired differences with a
t-interval against the baseline arm) and write `eval.json` and `eval.html`.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.errors import SpecError
from curation.evaluate.data import DatasetRef, load_tokenizer, parquet_files, tokenize_dataset
from curation.evaluate.html import build_page
from curation.evaluate.overlap import check_disjoint
from curation.evaluate.presets import Preset, estimate_cost, get_preset, parameter_count
from curation.evaluate.stats import paired_difference, summarise
from curation.evaluate.tasks import load_task, score_task

SCHEMA_VERSION = 1
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


@dataclass
class EvalConfig:
    arms: list[DatasetRef]
    eval_sets: list[DatasetRef]
    out: Path
    models: Path = Path("models")
    preset: Preset = field(default_factory=lambda: get_preset("tiny"))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    tokenizer: str | None = None  # default: the preset's
    tasks: list[Path] = field(default_factory=list)
    device: str | None = None  # default: the preset's (auto -> cuda when visible)
    threads: int | None = None  # CPU threads for torch (default: min(2, the CPU budget))
    order: str = "shuffle"  # or "dataset": keep each arm's stored (e.g. curriculum) order
    baseline: str | None = None  # default: the first arm
    ngram: int = 13
    min_matches: int = 1
    keep_tokens: bool = False

    def validate(self) -> None:
        if len(self.arms) < 2:
            raise SpecError("thresher eval compares two or more datasets; give --dataset NAME=PATH twice (or --job)")
        if not self.eval_sets:
            raise SpecError("no evaluation set: give --eval-set PATH (a held-out split from thresher holdout, "
                            "or a clean set disjoint from every dataset)")
        names = [a.name for a in self.arms] + [e.name for e in self.eval_sets]
        for n in names:
            if not NAME.match(n):
                raise SpecError(f"name {n!r}: use letters, digits, '_', '.', '-' (at most 40)")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise SpecError(f"dataset and evaluation-set names must be unique; repeated: {', '.join(repeated)}")
        if self.baseline is not None and self.baseline not in [a.name for a in self.arms]:
            raise SpecError(f"--baseline {self.baseline}: not one of the datasets ({', '.join(a.name for a in self.arms)})")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise SpecError("seeds must be distinct and at least one")
        if self.order not in ("shuffle", "dataset"):
            raise SpecError(f"order {self.order!r}: shuffle or dataset")
        for ref in [*self.arms, *self.eval_sets]:
            parquet_files(ref.path)  # a missing or empty folder is named before any work starts
        for task in self.tasks:
            if not Path(task).is_file():
                raise SpecError(f"task {task}: no such file")


@dataclass
class EvalResult:
    data: dict[str, Any]
    json_path: Path
    html_path: Path

    def difference(self, eval_set: str, arm: str) -> dict[str, Any]:
        baseline = self.data["baseline"]
        return dict(self.data["differences"][eval_set][f"{arm} - {baseline}"])


def _device(config: EvalConfig) -> str:
    from curation.models.loading import cpu_budget, import_torch, select_device

    torch = import_torch()
    wanted = config.device or config.preset.device
    device = select_device(None if wanted == "auto" else wanted)
    if device == "cpu":
        threads = config.threads or min(2, cpu_budget())
        torch.set_num_threads(threads)
    return device


def evaluate(config: EvalConfig, notify: Callable[[str], None] | None = None) -> EvalResult:
    config.validate()
    say = notify or (lambda _line: None)
    started = time.monotonic()
    preset = config.preset
    overlap = check_disjoint(config.arms, config.eval_sets, config.ngram, config.min_matches)
    say(f"evaluation sets disjoint from every dataset ({overlap.eval_documents:,} documents, "
        f"{config.ngram}-grams checked)")
    tokenizer = load_tokenizer(config.models, config.tokenizer or preset.tokenizer)
    cache = config.out / "_tokens"
    arms = {a.name: tokenize_dataset(a, tokenizer, cache / f"arm-{a.name}") for a in config.arms}
    evals = {e.name: tokenize_dataset(e, tokenizer, cache / f"eval-{e.name}", max_tokens=preset.eval_tokens + preset.seq_len)
             for e in config.eval_sets}
    tasks = {Path(t).stem: load_task(t) for t in config.tasks}
    device = _device(config)
    from curation.evaluate.train import eval_sequences, train_arm

    sequences = {name: eval_sequences(tf, preset.seq_len, preset.eval_tokens) for name, tf in evals.items()}
    for a in config.arms:
        tf = arms[a.name]
        say(f"{a.name}: {tf.documents:,} documents, {tf.total:,} tokens; budget {preset.budget:,} tokens = "
            f"{preset.budget / tf.total:.2f} epoch(s)")

    def after(model: Any) -> dict[str, dict[str, float]]:
        return {name: score_task(model, tokenizer, items, preset.seq_len, device) for name, items in tasks.items()}

    runs = []
    for seed in config.seeds:
        for a in config.arms:
            run = train_arm(a.name, arms[a.name], sequences, preset, tokenizer.vocab_size, tokenizer.eos_id, seed,
                            device, config.order, after if tasks else None, say)
            say(f"{a.name} seed {seed}: final loss " + ", ".join(f"{k} {v:.4f}" for k, v in run.final.items())
                + f" ({run.wall_seconds:.0f} s, {run.tokens_per_second:,.0f} tokens/s)")
            runs.append(run.to_dict())
    data = _assemble(config, preset, tokenizer, device, overlap.to_dict(), arms, evals, runs, started)
    config.out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = config.out / "eval.json", config.out / "eval.html"
    data = _strict(data)
    _write_atomic(json_path, json.dumps(data, indent=2, allow_nan=False))
    _write_atomic(html_path, build_page(data))
    if not config.keep_tokens:
        shutil.rmtree(cache, ignore_errors=True)
    return EvalResult(data, json_path, html_path)


def _strict(value: Any) -> Any:
    """NaN and infinities (a diverged run) as null: eval.json stays strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _assemble(config: EvalConfig, preset: Preset, tokenizer: Any, device: str, overlap: dict[str, Any],
              arms: dict[str, Any], evals: dict[str, Any], runs: list[dict[str, Any]], started: float) -> dict[str, Any]:
    baseline = config.baseline or config.arms[0].name
    summary: dict[str, dict[str, Any]] = {}
    differences: dict[str, dict[str, Any]] = {}
    for e in config.eval_sets:
        finals = {a.name: [r["final_loss"][e.name] for r in runs if r["arm"] == a.name] for a in config.arms}
        summary[e.name] = {name: summarise(v) for name, v in finals.items()}
        differences[e.name] = {f"{name} - {baseline}": paired_difference(v, finals[baseline])
                               for name, v in finals.items() if name != baseline}
    task_summary: dict[str, dict[str, Any]] = {}
    for task in (Path(t).stem for t in config.tasks):
        task_summary[task] = {}
        for a in config.arms:
            per_seed = [r["tasks"][task] for r in runs if r["arm"] == a.name]
            task_summary[task][a.name] = {
                k: sum(t[k] for t in per_seed) / len(per_seed) for k in per_seed[0]}
    vocab = tokenizer.vocab_size
    return {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "preset": preset.to_dict(),
        "model": {"architecture": "LlamaForCausalLM (random init, tied embeddings)",
                  "parameters": parameter_count(preset, vocab), "vocab_size": vocab},
        "cost_estimate": estimate_cost(preset, vocab),
        "tokenizer": tokenizer.describe(),
        "device": device,
        "threads": _threads(device),
        "order": config.order,
        "seeds": config.seeds,
        "baseline": baseline,
        "arms": [{**a.to_dict(), "documents": arms[a.name].documents, "tokens": arms[a.name].total,
                  "tokens_trained": preset.budget, "epochs": preset.budget / arms[a.name].total}
                 for a in config.arms],
        "eval_sets": [{**e.to_dict(), "documents_scored": evals[e.name].documents,
                       "tokens_scored": min(evals[e.name].total, preset.eval_tokens)} for e in config.eval_sets],
        "overlap": overlap,
        "summary": summary,
        "differences": differences,
        "tasks": task_summary,
        "runs": runs,
        "wall_seconds": time.monotonic() - started,
    }


def _threads(device: str) -> int | None:
    if device != "cpu":
        return None
    import torch

    return int(torch.get_num_threads())
