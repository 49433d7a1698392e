"""A reader of Megatron-LM's indexed dataset, written from the format's description only.

Shares no code with `curation.tokens.formats` on purpose: a writer bug mirrored in a shared helper
would pass its own round trip. The layout (Megatron-Core `megatron/core/datasets/indexed_dataset.py`,
`_IndexWriter` / `_IndexReader`):

    .idx  magic b"MMIDIDX\\x00\\x00" | version <Q (1) | dtype code <B | sequence count <Q |
          document-index count <Q | int32 lengths[S] | int64 byte pointers[S] | int64 doc index[count]
    .bin  the sequences' tokens back to back
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CODES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16}


@dataclass
class IndexedDataset:
    dtype: type
    lengths: np.ndarray
    pointers: np.ndarray
    document_index: np.ndarray
    data: bytes

    @classmethod
    def open(cls, prefix: str | Path) -> IndexedDataset:
        idx = Path(f"{prefix}.idx").read_bytes()
        assert idx[:9] == b"MMIDIDX\x00\x00", "bad magic"
        (version,) = struct.unpack_from("<Q", idx, 9)
        assert version == 1, f"version {version}"
        (code,) = struct.unpack_from("<B", idx, 17)
        sequences, documents = struct.unpack_from("<QQ", idx, 18)
        at = 34
        lengths = np.frombuffer(idx, dtype="<i4", count=sequences, offset=at)
        at += 4 * sequences
        pointers = np.frombuffer(idx, dtype="<i8", count=sequences, offset=at)
        at += 8 * sequences
        document_index = np.frombuffer(idx, dtype="<i8", count=documents, offset=at)
        at += 8 * documents
        assert at == len(idx), f"{len(idx) - at} trailing bytes in the index"
        return cls(CODES[code], lengths, pointers, document_index, Path(f"{prefix}.bin").read_bytes())

    def __len__(self) -> int:
        return len(self.lengths)

    def sequence(self, i: int) -> list[int]:
        count, offset = int(self.lengths[i]), int(self.pointers[i])
        return np.frombuffer(self.data, dtype=np.dtype(self.dtype).newbyteorder("<"), count=count,
                             offset=offset).tolist()

    def documents(self) -> list[list[int]]:
        """Each document's tokens (its sequences joined)."""
        out = []
        for d in range(len(self.document_index) - 1):
            tokens: list[int] = []
            for s in range(int(self.document_index[d]), int(self.document_index[d + 1])):
                tokens.extend(self.sequence(s))
            out.append(tokens)
        return out
