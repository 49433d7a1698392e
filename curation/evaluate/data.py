"""Datasets, the tokenizer and token files for `thresher eval`.

A dataset is a folder of Parquet files (a Thresher output's `data/`, a `thresher holdout` split,
or any Parquet folder with a text column). It is read in batches of rows, never whole: the
tokenised corpus goes to a flat token file on disk (uint16 where the vocabulary fits, else
uint32) with document offsets, and training reads it through a memory map.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import InputDataError, MissingDependencyError, ModelNotFoundError

READ_ROWS = 4096
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|im_end|>", "[SEP]", "<eos>")


@dataclass(frozen=True)
class DatasetRef:
    """A named dataset: an arm to train on, or an evaluation set."""

    name: str
    path: str
    text_field: str = "text"
    id_field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "text_field": self.text_field, "id_field": self.id_field}


def parquet_files(path: str) -> list[Path]:
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise InputDataError(f"{path}: no such dataset folder")
    files = sorted(p for p in root.rglob("*.parquet")
                   if not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts))
    if not files:
        raise InputDataError(f"{path}: no Parquet files")
    return files


def iter_batches(ref: DatasetRef, with_ids: bool = True) -> Iterator[tuple[list[str], list[str]]]:
    """(texts, ids as strings) in batches, in the dataset's stored order. Without an id field the
    id is `<file>:<row>` (stable across runs)."""
    for file in parquet_files(ref.path):
        try:
            pf = pq.ParquetFile(file)
        except (pa.ArrowInvalid, OSError) as err:
            raise InputDataError(f"{file}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
        names = set(pf.schema_arrow.names)
        if ref.text_field not in names:
            raise InputDataError(f"{file}: no text column {ref.text_field!r} (columns: {', '.join(sorted(names))})")
        if ref.id_field and ref.id_field not in names:
            raise InputDataError(f"{file}: no id column {ref.id_field!r} (columns: {', '.join(sorted(names))})")
        columns = [ref.text_field] + ([ref.id_field] if with_ids and ref.id_field else [])
        row = 0
        for batch in pf.iter_batches(batch_size=READ_ROWS, columns=columns):
            texts = [t or "" for t in batch.column(ref.text_field).to_pylist()]
            if not with_ids:
                ids: list[str] = []
            elif ref.id_field:
                ids = [str(v) for v in batch.column(ref.id_field).to_pylist()]
            else:
                ids = [f"{file.name}:{row + i}" for i in range(len(texts))]
            row += len(texts)
            yield texts, ids


# ---- the tokenizer ---------------------------------------------------------------------------


@dataclass
class Tokenizer:
    """A fast (Rust) tokenizer from a `tokenizer.json`, with the id that separates documents."""

    backend: Any
    eos_id: int
    vocab_size: int
    name: str
    path: Path

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def describe(self) -> dict[str, Any]:
        eos = self.backend.id_to_token(self.eos_id)
        return {"name": self.name, "path": str(self.path), "vocab_size": self.vocab_size, "eos": eos,
                "eos_id": self.eos_id}


def _eos_id(backend: Any, folder: Path) -> int:
    config = folder / "tokenizer_config.json"
    wanted: list[str] = []
    if config.exists():
        cfg = json.loads(config.read_text())
        for key in ("eos_token", "sep_token"):
            value = cfg.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                wanted.append(value)
    for token in (*wanted, *EOS_CANDIDATES):
        idx = backend.token_to_id(token)
        if idx is not None:
            return int(idx)
    raise ModelNotFoundError(f"{folder}/tokenizer.json: no end-of-document token (tried {', '.join(wanted + list(EOS_CANDIDATES))})")


def load_tokenizer(models: Path, name: str) -> Tokenizer:
    """The tokenizer of a model in the models location: a directory with `tokenizer.json`, or a
    `.gguf` file (its dequantised copy carries one; built on first use)."""
    try:
        from tokenizers import Tokenizer as Backend
    except ImportError:
        raise MissingDependencyError("thresher eval needs the `tokenizers` package; install thresher[models]") from None
    from curation.models.loading import dequantised_gguf_dir, model_kind, resolve_model

    plain = Path(models) / name
    if plain.is_dir() and (plain / "tokenizer.json").exists():
        folder = plain  # a tokenizer folder: no model weights or config.json needed
    else:
        path = resolve_model(models, name)
        folder = dequantised_gguf_dir(models, path) if model_kind(path) == "gguf" else path
    file = folder / "tokenizer.json"
    if not file.exists():
        raise ModelNotFoundError(f"tokenizer {name!r}: no tokenizer.json in {folder}")
    backend = Backend.from_file(str(file))
    backend.no_truncation()
    backend.no_padding()
    return Tokenizer(backend, _eos_id(backend, folder), backend.get_vocab_size(with_added_tokens=True), name, folder)


# ---- token files -----------------------------------------------------------------------------


@dataclass
class TokenFile:
    """A tokenised dataset: every document's tokens then EOS, concatenated; `offsets[i]` is where
    document i starts (len = documents + 1)."""

    tokens: np.ndarray
    offsets: np.ndarray

    @property
    def documents(self) -> int:
        return len(self.offsets) - 1

    @property
    def total(self) -> int:
        return int(self.offsets[-1])

    def document(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]


def token_dtype(vocab_size: int) -> type:
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def tokenize_dataset(ref: DatasetRef, tokenizer: Tokenizer, folder: Path,
                     max_tokens: int | None = None) -> TokenFile:
    """Tokenise a dataset into `folder/tokens.bin` + `offsets.npy` (streamed; reused when the same
    dataset and tokenizer were tokenised there before). `max_tokens` stops early (eval sets)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = {"dataset": ref.to_dict(), "tokenizer": str(tokenizer.path / "tokenizer.json"),
           "files": [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in parquet_files(ref.path)],
           "max_tokens": max_tokens}
    done = folder / "done.json"
    dtype = token_dtype(tokenizer.vocab_size)
    raw = folder / "tokens.bin"
    if done.exists() and json.loads(done.read_text()) == key:
        return TokenFile(np.memmap(raw, dtype=dtype, mode="r"), np.load(folder / "offsets.npy"))
    done.unlink(missing_ok=True)
    lengths: list[int] = []
    total = 0
    with open(raw, "wb") as out:
        for texts, _ in iter_batches(ref, with_ids=False):
            for ids in tokenizer.encode(texts):
                ids.append(tokenizer.eos_id)
                out.write(np.asarray(ids, dtype=dtype).tobytes())
                lengths.append(len(ids))
                total += len(ids)
                if max_tokens is not None and total >= max_tokens:
                    break
            if max_tokens is not None and total >= max_tokens:
                break
    if not lengths:
        raise InputDataError(f"dataset {ref.name} ({ref.path}): no documents")
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    np.save(folder / "offsets.npy", offsets)
    done.write_text(json.dumps(key))
    return TokenFile(np.memmap(raw, dtype=dtype, mode="r"), offsets)
