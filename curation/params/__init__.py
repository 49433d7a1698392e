"""Typed parameters of every stage, one module per family.

These modules import only pydantic: the spec, the CRD generator and the operator load
them without any heavy dependency.
"""

from curation.params.base import CamelModel
from curation.params.curriculum import CurriculumParams
from curation.params.dedup import ExactDedupParams, MinHashParams
from curation.params.heuristic import HeuristicFilterParams
from curation.params.model_stages import (
    QualityScoreParams,
    RedundancyControlParams,
    RephraseParams,
    SemanticDedupParams,
)

__all__ = [
    "CamelModel",
    "CurriculumParams",
    "ExactDedupParams",
    "HeuristicFilterParams",
    "MinHashParams",
    "QualityScoreParams",
    "RedundancyControlParams",
    "RephraseParams",
    "SemanticDedupParams",
]
