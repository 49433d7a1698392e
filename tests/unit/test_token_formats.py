"""Token file formats: Megatron `.bin`/`.idx` and NumPy `.npy` pairs, read back by independent readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curation.tokens.formats import (
    MergedFileWriter,
    file_names,
    megatron_dtype,
    megatron_header,
    running_offsets,
    sink_names,
    token_dtype,
)
from curation.tokens.steps import plan_files
from tests.unit.megatron_reader import IndexedDataset


def write_merged(folder: Path, pieces: list[list[list[int]]], vocab: int,
                 formats: tuple[str, ...] = ("megatron", "numpy")) -> dict[str, Path]:
    """Documents given as pieces (lists of documents, each a list of ids), written as one merged file."""
    names = file_names(0)
    paths = {name: folder / names[name] for name in sink_names(formats)}
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    docs = [d for piece in pieces for d in piece]
    sinks = {name: open(p, "wb") for name, p in paths.items()}  # noqa: SIM115
    try:
        writer = MergedFileWriter(sinks, vocab, len(docs), sum(len(d) for d in docs))
        dtype = token_dtype(vocab)
        for piece in pieces:
            flat = np.array([t for d in piece for t in d], dtype=dtype)
            writer.add_tokens(flat.tobytes())
        for piece in pieces:
            writer.add_lengths(np.array([len(d) for d in piece], dtype=np.int32))
        writer.finish(np.array([len(d) for d in piece], dtype=np.int32) for piece in pieces)
    finally:
        for s in sinks.values():
            s.close()
    return paths


def read_numpy(paths: dict[str, Path]) -> list[list[int]]:
    tokens = np.load(paths["numpy.tokens"], mmap_mode="r")
    offsets = np.load(paths["numpy.offsets"])
    assert offsets[0] == 0 and offsets[-1] == len(tokens)
    return [tokens[offsets[i]:offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]


def random_pieces(rng: np.random.Generator, vocab: int, pieces: int) -> list[list[list[int]]]:
    return [[rng.integers(0, vocab, size=int(rng.integers(1, 40))).tolist() for _ in range(int(rng.integers(0, 7)))]
            for _ in range(pieces)]


@pytest.mark.parametrize("vocab", [30522, 65536, 100_000])
def test_merged_file_round_trips_token_for_token_through_both_readers(tmp_path: Path, vocab: int) -> None:
    rng = np.random.default_rng(vocab)
    pieces = random_pieces(rng, vocab, 5)
    pieces[2] = []  # an output shard without documents
    pieces[0].append([vocab - 1])  # the largest id
    paths = write_merged(tmp_path, pieces, vocab)
    expected = [d for piece in pieces for d in piece]
    prefix = str(paths["megatron.bin"])[: -len(".bin")]
    megatron = IndexedDataset.open(prefix)
    assert megatron.documents() == expected
    assert megatron.document_index.tolist() == list(range(len(expected) + 1))
    assert read_numpy(paths) == expected


def test_token_dtype_is_uint16_while_every_id_fits_else_uint32() -> None:
    assert token_dtype(30522) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32 and token_dtype(151_646) == np.uint32
    assert megatron_dtype(49152) == np.uint16
    assert megatron_dtype(65537) == np.int32  # the format has no uint32 code


def test_megatron_header_has_the_magic_version_code_and_counts() -> None:
    header = megatron_header(np.dtype(np.uint16), 3)
    assert header[:9] == b"MMIDIDX\x00\x00"
    assert header[9:17] == (1).to_bytes(8, "little")
    assert header[17] == 8  # uint16
    assert int.from_bytes(header[18:26], "little") == 3  # sequences
    assert int.from_bytes(header[26:34], "little") == 4  # document indices: 0, 1, 2, 3
    assert megatron_header(np.dtype(np.int32), 0)[17] == 4


def test_large_ids_survive_in_int32_megatron_and_uint32_numpy(tmp_path: Path) -> None:
    pieces = [[[65535, 65536, 99_999], [70_000]]]
    paths = write_merged(tmp_path, pieces, 100_000)
    assert IndexedDataset.open(str(paths["megatron.bin"])[:-4]).dtype is np.int32
    assert np.load(paths["numpy.tokens"]).dtype == np.uint32
    assert read_numpy(paths) == pieces[0]


def test_empty_output_is_one_valid_empty_file(tmp_path: Path) -> None:
    paths = write_merged(tmp_path, [[], []], 30522)
    megatron = IndexedDataset.open(str(paths["megatron.bin"])[:-4])
    assert len(megatron) == 0 and megatron.document_index.tolist() == [0]
    assert paths["megatron.bin"].stat().st_size == 0
    assert np.load(paths["numpy.tokens"]).shape == (0,)
    assert np.load(paths["numpy.offsets"]).tolist() == [0]


def test_only_the_requested_formats_are_written(tmp_path: Path) -> None:
    paths = write_merged(tmp_path, [[[1, 2]]], 100, formats=("numpy",))
    assert set(paths) == {"numpy.tokens", "numpy.offsets"}
    assert not (tmp_path / "megatron").exists()


def test_writer_refuses_pieces_that_disagree_with_the_layout(tmp_path: Path) -> None:
    with open(tmp_path / "t.npy", "wb") as f:
        writer = MergedFileWriter({"numpy.tokens": f}, 100, documents=2, tokens=5)
        writer.add_tokens(np.array([1, 2, 3], dtype=np.uint16).tobytes())
        writer.add_lengths(np.array([3], dtype=np.int32))
        with pytest.raises(ValueError, match="layout says 2 and 5"):
            writer.finish([np.array([3], dtype=np.int32)])


def test_running_offsets_continue_across_chunks() -> None:
    chunks = [np.array([3, 1]), np.array([], dtype=np.int32), np.array([2, 5])]
    assert np.concatenate(list(running_offsets(chunks))).tolist() == [0, 3, 4, 6]


def test_shards_are_merged_in_order_into_files_of_about_the_target_size() -> None:
    sizes = [(10, 100), (5, 50), (0, 0), (20, 300), (1, 10)]  # (documents, tokens) per output shard
    files = plan_files(sizes, itemsize=2, file_bytes=300)
    # 100 + 50 + 0 tokens are 300 bytes: one file; shard 3 alone is over the target (never split)
    assert [f["shards"] for f in files] == [[0, 3], [3, 4], [4, 5]]
    assert [f["first_document"] for f in files] == [0, 15, 35]
    assert [f["first_token"] for f in files] == [0, 150, 450]
    assert sum(f["tokens"] for f in files) == 460
    one = plan_files(sizes, itemsize=2, file_bytes=1 << 30)
    assert len(one) == 1 and one[0]["shards"] == [0, 5] and one[0]["documents"] == 36


def test_no_output_shards_still_plan_one_empty_file() -> None:
    assert plan_files([], itemsize=2, file_bytes=100) == [
        {"index": 0, "shards": [0, 0], "documents": 0, "tokens": 0, "first_document": 0, "first_token": 0}]
