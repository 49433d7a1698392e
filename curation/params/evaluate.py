"""`spec.evaluate`: `thresher eval` as the last step of a pipeline (or CurationJob).

Not a stage: it decides nothing about any document. After finalize it trains the proxy models of
`curation/evaluate/` on the job's input (`raw`) and its curated output (`curated`) at equal
tokens and writes `<output>/eval/eval.json` and `eval.html`; in a cluster the step runs on
`gpus` GPUs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from curation.params.base import CamelModel


class EvaluateSpec(CamelModel):
    """Proxy-model evaluation of the curated output against the raw input (docs/evaluation.md)."""

    eval_set: str = Field(min_length=1, max_length=4096)
    """Held-out Parquet documents (a file or folder), disjoint from the input: e.g. the `heldout/`
    of `thresher holdout`, made before curation. Relative paths as for the input; in a cluster it
    is read from the input's PVC. Overlap with the input (ids, word 13-grams) fails the step."""

    preset: Literal["tiny", "proxy-150m"] = "tiny"
    """`tiny`: CPU, minutes. `proxy-150m`: ~151M parameters on 3.0B tokens per arm and seed, for a
    GPU (about 1.9 H100-hours per arm and seed); `thresher eval --presets` prints both."""

    seeds: list[int] = Field(default=[0, 1, 2], min_length=1, max_length=16)
    """One model per arm and seed; the difference is reported with a paired-seed interval."""

    tokens: int | None = Field(default=None, ge=1)
    """Training tokens per arm and seed (default: the preset's)."""

    tokenizer: str | None = Field(default=None, min_length=1)
    """Tokenizer relative to `models.path` (default: the preset's)."""

    gpus: int = Field(default=0, ge=0, le=64)
    """GPUs of the evaluation step's pod (cluster only); 0 runs on CPU."""
