"""The tokenizer of `output.tokenize`: loaded offline from the models location, encoded in batches.

A Hugging Face fast tokenizer (`tokenizer.json`) is loaded with the `tokenizers` library alone (no
torch, no transformers, no hub); a `.gguf` model's embedded vocabulary goes through transformers'
GGUF reader once. Truncation and padding settings that ship in `tokenizer.json` (e.g. MiniLM's
128-token truncation) are switched off: a training corpus keeps every token of every document,
and special tokens (CLS/SEP around each text) are not added; only the EOS separator is.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from curation.dataset import Location
from curation.errors import MissingDependencyError, ModelNotFoundError, SpecError
from curation.params.tokenize import TokenizeSpec
from curation.tokens.formats import token_dtype

INSTALL_HINT = "install thresher[tokenize] (the `tokenizers` package; thresher[models] has it too)"
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "[SEP]")


@dataclass
class LoadedTokenizer:
    backend: Any  # tokenizers.Tokenizer
    name: str
    vocab_size: int
    eos_id: int | None  # appended after every document (None: nothing appended)

    @property
    def dtype(self) -> np.dtype:
        return token_dtype(self.vocab_size)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(tokens of every text, EOS appended to each, concatenated; int32 tokens per text)."""
        encode = getattr(self.backend, "encode_batch_fast", None) or self.backend.encode_batch
        encodings = encode(texts, add_special_tokens=False)
        extra = 0 if self.eos_id is None else 1
        lengths = np.fromiter((len(e.ids) + extra for e in encodings), dtype=np.int64, count=len(encodings))
        tokens = np.empty(int(lengths.sum()), dtype=self.dtype)
        pos = 0
        for e, n in zip(encodings, lengths.tolist(), strict=True):
            ids = e.ids
            tokens[pos:pos + len(ids)] = ids
            if extra:
                tokens[pos + n - 1] = self.eos_id
            pos += n
        return tokens, lengths.astype(np.int32)


def limit_threads() -> None:
    """encode_batch spreads a batch over a Rust thread pool sized by the node's cores: in a pod with
    a CPU limit, or next to other local ranks (the runner sets OMP_NUM_THREADS to their share), use
    the share. Read when the pool starts (the first batch of the process); an explicit
    RAYON_NUM_THREADS wins."""
    if "RAYON_NUM_THREADS" not in os.environ:
        from curation.models.loading import cpu_budget

        os.environ["RAYON_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS") or str(cpu_budget())


def import_tokenizers() -> Any:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # a forked rank keeps its threads
    try:
        import tokenizers
    except ImportError:
        raise MissingDependencyError(f"output.tokenize needs the `tokenizers` package; {INSTALL_HINT}") from None
    return tokenizers


def tokenizer_path(models: Location, name: str) -> Path:
    """Where tokenizer `name` is, below the models location (fetched once from an object store)."""
    from curation import storage
    from curation.models.loading import models_root

    root = models_root(models)
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise SpecError(f"output.tokenize.tokenizer '{name}': give a path relative to the models location ({root})")
    storage.fetch_model(root, name)
    path = root / rel
    if not path.exists():
        raise ModelNotFoundError(f"output.tokenize.tokenizer '{name}' not found at {path}: copy a folder with the "
                                 f"tokenizer's tokenizer.json (or a .gguf model) to {path}; see docs/air-gapped.md")
    if path.is_dir() and not (path / "tokenizer.json").exists():
        raise ModelNotFoundError(
            f"output.tokenize.tokenizer '{name}': {path} has no tokenizer.json (a fast tokenizer is needed; "
            "save one with transformers' AutoTokenizer.from_pretrained(...).save_pretrained(dir))")
    return path


def load_tokenizer(models: Location, params: TokenizeSpec) -> LoadedTokenizer:
    tokenizers = import_tokenizers()
    path = tokenizer_path(models, params.tokenizer)
    config: dict[str, Any] = {}
    if path.suffix.lower() == ".gguf":
        backend, config = _from_gguf(path)
    else:
        file = path / "tokenizer.json" if path.is_dir() else path
        try:
            backend = tokenizers.Tokenizer.from_file(str(file))
        except Exception as err:  # the Rust side raises plain Exceptions
            raise ModelNotFoundError(f"output.tokenize.tokenizer: {file} is not a tokenizer.json "
                                     f"({str(err).splitlines()[0]})") from None
        config_file = (path if path.is_dir() else path.parent) / "tokenizer_config.json"
        if config_file.exists():
            try:
                config = json.loads(config_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                config = {}
    backend.no_truncation()
    backend.no_padding()
    vocab = int(backend.get_vocab_size(with_added_tokens=True))
    eos = resolve_eos(backend, config, params, vocab) if params.append_eos else None
    return LoadedTokenizer(backend, params.tokenizer, max(vocab, (eos or 0) + 1), eos)


def _special(config: dict[str, Any], key: str) -> str | None:
    value = config.get(key)
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def resolve_eos(backend: Any, config: dict[str, Any], params: TokenizeSpec, vocab: int) -> int:
    """The id appended after each document: `eosId`, `eosToken`, the tokenizer's EOS, its SEP, or
    a well-known end-of-text token of the vocabulary."""
    where = f"output.tokenize ({params.tokenizer})"
    if params.eos_id is not None:
        if params.eos_id >= vocab:
            raise SpecError(f"{where}: eosId {params.eos_id} is outside the vocabulary (0..{vocab - 1})")
        return params.eos_id
    if params.eos_token is not None:
        found = backend.token_to_id(params.eos_token)
        if found is None:
            raise SpecError(f"{where}: eosToken {params.eos_token!r} is not in the vocabulary")
        return int(found)
    if isinstance(config.get("eos_token_id"), int):
        return int(config["eos_token_id"])
    for token in (_special(config, "eos_token"), _special(config, "sep_token"), *EOS_CANDIDATES):
        if token is not None and backend.token_to_id(token) is not None:
            return int(backend.token_to_id(token))
    raise SpecError(f"{where}: the tokenizer names no EOS or SEP token; set output.tokenize.eosToken or eosId")


def _from_gguf(path: Path) -> tuple[Any, dict[str, Any]]:
    """The fast tokenizer embedded in a GGUF file (transformers converts its vocabulary)."""
    from curation.models.loading import import_transformers

    transformers = import_transformers()
    try:
        tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(f"{path}: no tokenizer transformers can read ({err})".replace("\n", " ")) from None
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise ModelNotFoundError(f"{path}: its tokenizer is not a fast tokenizer")
    config = {"eos_token_id": tok.eos_token_id} if tok.eos_token_id is not None else {}
    return backend, config


def check_tokenizer(spec: Any) -> None:
    """Preflight: the tokenizer loads and has an EOS id, before anything is written."""
    from curation import storage

    storage.configure(spec.storage)
    load_tokenizer(Location.of(spec.models.path), spec.output.tokenize)
