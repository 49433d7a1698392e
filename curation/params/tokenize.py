"""`output.tokenize`: training-ready token files written next to the curated Parquet output.

Not a stage: tokenising decides nothing about any document. It reads the published output in its
final order (the curriculum's, when one ran), so it is part of finalize (see curation/tokens/).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from curation.params.base import CamelModel

TokenFormat = Literal["megatron", "numpy"]


class TokenizeSpec(CamelModel):
    """Tokenise the curated documents, in output order, into a few merged training-ready files."""

    tokenizer: str = Field(min_length=1, max_length=1000)
    """Tokenizer, relative to `models.path`: a Hugging Face directory with `tokenizer.json`, a
    `tokenizer.json` file, or a `.gguf` model (its embedded vocabulary). Loaded offline, never
    from a hub."""

    formats: list[TokenFormat] = Field(default=["megatron", "numpy"], min_length=1, max_length=2)
    """`megatron`: Megatron-LM's indexed dataset (`.bin` + `.idx`, one sequence per document).
    `numpy`: `tokens-NNNNN.npy` (uint16 when the vocabulary fits, else uint32) with
    `offsets-NNNNN.npy` (int64, document i is `tokens[offsets[i]:offsets[i+1]]`)."""

    eos_token: str | None = Field(default=None, min_length=1)
    """Token appended after every document. Default: the tokenizer's EOS token, else its SEP token
    (`[SEP]` for BERT-style vocabularies), else `<|endoftext|>` or `</s>` when the vocabulary has one."""

    eos_id: int | None = Field(default=None, ge=0)
    """Token id appended after every document (instead of `eosToken`)."""

    append_eos: bool = True
    """Append the EOS token after every document, so documents stay separated when a loader
    concatenates them (as Megatron's `--append-eod` and nanoGPT do). False: no separator."""

    file_bytes: int = Field(default=4 << 30, ge=1)
    """Target size of one token file: consecutive output shards are merged into files of about
    this many bytes (a file is never split inside an output shard). One `.bin`/`.idx` pair (and
    one `.npy` pair) per file."""

    batch_documents: int = Field(default=512, ge=1, le=65536)
    """Documents per `encode_batch` call (memory per rank: one batch of text and its tokens)."""

    count_rejected: bool = True
    """Also tokenise the rejected documents (without writing them), so the summary can say how
    many tokens each stage and reason removed. False halves the work when most documents are
    rejected; the per-stage token counts are then absent."""

    @model_validator(mode="after")
    def _one_eos(self) -> TokenizeSpec:
        if self.eos_token is not None and self.eos_id is not None:
            raise ValueError("give eosToken or eosId, not both")
        if len(set(self.formats)) != len(self.formats):
            raise ValueError("formats: each format at most once")
        return self
