"""Token file formats, written as streams (no file is ever held in memory whole).

Megatron-LM indexed dataset (`<prefix>.bin` + `<prefix>.idx`, the "MMIDIDX" format that
Megatron-Core's `IndexedDataset` and NeMo read):

    .bin   the tokens of every sequence, back to back, in the index's dtype (little-endian)
    .idx   b"MMIDIDX\\x00\\x00"          9 bytes, magic
           version                     <Q, always 1
           dtype code                  <B  (1 uint8, 2 int8, 3 int16, 4 int32, 5 int64,
                                            6 float64, 7 float32, 8 uint16)
           sequence count S            <Q
           document count D + 1        <Q  (length of the document-index array below)
           sequence lengths            S x int32, tokens per sequence
           sequence pointers           S x int64, byte offset of each sequence in .bin
           document indices            (D + 1) x int64, document d is sequences [idx[d], idx[d+1])

Thresher writes one sequence per document, so the document indices are 0, 1, ..., D. The format
has no uint32 code: vocabularies above 65,535 ids are stored as int32 (as Megatron does itself).

NumPy (nanoGPT-style loaders): `tokens-NNNNN.npy`, a 1-d uint16 (or uint32) array, and
`offsets-NNNNN.npy`, int64 with D + 1 entries: document d is `tokens[offsets[d]:offsets[d+1]]`.
Both open with `np.load(path, mmap_mode="r")`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_VERSION = 1
MEGATRON_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}
UINT16_IDS = 1 << 16
CHUNK_ITEMS = 1 << 20  # values converted per write (8 MB of int64)


def token_dtype(vocab_size: int) -> np.dtype:
    """Storage dtype of token ids in the intermediate pieces and the NumPy files: uint16 when
    every id (0 .. vocab_size-1) fits, else uint32."""
    return np.dtype("<u2") if vocab_size <= UINT16_IDS else np.dtype("<u4")


def megatron_dtype(vocab_size: int) -> np.dtype:
    """The .idx dtype: uint16 when every id fits, else int32 (the format has no uint32). Token
    bytes are the same: uint32 ids below 2**31 are int32 ids, byte for byte."""
    if vocab_size > 1 << 31:
        raise ValueError(f"vocabulary of {vocab_size:,} ids does not fit Megatron's int32 tokens")
    return np.dtype("<u2") if vocab_size <= UINT16_IDS else np.dtype("<i4")


def megatron_header(dtype: np.dtype, sequences: int) -> bytes:
    """The fixed part of an .idx file for `sequences` documents of one sequence each."""
    code = MEGATRON_CODES[np.dtype(dtype).newbyteorder("=")]
    return MEGATRON_MAGIC + struct.pack("<QBQQ", MEGATRON_VERSION, code, sequences, sequences + 1)


def npy_header(dtype: np.dtype, length: int) -> bytes:
    """The header of a .npy file holding a 1-d array of `length` items (format version 1.0)."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (int(length),)})
    return buf.getvalue()


def running_offsets(lengths: Iterable[np.ndarray], start: int = 0) -> Iterator[np.ndarray]:
    """Chunks of the exclusive prefix sums of `lengths` (int64), continuing across chunks:
    the start offset of each document."""
    total = np.int64(start)
    for chunk in lengths:
        sizes = np.asarray(chunk, dtype=np.int64)
        if not len(sizes):
            continue
        ends = np.cumsum(sizes) + total
        yield ends - sizes
        total = ends[-1]


def write_arange(sink: Any, stop: int) -> None:
    """Write int64 0, 1, ..., stop-1 in bounded chunks."""
    for lo in range(0, stop, CHUNK_ITEMS):
        sink.write(np.arange(lo, min(stop, lo + CHUNK_ITEMS), dtype="<i8").tobytes())


class MergedFileWriter:
    """One merged file in each requested format, fed document pieces in order.

    Pass 1 (`add_tokens`, `add_lengths`) streams each piece's token bytes and its int32 document
    lengths; `finish` then needs the lengths once more (the .idx holds all lengths before all
    pointers) and writes pointers, offsets and document indices. Every sink is a writable
    stream opened by the caller (a staged file on disk, an upload on an object store)."""

    def __init__(self, sinks: dict[str, Any], vocab_size: int, documents: int, tokens: int) -> None:
        self.sinks = sinks
        self.documents, self.tokens = int(documents), int(tokens)
        self.itemsize = token_dtype(vocab_size).itemsize
        self.written_tokens = 0
        self.written_documents = 0
        if "megatron.idx" in sinks:
            sinks["megatron.idx"].write(megatron_header(megatron_dtype(vocab_size), self.documents))
        if "numpy.tokens" in sinks:
            sinks["numpy.tokens"].write(npy_header(token_dtype(vocab_size), self.tokens))
        if "numpy.offsets" in sinks:
            sinks["numpy.offsets"].write(npy_header(np.dtype("<i8"), self.documents + 1))

    def add_tokens(self, data: bytes | memoryview) -> None:
        for name in ("megatron.bin", "numpy.tokens"):
            if name in self.sinks:
                self.sinks[name].write(data)
        self.written_tokens += len(data) // self.itemsize

    def add_lengths(self, lengths: np.ndarray) -> None:
        """int32 tokens per document, in order (pass 1)."""
        if "megatron.idx" in self.sinks:
            self.sinks["megatron.idx"].write(np.asarray(lengths, dtype="<i4").tobytes())
        self.written_documents += len(lengths)

    def finish(self, lengths_again: Iterable[np.ndarray]) -> None:
        """Pointers and offsets from the same lengths, read again (pass 2); then document indices."""
        if self.written_tokens != self.tokens or self.written_documents != self.documents:
            raise ValueError(f"merged file: wrote {self.written_documents:,} documents and {self.written_tokens:,} "
                             f"tokens, its layout says {self.documents:,} and {self.tokens:,}")
        idx, offsets = self.sinks.get("megatron.idx"), self.sinks.get("numpy.offsets")
        for starts in running_offsets(lengths_again):
            if idx is not None:
                idx.write((starts * self.itemsize).astype("<i8").tobytes())
            if offsets is not None:
                offsets.write(starts.astype("<i8").tobytes())
        if offsets is not None:
            offsets.write(np.array([self.tokens], dtype="<i8").tobytes())
        if idx is not None:
            write_arange(idx, self.documents + 1)


def sink_names(formats: Iterable[str]) -> list[str]:
    names = []
    for fmt in formats:
        names.extend(("megatron.bin", "megatron.idx") if fmt == "megatron" else ("numpy.tokens", "numpy.offsets"))
    return names


def file_names(index: int) -> dict[str, str]:
    """Paths below `tokens/` of merged file `index`, per sink."""
    return {
        "megatron.bin": f"megatron/part-{index:05d}.bin",
        "megatron.idx": f"megatron/part-{index:05d}.idx",
        "numpy.tokens": f"numpy/tokens-{index:05d}.npy",
        "numpy.offsets": f"numpy/offsets-{index:05d}.npy",
    }
