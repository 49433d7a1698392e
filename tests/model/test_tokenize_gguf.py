"""`output.tokenize` with SmolLM2's byte-level BPE, read from the GGUF file (no tokenizer.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curation.dataset import Location
from curation.models.sample_models import GENERATOR
from curation.params.tokenize import TokenizeSpec
from curation.tokens.tokenizer import load_tokenizer
from tests.helpers import make_spec, output_rows, run_all, write_docs
from tests.unit.megatron_reader import IndexedDataset

pytestmark = pytest.mark.model


def test_gguf_tokenizer_writes_uint16_megatron_files_that_round_trip(tmp_path: Path, models_dir: Path) -> None:
    tok = load_tokenizer(Location.of(str(models_dir)), TokenizeSpec(tokenizer=GENERATOR))
    assert tok.vocab_size == 49152 and tok.dtype == np.uint16 and tok.eos_id is not None
    texts = [f"Document {i}: the curated corpus keeps every token, ünïcödé and emoji 🚀 included." * (i % 4 + 1)
             for i in range(30)]
    spec = make_spec(write_docs(tmp_path / "in", texts, shards=3), tmp_path / "out", [{"type": "exact-dedup"}],
                     parallelism=2, models={"path": str(models_dir)})
    doc = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["output"]["tokenize"] = {"tokenizer": GENERATOR, "formats": ["megatron"]}
    spec = type(spec).model_validate(doc)
    run_all(spec)
    published = [r["text"] for r in output_rows(tmp_path / "out")]
    expected = [e.ids + [tok.eos_id] for e in tok.backend.encode_batch(published, add_special_tokens=False)]
    assert tok.backend.decode(expected[0][:-1]) == published[0]  # byte-level BPE: lossless
    manifest = json.loads((tmp_path / "out" / "tokens" / "_manifest.json").read_text())
    got = []
    for f in manifest["files"]:
        got.extend(IndexedDataset.open(tmp_path / "out" / "tokens" / f["megatron.bin"][:-4]).documents())
    assert got == expected
