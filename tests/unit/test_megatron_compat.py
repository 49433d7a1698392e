"""Megatron-Core's own reader opens the merged `.bin`/`.idx` files (skipped unless megatron-core is
importable: `pip install megatron-core`, or its wheel unpacked on PYTHONPATH; it needs torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.unit.test_token_formats import random_pieces, write_merged

pytest.importorskip("torch")
indexed_dataset = pytest.importorskip("megatron.core.datasets.indexed_dataset")


@pytest.mark.parametrize("vocab", [49152, 100_000])
def test_megatron_core_reads_the_merged_file_token_for_token(tmp_path: Path, vocab: int) -> None:
    pieces = random_pieces(np.random.default_rng(1), vocab, 6)
    paths = write_merged(tmp_path, pieces, vocab, formats=("megatron",))
    dataset = indexed_dataset.IndexedDataset(str(paths["megatron.bin"])[: -len(".bin")])
    expected = [d for piece in pieces for d in piece]
    assert len(dataset) == len(expected)
    assert dataset.document_indices.tolist() == list(range(len(expected) + 1))
    assert [dataset[i].tolist() for i in range(len(dataset))] == expected
    assert dataset.index.dtype == (np.uint16 if vocab <= 65536 else np.int32)
