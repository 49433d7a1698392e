"""Proof that the curation helps: small proxy LMs trained on each dataset at equal tokens.

`evaluate(EvalConfig) -> EvalResult` is the library entry point (CLI: `thresher eval`);
`split_holdout` makes a leak-free held-out split before curation (CLI: `thresher holdout`).
torch is imported only when training starts.
"""

from __future__ import annotations

from curation.evaluate.data import DatasetRef
from curation.evaluate.holdout import split_holdout
from curation.evaluate.overlap import OverlapError, check_disjoint
from curation.evaluate.presets import PRESETS, Preset, estimate_cost, get_preset
from curation.evaluate.run import EvalConfig, EvalResult, evaluate

__all__ = ["DatasetRef", "EvalConfig", "EvalResult", "OverlapError", "PRESETS", "Preset", "check_disjoint",
           "estimate_cost", "evaluate", "get_preset", "split_holdout"]
