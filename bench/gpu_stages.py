"""Throughput of the model-stage paths against the plain Hugging Face way, measured in one run.

    python bench/gpu_stages.py                    # on a GPU machine (defaults to cuda)
    python bench/gpu_stages.py --device cpu --small   # quick correctness run on a laptop / CI box

Three paths, each timed twice on the same inputs and shapes:

- embeddings (all-MiniLM-L6-v2, mean pooling): plain = fp32, batches of 32 in input order, padded
  to the batch's longest; ours = `curation.models.embeddings.Encoder` (bf16 on GPU, length-sorted
  token-budget batches);
- perplexity (SmolLM2-135M): plain = fp32, batches of 32, full logits; ours = `PerplexityScorer`;
- generation (SmolLM2-135M-Instruct): plain = `model.generate` with the default (dynamic) cache
  at batch B; ours = `TransformersBackend` (static cache on GPU, length-sorted batches of B),
  and vLLM when it is installed.

Models come from `--models` or, by default, the sample models that PyPI packages ship (linked
into a temporary folder). Reference on one H100 (plain HF): embeddings 4.3k-5.1k docs/s at ~212
tokens; 135M scoring 0.40-0.46M tokens/s; generation 3.2k new tokens/s at batch 256.
Goals for ours per H100: >= 20k docs/s, >= 1M tokens/s, >= 50k new tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from curation.models.sample_models import ENCODER, GENERATOR, populate  # noqa: E402

GOALS = {"embeddings": 20_000, "perplexity": 1_000_000, "generation": 50_000}
WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "his",
    "her",
    "an",
    "were",
    "are",
    "which",
    "this",
    "be",
    "or",
    "had",
    "not",
    "but",
    "first",
    "one",
    "their",
    "its",
    "new",
    "after",
    "who",
    "they",
    "have",
    "two",
    "she",
    "been",
    "other",
    "when",
    "there",
    "all",
    "during",
    "into",
    "school",
    "time",
    "may",
    "years",
    "more",
    "most",
    "only",
    "over",
    "city",
    "some",
    "world",
    "would",
    "where",
    "later",
    "up",
    "such",
    "used",
    "many",
    "can",
    "state",
    "about",
    "national",
    "out",
    "known",
    "university",
    "united",
    "then",
    "made",
    "district",
    "under",
    "however",
    "american",
    "these",
    "both",
    "part",
    "film",
    "between",
    "second",
    "well",
    "team",
    "three",
    "between",
    "river",
    "north",
    "south",
    "system",
    "series",
    "war",
    "season",
    "history",
    "album",
    "government",
    "company",
    "church",
    "population",
    "century",
    "since",
    "early",
    "through",
    "house",
    "released",
    "music",
    "water",
    "light",
    "energy",
    "market",
    "children",
    "research",
    "village",
    "family",
    "language",
    "court",
    "science",
    "paper",
]


def corpus(n: int, mean_words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        length = max(8, int(rng.gauss(mean_words, mean_words / 2)))
        sentence, words = [], []
        for _ in range(length):
            sentence.append(rng.choice(WORDS))
            if len(sentence) > rng.randint(8, 20):
                words.append(" ".join(sentence).capitalize() + ".")
                sentence = []
        words.append(" ".join(sentence).capitalize() + ".")
        docs.append(" ".join(words))
    return docs


def timed(sync: Callable[[], None], fn: Callable[[], Any]) -> tuple[Any, float]:
    sync()
    started = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - started


# ---- the plain Hugging Face way ----------------------------------------------------------------


def plain_embed(
    torch: Any, model: Any, tok: Any, docs: list[str], device: str, max_tokens: int
) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for i in range(0, len(docs), 32):
            batch = tok(
                docs[i : i + 32], padding=True, truncation=True, max_length=max_tokens, return_tensors="pt"
            ).to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=1).float().cpu().numpy())
    return np.concatenate(out)


def plain_perplexity(
    torch: Any, model: Any, tok: Any, docs: list[str], device: str, max_tokens: int
) -> np.ndarray:
    out = []
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    with torch.inference_mode():
        for i in range(0, len(docs), 32):
            ids = [
                [start, *x[: max_tokens - 1]]
                for x in tok(docs[i : i + 32], add_special_tokens=False)["input_ids"]
            ]
            width = max(len(x) for x in ids)
            input_ids = torch.tensor([x + [0] * (width - len(x)) for x in ids], device=device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=device)
            logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), input_ids[:, 1:], reduction="none"
            )
            m = mask[:, 1:].float()
            out.append(torch.exp((loss * m).sum(1) / m.sum(1)).cpu().numpy())
    return np.concatenate(out)


def plain_generate(
    torch: Any, model: Any, tok: Any, prompts: list[str], device: str, batch: int, new_tokens: int
) -> int:
    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    produced = 0
    with torch.inference_mode():
        for i in range(0, len(prompts), batch):
            enc = tok(prompts[i : i + batch], padding=True, return_tensors="pt", add_special_tokens=False).to(
                device
            )
            out = model.generate(**enc, max_new_tokens=new_tokens, do_sample=False, pad_token_id=pad)
            new = out[:, enc["input_ids"].shape[1] :]
            produced += int((new != pad).sum())
    return produced


# ---- the run -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--small", action="store_true", help="tiny shapes: a quick correctness run")
    parser.add_argument("--models", default=None, help="models folder (default: link the sample models)")
    parser.add_argument("--docs", type=int, default=None, help="documents for embeddings and perplexity")
    parser.add_argument("--gen-batch", type=int, default=None, help="generation batch size (default 256)")
    parser.add_argument("--new-tokens", type=int, default=None, help="new tokens per prompt (default 128)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    models = Path(args.models) if args.models else Path(tempfile.mkdtemp(prefix="thresher-bench-models-"))
    if not args.models:
        populate(models)
    try:
        return run(args, models)
    finally:
        if not args.models:
            shutil.rmtree(models, ignore_errors=True)  # the dequantised GGUF copy is ~0.5 GB


def run(args: argparse.Namespace, models: Path) -> int:
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    from curation.models.embeddings import Encoder
    from curation.models.generation import SamplingConfig, TransformersBackend, chat_prompt, vllm_available
    from curation.models.loading import load_model
    from curation.models.perplexity import PerplexityScorer

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    small = args.small
    n_docs = args.docs or (64 if small else 20_000)
    gen_batch = args.gen_batch or (4 if small else 256)
    new_tokens = args.new_tokens or (16 if small else 128)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    hardware = (
        torch.cuda.get_device_name(0)
        if device.startswith("cuda")
        else f"CPU x{torch.get_num_threads()} threads"
    )
    print(
        f"device: {device} ({hardware}); docs: {n_docs}; generation: batch {gen_batch} x {new_tokens} new tokens"
    )
    results: dict[str, Any] = {"device": device, "hardware": hardware}

    # embeddings: ~212 MiniLM tokens per document on average at full size
    docs = corpus(n_docs, 40 if small else 200)
    loaded = load_model(models, ENCODER, "encoder", device)
    encoder = Encoder(loaded, max_tokens=256)
    plain_model = (
        AutoModel.from_pretrained(loaded.path, local_files_only=True, dtype=torch.float32).to(device).eval()
    )
    encoder.encode(docs[:8])
    plain_embed(torch, plain_model, loaded.tokenizer, docs[:8], device, 256)
    base_emb, t_base = timed(
        sync, lambda: plain_embed(torch, plain_model, loaded.tokenizer, docs, device, 256)
    )
    our_emb, t_ours = timed(sync, lambda: encoder.encode(docs))
    tokens = sum(len(x) for x in loaded.tokenizer(docs, truncation=True, max_length=256)["input_ids"])
    agreement = float(np.min(np.sum(base_emb * our_emb, axis=1)))
    results["embeddings"] = _row(
        "embeddings",
        "docs/s",
        n_docs / t_base,
        n_docs / t_ours,
        f"avg {tokens / n_docs:.0f} tokens; min cosine(plain, ours) {agreement:.4f}",
    )

    # perplexity: 135M causal LM
    ppl_docs = docs[: max(16, n_docs // (8 if small else 4))]
    lm = load_model(models, GENERATOR, "causal-lm", device)
    scorer = PerplexityScorer(lm, max_tokens=128 if small else 512)
    plain_lm = (
        AutoModelForCausalLM.from_pretrained(lm.path, local_files_only=True, dtype=torch.float32)
        .to(device)
        .eval()
    )
    scorer.score(ppl_docs[:4])
    plain_perplexity(torch, plain_lm, lm.tokenizer, ppl_docs[:4], device, scorer.max_tokens)
    base_ppl, t_base = timed(
        sync, lambda: plain_perplexity(torch, plain_lm, lm.tokenizer, ppl_docs, device, scorer.max_tokens)
    )
    our_ppl, t_ours = timed(sync, lambda: scorer.score(ppl_docs))
    ppl_tokens = sum(
        min(len(x), scorer.max_tokens - 1)
        for x in lm.tokenizer(ppl_docs, add_special_tokens=False)["input_ids"]
    )
    rel = float(np.max(np.abs(np.log(our_ppl) - np.log(base_ppl))))
    results["perplexity"] = _row(
        "perplexity",
        "tokens/s",
        ppl_tokens / t_base,
        ppl_tokens / t_ours,
        f"{len(ppl_docs)} docs; max |log ppl difference| {rel:.3f}",
    )

    # generation
    backend = TransformersBackend(lm)
    n_prompts = gen_batch * (1 if small else 2)
    prompts = [
        chat_prompt(backend.tokenizer, "Paraphrase in the style of Wikipedia:\n\n" + d[:400])
        for d in corpus(n_prompts, 60, seed=1)
    ]
    config = SamplingConfig(max_new_tokens=new_tokens, batch_size=gen_batch)
    backend.generate(prompts[:2], SamplingConfig(max_new_tokens=4, batch_size=2))
    plain_generate(torch, plain_lm, lm.tokenizer, prompts[:2], device, 2, 4)
    base_new, t_base = timed(
        sync, lambda: plain_generate(torch, plain_lm, lm.tokenizer, prompts, device, gen_batch, new_tokens)
    )
    ours, t_ours = timed(sync, lambda: backend.generate(prompts, config))
    our_new = sum(g.new_tokens for g in ours)
    results["generation"] = _row(
        "generation",
        "new tokens/s",
        base_new / t_base,
        our_new / t_ours,
        f"{n_prompts} prompts; new tokens plain {base_new}, ours {our_new}",
    )
    if vllm_available() and device.startswith("cuda"):
        from curation.models.generation import VLLMBackend

        plain_lm.to("cpu")
        torch.cuda.empty_cache()
        vllm_backend = VLLMBackend(lm.path, seed=0)
        outs, t_vllm = timed(sync, lambda: vllm_backend.generate(prompts, config))
        results["generation_vllm"] = {"ours_per_s": sum(g.new_tokens for g in outs) / t_vllm}
        print(f"  vLLM backend: {results['generation_vllm']['ours_per_s']:,.0f} new tokens/s")

    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _row(name: str, unit: str, plain: float, ours: float, note: str) -> dict[str, Any]:
    goal = GOALS[name]
    print(
        f"{name:<11} plain {plain:>12,.1f} {unit:<13} ours {ours:>12,.1f} {unit:<13} "
        f"x{ours / plain:5.2f}  (H100 goal {goal:,} {unit}; {note})"
    )
    return {
        "unit": unit,
        "plain_per_s": plain,
        "ours_per_s": ours,
        "ratio": ours / plain,
        "goal_h100": goal,
        "note": note,
    }


if __name__ == "__main__":
    sys.exit(main())
