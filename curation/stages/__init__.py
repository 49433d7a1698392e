"""Stage implementations, loaded by name so that planning never imports heavy dependencies."""

from __future__ import annotations

import importlib
from typing import Any

from curation.errors import SpecError

REGISTRY: dict[str, str] = {
    "ingest": "curation.stages.ingest:IngestStage",
    "finalize": "curation.stages.finalize:FinalizeStage",
    "exact-dedup": "curation.stages.exact_dedup:ExactDedupStage",
    "minhash-dedup": "curation.stages.minhash:MinHashDedupStage",
    "heuristic-filter": "curation.stages.heuristic:HeuristicFilterStage",
    "curriculum": "curation.stages.curriculum:CurriculumStage",
    "quality-score": "curation.stages.quality:QualityScoreStage",
    "semantic-dedup": "curation.stages.semantic:SemanticDedupStage",
    "redundancy-control": "curation.stages.redundancy:RedundancyControlStage",
    "rephrase": "curation.stages.rephrase:RephraseStage",
}


def load_stage_class(type_name: str) -> Any:
    try:
        target = REGISTRY[type_name]
    except KeyError:
        raise SpecError(f"unknown stage type '{type_name}'; known: {', '.join(sorted(REGISTRY))}") from None
    module_name, cls_name = target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)
