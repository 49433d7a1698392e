"""`thresher eval` (proxy models trained on each dataset at equal tokens) and `thresher holdout`
(a leak-free held-out split made before curation). See docs/evaluation.md.

`add_parsers(subparsers)` registers both. Neither imports torch before training starts, so
argument errors, overlap refusals and `--presets` are instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from curation.errors import SpecError


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("eval", help="train small proxy LMs on each dataset at equal tokens; compare held-out loss")
    p.add_argument("--job", help="a pipeline spec: compare its input (raw) with its curated output (output/data)")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME=PATH",
                   help="a dataset to train on (Parquet folder); repeat for each arm")
    p.add_argument("--eval-set", action="append", default=[], metavar="[NAME=]PATH",
                   help="evaluation set (Parquet), disjoint from every dataset; repeatable")
    p.add_argument("--task", action="append", default=[], metavar="FILE.jsonl",
                   help="multiple-choice task: JSONL lines {context, choices, answer}; repeatable")
    p.add_argument("--text-field", default=None, help="default: the job's textField, else `text`")
    p.add_argument("--id-field", default=None, help="default: the job's idField; ids are checked for overlap")
    p.add_argument("--models", default=None, help="models location holding the tokenizer (default: the job's)")
    p.add_argument("--tokenizer", default=None, help="tokenizer (model) name in the models location; default: the preset's")
    p.add_argument("--preset", default="tiny", help="tiny (CPU, minutes) or proxy-150m (one GPU); see --presets")
    p.add_argument("--seeds", default=None, help="a count (3 = seeds 0,1,2) or a list (0,5,9); default: the preset's")
    p.add_argument("--tokens", type=int, default=None, help="override the preset's token budget per arm")
    p.add_argument("--device", default=None, help="cpu, cuda, auto; default: the preset's")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: min(2, CPUs))")
    p.add_argument("--order", choices=["shuffle", "dataset"], default="shuffle",
                   help="document order: a permutation per seed and epoch (default), or each dataset's stored order")
    p.add_argument("--baseline", default=None, help="the arm differences are taken against (default: the first)")
    p.add_argument("--ngram", type=int, default=13, help="words per n-gram in the overlap check")
    p.add_argument("--min-matches", type=int, default=1, help="shared n-grams that make a document overlap")
    p.add_argument("--out", default=None, help="where eval.json and eval.html go (default: <job output>/eval)")
    p.add_argument("--keep-tokens", action="store_true", help="keep the token files under <out>/_tokens")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--presets", action="store_true", help="print the presets and their cost estimates, then exit")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("holdout", help="split a dataset into train/ and heldout/ by id hash, before curation")
    p.add_argument("input", help="Parquet file or folder (never modified)")
    p.add_argument("--out", required=True, help="new folder: train/, heldout/, overlap/, holdout.json")
    p.add_argument("--fraction", type=float, default=0.1, help="share of ids held out (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="key of the id hash")
    p.add_argument("--text-field", default="text")
    p.add_argument("--id-field", default=None, help="id column (default: <file>:<row>)")
    p.add_argument("--ngram", type=int, default=13)
    p.add_argument("--min-matches", type=int, default=1)
    p.add_argument("--force", action="store_true", help="replace an existing split in --out")
    p.set_defaults(func=cmd_holdout)


def _named(value: str, what: str, default_name: str | None = None) -> tuple[str, str]:
    if "=" in value:
        name, path = value.split("=", 1)
    elif default_name is not None:
        name, path = default_name, value
    else:
        raise SpecError(f"{what} {value!r}: write NAME=PATH (e.g. raw=data/raw)")
    if not name or not path:
        raise SpecError(f"{what} {value!r}: write NAME=PATH")
    return name, path


def _seeds(value: str | None, default: int) -> list[int]:
    if value is None:
        return list(range(default))
    try:
        if "," in value:
            return [int(v) for v in value.split(",") if v.strip()]
        n = int(value)
    except ValueError:
        raise SpecError(f"--seeds {value!r}: a count (3) or a comma-separated list (0,1,2)") from None
    if n < 1:
        raise SpecError(f"--seeds {value}: at least 1")
    return list(range(n))


def print_presets() -> None:
    from curation.evaluate.presets import PRESETS, estimate_cost

    for p in PRESETS.values():
        c = estimate_cost(p, p.vocab_hint)
        print(f"{p.name}: {p.description}")
        print(f"  {p.layers} layers x {p.hidden} (ffn {p.intermediate}, {p.heads} heads), {c['parameters']:,} "
              f"parameters, sequence {p.seq_len}, batch {p.batch}, {p.steps:,} steps = {p.budget:,} tokens "
              f"({c['tokens_per_parameter']:g} per parameter), lr {p.lr:g} cosine, {p.seeds} seeds, "
              f"tokenizer {p.tokenizer}, device {p.device}")
        print(f"  6ND = {c['train_flops_6nd']:.3g} FLOPs: {c['gpu_hours_per_arm_seed']:.3g} H100-hours per arm and seed "
              f"at {c['mfu']:.0%} MFU ({c['gpu_hours_per_arm_seed_with_attention']:.3g} with attention FLOPs)")


def cmd_eval(args: argparse.Namespace) -> int:
    if args.presets:
        print_presets()
        return 0
    from curation.evaluate.data import DatasetRef
    from curation.evaluate.presets import get_preset
    from curation.evaluate.run import EvalConfig, evaluate

    preset = get_preset(args.preset).with_overrides(tokens=args.tokens)
    text_field, id_field, models, out = args.text_field, args.id_field, args.models, args.out
    arms: list[tuple[str, str]] = []
    if args.job:
        from curation.spec import load_spec

        spec = load_spec(args.job)
        text_field = text_field or spec.input.text_field
        id_field = id_field or spec.input.id_field
        models = models or spec.models.path
        data = Path(spec.output.path) / "data"
        if not data.is_dir():
            raise SpecError(f"{args.job}: no curated output at {data}; run `thresher run {args.job}` first")
        arms = [("raw", spec.input.path), ("curated", str(data))]
        out = out or str(Path(spec.output.path) / "eval")
    arms += [_named(d, "--dataset") for d in args.dataset]
    if out is None:
        raise SpecError("give --out DIR (where eval.json and eval.html go), or --job")
    text_field = text_field or "text"
    evals = [_named(e, "--eval-set", Path(e.rstrip("/")).name or "eval") for e in args.eval_set]
    config = EvalConfig(
        arms=[DatasetRef(n, p, text_field, id_field) for n, p in arms],
        eval_sets=[DatasetRef(n, p, text_field, id_field) for n, p in evals],
        out=Path(out), models=Path(models or "models"), preset=preset,
        seeds=_seeds(args.seeds, preset.seeds), tokenizer=args.tokenizer, tasks=[Path(t) for t in args.task],
        device=args.device, threads=args.threads, order=args.order, baseline=args.baseline,
        ngram=args.ngram, min_matches=args.min_matches, keep_tokens=args.keep_tokens)
    notify = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    result = evaluate(config, notify)
    for name, diffs in result.data["differences"].items():
        for label, d in diffs.items():
            ci = "" if d["ci95"] is None else f", 95% CI [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
            print(f"{name}: {label} = {d['mean']:+.4f} nats/token ({d['wins']}/{d['n']} seeds lower{ci})")
    print(f"done in {result.data['wall_seconds']:.0f}s: {result.json_path}, {result.html_path}")
    return 0


def cmd_holdout(args: argparse.Namespace) -> int:
    from curation.evaluate.holdout import split_holdout

    r = split_holdout(args.input, args.out, args.fraction, args.seed, args.text_field, args.id_field,
                      args.ngram, args.min_matches, args.force)
    print(json.dumps(r.to_dict()))
    print(f"{r.documents:,} documents: {r.train:,} train, {r.heldout:,} held out, {r.overlap:,} moved to "
          f"overlap/ (sharing {args.ngram}-grams with held-out documents{': e.g. ' + r.example if r.example else ''})")
    return 0
