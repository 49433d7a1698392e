"""`thresher models` (inspect the models location) and `thresher train-classifier`.

`add_parsers(subparsers)` registers both subcommands; each sets `func` to its handler, which
returns the exit code. Neither imports torch: listing reads config files only, and the linear
classifier trains with numpy.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from curation.errors import ModelNotFoundError, SpecError
from curation.registry import stage_def


def spec_models(spec: Any) -> list[tuple[str, str, str]]:
    """(stage name, role, model name) for every model a spec's stages will load."""
    out = []
    for stage in spec.stages:
        for field, role in stage_def(str(stage.type)).roles:
            value: Any = stage.params
            for part in field.split("."):
                value = getattr(value, part)
            if value:
                out.append((stage.stage_name, role, str(value)))
    tokenize = getattr(spec.output, "tokenize", None)
    if tokenize is not None:
        out.append(("output.tokenize", TOKENIZER_ROLE, tokenize.tokenizer))
    return out


TOKENIZER_ROLE = "tokenizer"  # a tokenizer.json directory or file, or a GGUF: not a full model


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def describe_entry(root: Path, path: Path) -> str:
    """One line about a models-location entry (reads config files only)."""
    from curation.models.loading import gguf_cache_candidates, model_kind

    kind = model_kind(path)
    size = _human(_size(path))
    if kind == "hf":
        config_file = path / "config.json"
        if not config_file.exists():
            return f"directory without config.json (not a model), {size}"
        config = json.loads(config_file.read_text())
        arch = ",".join(config.get("architectures") or []) or config.get("model_type", "?")
        return f"Hugging Face {arch}, {size}"
    if kind == "gguf":
        cached = [c for c in gguf_cache_candidates(root, path) if (c / "thresher-source.json").exists()]
        where = f"dequantised copy in {cached[0]}" if cached else "not dequantised yet (first load caches it)"
        return f"GGUF, {size}, {where}"
    if kind == "linear":
        from curation.models.classifier import LinearClassifier

        model = LinearClassifier.load(path)
        auc = model.info.get("holdout_auc")
        return (
            f"Thresher linear classifier, positive label {model.positive_label!r}, held-out AUC {auc}, {size}"
        )
    if kind == "fasttext":
        return f"fastText model (needs the fasttext module), {size}"
    return f"not a model file, {size}"


def cmd_models(args: argparse.Namespace) -> int:
    from curation.models.loading import resolve_model

    spec = None
    if args.spec:
        from curation.spec import load_spec

        spec = load_spec(args.spec)
    where = args.models or (spec.models.path if spec else "models")
    if where.startswith("s3://"):
        return _list_object_store(where, spec)
    root = Path(where).expanduser().resolve()
    if args.populate_sample:
        from curation.models.sample_models import available_sources, populate

        for name, link in populate(root, skip_missing=True).items():
            print(f"linked {name} -> {link.resolve()}")
        for hint in available_sources()[1]:
            print(f"not installed, skipped: {hint}")
    entries = None
    if root.is_dir():
        entries = [(p.name, describe_entry(root, p)) for p in sorted(root.iterdir()) if not p.name.startswith(".")]

    def check(name: str, role: str) -> str | None:
        try:
            if role == TOKENIZER_ROLE:
                from curation.dataset import Location
                from curation.tokens.tokenizer import tokenizer_path

                tokenizer_path(Location.of(str(root)), name)
            else:
                resolve_model(root, name)
            return None
        except (ModelNotFoundError, SpecError) as err:
            return str(err)

    return _report(str(root), entries, spec, check)


def _report(where: str, entries: list[tuple[str, str]] | None, spec: Any,
            check: Callable[[str, str], str | None]) -> int:
    """Print a models location's entries (None: missing) and, with a spec, whether each model its
    stages load is there (`check` returns why not, or None)."""
    print(f"models location: {where}")
    if entries is None:
        print("  (missing)")
    for name, what in entries or []:
        print(f"  {name}: {what}")
    if entries == []:
        print("  (empty)")
    if spec is None:
        return 0
    print("models the spec's stages load:")
    missing = []
    for stage, role, name in spec_models(spec):
        problem = check(name, role)
        print(f"  {stage} ({role}): {name}: {'MISSING' if problem else 'ok'}")
        if problem:
            missing.append(problem)
    if missing:
        raise ModelNotFoundError("; ".join(missing))
    return 0


def _list_object_store(uri: str, spec: Any) -> int:
    """`thresher models` for an `s3://` models location: its entries and sizes; with a spec, whether
    each model the stages load is there (nothing is downloaded)."""
    import pyarrow.fs as pafs

    from curation import storage
    from curation.dataset import Location

    storage.configure(spec.storage if spec is not None else None)
    loc = Location.of(uri)
    storage.check_access(loc, "models.path", uri)
    sizes: dict[str, int] = {}
    for info in loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True, recursive=True)):
        if info.type == pafs.FileType.File:
            top = info.path[len(loc.path):].lstrip("/").split("/", 1)[0]
            sizes[top] = sizes.get(top, 0) + int(info.size or 0)
    entries = [(n, f"{sizes[n] / 1e6:,.1f} MB") for n in sorted(sizes) if not n.startswith(".")]

    def check(name: str, role: str) -> str | None:
        return None if loc.join(name).exists() else f"model '{name}' not found at {uri.rstrip('/')}/{name}"

    return _report(uri, entries, spec, check)


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from curation.models.training import read_labelled, train_classifier

    texts, labels = read_labelled(Path(args.input), args.text_field, args.label_field, args.positive)
    output = Path(args.output)
    if args.backend == "linear" and output.suffix != ".npz":
        raise SpecError(f"--output {output}: a linear classifier is saved as .npz")
    if args.backend == "fasttext" and output.suffix not in (".bin", ".ftz"):
        raise SpecError(f"--output {output}: a fastText model is saved as .bin")
    report = train_classifier(
        texts,
        labels,
        output,
        backend=args.backend,
        holdout=args.holdout,
        seed=args.seed,
        dim=args.buckets,
        ngrams=args.ngrams,
        epochs=args.epochs,
        positive_label=args.positive,
    )
    print(
        f"trained {report.backend} classifier on {report.train_docs:,} documents "
        f"({int(labels.sum()):,} positive in all); held out {report.holdout_docs:,}"
    )
    print(f"held-out AUC {report.auc:.4f}, F1 {report.f1:.4f} (threshold 0.5)")
    print(
        f"saved {output}; use it with quality-score params `classifier: {output.name}` "
        "(path relative to the models location)"
    )
    return 0


def add_parsers(subparsers: Any) -> None:
    """Register `models` and `train-classifier` on the `thresher` subcommand parser."""
    p = subparsers.add_parser("models", help="list the models location and what a spec's stages will load")
    p.add_argument(
        "--models", default=None, help="models folder (default: the spec's models.path, else ./models)"
    )
    p.add_argument("--spec", default=None, help="check the models this pipeline spec names")
    p.add_argument(
        "--populate-sample",
        action="store_true",
        help="first link the small sample models shipped by PyPI packages into the folder",
    )
    p.set_defaults(func=cmd_models)

    t = subparsers.add_parser("train-classifier", help="train a quality classifier on labelled Parquet")
    t.add_argument("--input", required=True, help="Parquet file or folder with a text and a label column")
    t.add_argument("--output", required=True, help="model file to write (.npz linear, .bin fastText)")
    t.add_argument("--label-field", default="label", help="label column (default: label)")
    t.add_argument("--positive", required=True, help="label value of the good (positive) documents")
    t.add_argument("--text-field", default="text", help="text column (default: text)")
    t.add_argument(
        "--backend",
        choices=("linear", "fasttext"),
        default="linear",
        help="linear: hashed n-gram logistic regression (numpy); fasttext: needs the fasttext module",
    )
    t.add_argument("--holdout", type=float, default=0.1, help="held-out fraction for AUC/F1 (default 0.1)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--buckets", type=int, default=1 << 20, help="hash buckets (default 2^20)")
    t.add_argument("--ngrams", type=int, default=2, help="word n-gram order (default 2: uni+bigrams)")
    t.add_argument("--epochs", type=int, default=None, help="default: 150 (linear), 10 (fastText)")
    t.set_defaults(func=cmd_train_classifier)


add_parser = add_parsers  # the name the brief used
